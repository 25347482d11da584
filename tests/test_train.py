"""The training loop: it learns, it is reproducible, checkpoints round-trip, failures land in rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from segbench.data.synthetic import SyntheticDataset
from segbench.errors import UserError
from segbench.registry import ModelSpec
from segbench.train import augment, peak_memory, segmentation_loss, train_and_evaluate, train_spec
import segbench.train as train_module

SIZE = (32, 32)


class TinyNet(nn.Module):
    """A few convolutions: enough to learn the synthetic colours in tens of steps."""

    def __init__(self, num_classes: int, aux: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Conv2d(16, num_classes, 1)
        self.aux_head = nn.Conv2d(16, num_classes, 1) if aux else None

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)
        if self.aux_head is not None and self.training:
            return self.head(features), self.aux_head(features[..., ::2, ::2])  # half-size aux output
        return self.head(features)


@pytest.fixture(scope="module")
def tiny_data() -> tuple[SyntheticDataset, SyntheticDataset]:
    return (
        SyntheticDataset(split="train", seed=0, num_classes=4, length=24, image_size=SIZE),
        SyntheticDataset(split="val", seed=0, num_classes=4, length=8, image_size=SIZE),
    )


def run(data: tuple, seed: int = 0, steps: int = 40, **kwargs: object) -> tuple[dict, list[float]]:
    torch.manual_seed(seed)
    model = kwargs.pop("model", None) or TinyNet(data[0].num_classes)
    losses: list[float] = []
    fields = train_and_evaluate(
        model, *data, steps=steps, batch_size=4, size=SIZE, lr=1e-2, seed=seed, progress=False,
        on_step=lambda step, loss: losses.append(loss), **kwargs,
    )  # fmt: skip
    return fields, losses


def constant_predictor_miou(masks: np.ndarray, num_classes: int) -> float:
    """Best mIoU of predicting one class everywhere: IoU = its pixel share, other present classes 0."""
    counts = np.bincount(masks[masks != 255].ravel(), minlength=num_classes)
    present = int((counts > 0).sum())
    return float(counts.max() / counts.sum() / present)


def test_loss_falls_and_miou_beats_constant_predictor(tiny_data: tuple) -> None:
    fields, losses = run(tiny_data)
    assert len(losses) == 40
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])
    baseline = constant_predictor_miou(tiny_data[1].masks, 4)
    assert fields["miou"] > baseline + 0.1, (fields["miou"], baseline)
    assert fields["pixel_acc"] > 0.8
    assert len(fields["iou_per_class"]) == 4
    assert fields["dataset"] == "synthetic" and fields["train_steps"] == 40
    assert (fields["batch_size"], fields["height"], fields["width"], fields["num_classes"]) == (4, 32, 32, 4)
    assert fields["train_seconds"] > 0 and fields["precision"] == "fp32"


def test_same_seed_same_miou(tiny_data: tuple) -> None:
    first, first_losses = run(tiny_data, seed=3, steps=6)
    second, second_losses = run(tiny_data, seed=3, steps=6)
    other, _ = run(tiny_data, seed=4, steps=6)
    assert first_losses == second_losses
    assert (first["miou"], first["iou_per_class"]) == (second["miou"], second["iou_per_class"])
    assert first["miou"] != other["miou"]


def test_auxiliary_outputs_weighted_and_resized() -> None:
    target = torch.tensor([[[0, 1], [1, 255]]])
    main = torch.zeros(1, 2, 2, 2)
    aux = torch.zeros(1, 2, 1, 1)  # resized to 2x2 before the loss
    aux[0, 0] = 3.0
    ce = nn.functional.cross_entropy
    expected = ce(main, target, ignore_index=255) + 0.4 * ce(aux.expand(1, 2, 2, 2), target, ignore_index=255)
    assert torch.isclose(segmentation_loss((main, aux), target), expected)
    assert torch.isclose(segmentation_loss(main, target), ce(main, target, ignore_index=255))


def test_trains_a_model_with_aux_head(tiny_data: tuple) -> None:
    fields, losses = run(tiny_data, steps=3, model=TinyNet(4, aux=True))
    assert len(losses) == 3 and 0 <= fields["miou"] <= 1


def test_augment_pads_with_ignore_and_flips_image_with_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    mask = torch.zeros(8, 8, dtype=torch.long)
    mask[:, 4:] = 1
    image = mask.float()[None].repeat(3, 1, 1)
    monkeypatch.setattr(train_module, "SCALE_RANGE", (1.0, 1.0))
    torch.manual_seed(0)
    flips = 0
    for _ in range(20):
        out_image, out_mask = augment(image, mask, (8, 8))
        assert torch.equal(out_image[0], out_mask.float())  # image and mask moved together
        flips += int(out_mask[0, 0] == 1)
    assert 3 <= flips <= 17  # flipped about half the time
    monkeypatch.setattr(train_module, "SCALE_RANGE", (0.5, 0.5))
    out_image, out_mask = augment(image, mask, (8, 8))
    ignored = out_mask == 255  # the image shrank to 4x4: padded below and on one side (flip may swap it)
    assert int(ignored.sum()) == 48 and ignored[4:].all()
    assert ignored[:, 4:].all() or ignored[:, :4].all()
    assert (out_image[:, ignored] == 0).all()


def test_checkpoint_round_trip_and_bad_weights(tiny_data: tuple, tmp_path: Path) -> None:
    path = tmp_path / "ckpt" / "tiny.pt"
    trained, _ = run(tiny_data, steps=5, save=path)
    assert path.is_file()
    evaluated, losses = run(tiny_data, seed=9, steps=0, weights=path)
    assert losses == [] and evaluated["peak_mem_mb"] is None
    assert evaluated["miou"] == trained["miou"]
    with pytest.raises(UserError, match="nope.pt: weights file not found"):
        run(tiny_data, steps=0, weights=tmp_path / "nope.pt")
    torch.save({"other.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="other.pt: weights do not fit this model"):
        run(tiny_data, steps=0, weights=tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_text("junk")
    with pytest.raises(UserError, match="junk.pt: not a readable torch checkpoint"):
        run(tiny_data, steps=0, weights=tmp_path / "junk.pt")


def test_peak_memory_sees_a_large_allocation() -> None:
    with peak_memory(torch.device("cpu")) as memory:
        block = torch.ones(50 * 2**20 // 4)  # 50 MiB, touched
        del block
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("no /proc/self/clear_refs on this OS")
    assert 45 <= memory["peak_mem_mb"] < 200


def test_fast_scnn_aux_training_step() -> None:
    from segbench.models.fast_scnn import FastSCNN

    data = (
        SyntheticDataset(split="train", length=4, image_size=(64, 64)),
        SyntheticDataset(split="val", length=2, image_size=(64, 64)),
    )
    fields = train_and_evaluate(FastSCNN(num_classes=6, aux=True), *data, steps=2, batch_size=2, progress=False)
    assert (fields["height"], fields["width"], fields["train_steps"]) == (64, 64, 2)
    assert 0 <= fields["miou"] <= 1


def _spec(builder: object, name: str = "tiny", kind: str = "model") -> ModelSpec:
    return ModelSpec(name=name, family="test", builder=builder, default_size=SIZE, default_num_classes=4,
                     description="test model", kind=kind, plugin="tests")  # fmt: skip


def test_train_spec_row_fields_and_errors(tiny_data: tuple) -> None:
    fields = train_spec(_spec(TinyNet), *tiny_data, steps=2, batch_size=4, size=SIZE, progress=False)
    assert (fields["model"], fields["family"], fields["plugin"], fields["device"]) == ("tiny", "test", "tests", "cpu")
    assert "error" not in fields
    assert 0 <= fields["miou"] <= 1 and fields["num_classes"] == 4

    def broken(num_classes: int) -> nn.Module:
        return nn.Conv2d(3, num_classes + 1, 1)  # one output channel too many: predicts class 4

    def failing(num_classes: int) -> nn.Module:
        raise RuntimeError("out of memory (pretend)")

    wrong = train_spec(_spec(broken), *tiny_data, steps=1, batch_size=4, progress=False)
    assert wrong["error"] == "training failed: ValueError: class ids must lie in 0..3 (or be 255 in the target)"
    failed = train_spec(_spec(failing), *tiny_data, steps=1, batch_size=4, progress=False)
    assert failed["error"] == "training failed: RuntimeError: out of memory (pretend)"
    assert failed["dataset"] == "synthetic" and "miou" not in failed
    with pytest.raises(UserError, match="block"):
        train_spec(_spec(TinyNet, kind="block"), *tiny_data, steps=1, progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_trains_on_cuda_with_mixed_precision(tiny_data: tuple) -> None:
    fields, losses = run(tiny_data, steps=4, device="cuda")
    assert fields["precision"] == "amp_fp16" and fields["peak_mem_mb"] > 0
    assert len(losses) == 4
