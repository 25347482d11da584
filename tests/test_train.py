"""The training loop: it learns, it is reproducible, checkpoints round-trip, failures land in rows."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import written
from PIL import Image
from torch import nn

from segbench.data.synthetic import SyntheticDataset
from segbench.errors import UserError
from segbench.measure import recipe
from segbench.measure.training import (
    BudgetError,
    TrainSettings,
    augment,
    budget_steps,
    segmentation_loss,
    tensor_mib,
    train_and_evaluate,
)
from segbench.registry import ModelSpec
from segbench.runners.cells import ALONE, measure_cells
from segbench.runners.train import Prepared, TrainConfig, cells, prepare

SIZE = (32, 32)


class TinyNet(nn.Module):
    """A few convolutions: enough to learn the synthetic colours in tens of steps."""

    def __init__(self, num_classes: int, aux: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.ReLU(),
        )
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


def run(data: tuple, seed: int = 0, steps: int | None = 40, **kwargs: object) -> tuple[dict, list[float]]:
    torch.manual_seed(seed)
    model = kwargs.pop("model", None) or TinyNet(data[0].num_classes)
    losses: list[float] = []
    files = {name: kwargs.pop(name) for name in ("weights", "save") if name in kwargs}
    settings = TrainSettings(steps=steps, batch_size=4, size=SIZE, lr=0.1, seed=seed, **kwargs)
    fields = train_and_evaluate(model, *data, settings, on_step=lambda step, loss: losses.append(loss), **files)
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
    monkeypatch.setattr(recipe, "SCALE_RANGE", (1.0, 1.0))
    torch.manual_seed(0)
    flips = 0
    for _ in range(20):
        out_image, out_mask = augment(image, mask, (8, 8))
        assert torch.equal(out_image[0], out_mask.float())  # image and mask moved together
        flips += int(out_mask[0, 0] == 1)
    assert 3 <= flips <= 17  # flipped about half the time
    monkeypatch.setattr(recipe, "SCALE_RANGE", (0.5, 0.5))
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
    with pytest.raises(UserError, match=r"nope.pt: weights file not found"):
        run(tiny_data, steps=0, weights=tmp_path / "nope.pt")
    torch.save({"other.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match=r"other.pt: weights do not fit this model"):
        run(tiny_data, steps=0, weights=tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_text("junk")
    with pytest.raises(UserError, match=r"junk.pt: not a readable torch checkpoint"):
        run(tiny_data, steps=0, weights=tmp_path / "junk.pt")


def test_cpu_training_peak_counts_weights_gradients_and_momentum(tiny_data) -> None:
    """SGD with momentum holds weights, gradients and momentum buffers: at least 3x the weights."""
    model = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 4, 1))
    weights_mb = tensor_mib(model)
    fields = train_and_evaluate(model, *tiny_data, TrainSettings(steps=2, batch_size=2, size=(32, 32)))
    activations_mb = 2 * 64 * 32 * 32 * 4 / 2**20  # the first conv's output alone, batch 2, fp32
    assert fields["peak_mem_mb"] >= 3 * weights_mb + activations_mb
    assert fields["peak_mem_mb"] < 3 * weights_mb + 50 * activations_mb


def test_fast_scnn_aux_training_step() -> None:
    from segbench.models.fast_scnn import FastSCNN

    data = (
        SyntheticDataset(split="train", length=4, image_size=(64, 64)),
        SyntheticDataset(split="val", length=2, image_size=(64, 64)),
    )
    fields = train_and_evaluate(FastSCNN(num_classes=6, aux=True), *data, TrainSettings(steps=2, batch_size=2))
    assert (fields["height"], fields["width"], fields["train_steps"]) == (64, 64, 2)
    assert 0 <= fields["miou"] <= 1


def _spec(builder: object, name: str = "tiny", kind: str = "model") -> ModelSpec:
    return ModelSpec(
        name=name,
        family="test",
        builder=builder,
        default_size=SIZE,
        default_num_classes=4,
        description="test model",
        kind=kind,
        plugin="tests",
    )


def train_rows(specs: list[ModelSpec], data: tuple, **options: object) -> list[dict]:
    """The train runner's rows for ``specs`` on already open splits."""
    files = dict.fromkeys(s.name for s in specs)
    return list(measure_cells(cells(Prepared(TrainConfig(**options), tuple(specs), *data, files, files), ALONE)))


def test_train_runner_row_fields_and_errors(tiny_data: tuple) -> None:
    (fields,) = train_rows([_spec(TinyNet)], tiny_data, steps=2, batch_size=4, size=SIZE)
    assert (fields["model"], fields["family"], fields["plugin"], fields["device"]) == ("tiny", "test", "tests", "cpu")
    assert fields["error"] is None
    assert 0 <= fields["miou"] <= 1 and fields["num_classes"] == 4

    def broken(num_classes: int) -> nn.Module:
        return nn.Conv2d(3, num_classes + 1, 1)  # one output channel too many: predicts class 4

    def failing(num_classes: int) -> nn.Module:
        raise RuntimeError("out of memory (pretend)")

    wrong, failed = train_rows([_spec(broken), _spec(failing, "failing")], tiny_data, steps=1, batch_size=4)
    assert wrong["error"] == "train: ValueError: class ids must lie in 0..3 (or be 255 in the target)"
    assert failed["error"] == "cannot build failing: out of memory"  # any out-of-memory reads the same
    assert failed["dataset"] == "synthetic" and failed["miou"] is None
    with pytest.raises(UserError, match="block"):
        prepare([_spec(TinyNet, kind="block")], TrainConfig(steps=1))


def test_train_time_records_the_steps_that_reproduce_it(tiny_data: tuple) -> None:
    timed, losses = run(tiny_data, steps=None, time_budget=2.0)
    assert timed["train_budget_seconds"] == 2.0 and timed["train_steps"] == len(losses) >= 1
    again, _ = run(tiny_data, steps=timed["train_steps"])
    assert (again["miou"], again["iou_per_class"]) == (timed["miou"], timed["iou_per_class"])
    assert again["train_budget_seconds"] is None


def test_budget_steps_fit_what_is_left_or_say_why_not() -> None:
    assert budget_steps(10.0, 3.0) == 3
    with pytest.raises(BudgetError, match=r"--train-time 5 s leaves no time for a step: a step takes 6.00 s"):
        budget_steps(5.0, 6.0)


def test_runner_records_and_replays_the_conv_backend(tiny_data: tuple) -> None:
    (auto,) = train_rows([_spec(TinyNet)], tiny_data, steps=2, batch_size=4, size=SIZE)
    assert auto["train_conv_backend"] == "onednn" and auto["conv_probe_seconds"] >= 0 and auto["init"] == "scratch"
    (pinned,) = train_rows([_spec(TinyNet)], tiny_data, steps=2, batch_size=4, size=SIZE, conv_backend="native:body.0")
    assert pinned["train_conv_backend"] == "native:body.0" and pinned["conv_probe_seconds"] is None
    (replayed,) = train_rows([_spec(TinyNet)], tiny_data, steps=2, batch_size=4, size=SIZE, conv_backend="onednn")
    assert replayed["miou"] == auto["miou"]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_trains_on_cuda_with_mixed_precision(tiny_data: tuple) -> None:
    fields, losses = run(tiny_data, steps=4, device="cuda")
    assert fields["precision"] == "amp_fp16" and fields["peak_mem_mb"] > 0
    assert len(losses) == 4 and all(np.isfinite(losses)), losses
    # cross-entropy over pixels (nll_loss2d) has no deterministic CUDA kernel: the row must not claim one
    assert fields["deterministic"] is False


class PutNet(TinyNet):
    """TinyNet plus ``Tensor.put_``, which has no deterministic kernel even on CPU, and a warning."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        warnings.warn("keeps going", stacklevel=2)
        scratch = torch.zeros(4, device=x.device)
        scratch.put_(torch.tensor([0, 0], device=x.device), torch.ones(2, device=x.device))
        return super().forward(x) + scratch[0] * 0


class CublasNet(TinyNet):
    """TinyNet warning as PyTorch does on CUDA for a cuBLAS call without CUBLAS_WORKSPACE_CONFIG."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        warnings.warn(
            "Deterministic behavior was enabled with either `torch.use_deterministic_algorithms(True)` or "
            "`at::Context::setDeterministicAlgorithms(true)`, but this operation is not deterministic because "
            "it uses CuBLAS and you have CUDA >= 10.2.",
            stacklevel=2,
        )
        return super().forward(x)


def test_row_says_whether_every_operation_was_deterministic(tiny_data: tuple) -> None:
    plain, _ = run(tiny_data, steps=2)
    assert plain["deterministic"] is True
    with pytest.warns(UserWarning, match="keeps going"):  # other warnings pass through
        put, _ = run(tiny_data, steps=2, model=PutNet(4))
    assert put["deterministic"] is False
    cublas, _ = run(tiny_data, steps=2, model=CublasNet(4))
    assert cublas["deterministic"] is False
    assert not torch.are_deterministic_algorithms_enabled()  # restored


# --- the command line ------------------------------------------------------------------------------


def _invoke(args: list[str]) -> object:
    from typer.testing import CliRunner

    from segbench.cli import app

    return CliRunner().invoke(app, ["train", *args])


def _folder(root: Path, n: int = 5, size: int = 16) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray((rng.random((size, size)) > 0.5).astype(np.uint8)).save(root / "masks" / f"{i}.png")
    return root


def test_cli_trains_and_writes_rows(tmp_path: Path) -> None:
    import json

    data = _folder(tmp_path / "data")
    ckpt = tmp_path / "ckpt" / "{model}.pt"
    result = _invoke(
        [
            "--models",
            "fast_scnn",
            "--dataset",
            f"folder:{data}",
            "--steps",
            "2",
            "--size",
            "32x32",
            "--batch-size",
            "2",
            "--format",
            "json",
            "--out",
            str(tmp_path / "out"),
            "--save",
            str(ckpt),
        ]
    )
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert (row["model"], row["dataset"], row["train_steps"], row["num_classes"]) == (
        "fast_scnn",
        f"folder:{data}",
        2,
        2,
    )
    assert (row["height"], row["width"], row["batch_size"], row["device"]) == (32, 32, 2, "cpu")
    assert 0 <= row["miou"] <= 1 and len(row["iou_per_class"]) == 2 and row["error"] is None
    assert sorted(p.suffix for p in written(tmp_path / "out")) == [".csv", ".json", ".md"]
    assert (tmp_path / "ckpt" / "fast_scnn.pt").is_file()
    again = _invoke(
        [
            "--models",
            "fast_scnn",
            "--dataset",
            f"folder:{data}",
            "--steps",
            "0",
            "--size",
            "32x32",
            "--weights",
            str(ckpt),
            "--format",
            "json",
            "--no-save",
        ]
    )
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)[0]["miou"] == row["miou"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "folder:{tmp}/missing"], "missing: dataset folder not found"),
        (
            ["--dataset", "folder:{tmp}/data", "--num-classes", "1"],
            "0.png: mask holds class id(s) [1] but the class count is 1",
        ),
        (["--dataset", "nope"], "unknown dataset 'nope'"),
        (["--weights", "{tmp}/none.pt"], "none.pt: weights file not found"),
        (["--models", "fcn8s,fast_scnn", "--save", "{tmp}/x.pt"], "put {model} in the path"),
        (["--models", "block_dsconv"], "block_dsconv is a block"),
        (["--size", "32"], "bad size '32'"),
        (["--steps", "-1"], "bad steps -1"),
        (["--train-time", "0"], "bad --train-time 0"),
        (["--train-time", "30"], "--steps and --train-time both set the training budget"),
        (["--conv-backend", "fast"], "bad --conv-backend 'fast'"),
        (["--conv-backend", "native:nope"], "'nope' is not a conv layer of FastSCNN"),
    ],
)
def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    _folder(tmp_path / "data")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--models" not in args:
        args += ["--models", "fast_scnn"]
    result = _invoke([*args, "--steps" if "--steps" not in args else "--seed", "1", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert not (tmp_path / "out").exists()


def test_cli_failing_model_gets_error_row_and_exit_1(tmp_path: Path, fake_plugins: object) -> None:
    import json

    fake_plugins(
        "broken-model",
        """
        import segbench
        from segbench.registry import ModelSpec

        def build(num_classes, **options):
            raise RuntimeError("cannot build on purpose")

        @segbench.hookimpl
        def register_models(register):
            register(ModelSpec(name="broken", family="test", builder=build, default_size=(32, 32),
                               default_num_classes=2, description="always fails"))
        """,
    )
    data = _folder(tmp_path / "data")
    result = _invoke(
        [
            "--models",
            "broken",
            "--dataset",
            f"folder:{data}",
            "--steps",
            "1",
            "--size",
            "16x16",
            "--format",
            "json",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert result.exit_code == 1, result.output
    (row,) = json.loads(result.stdout)
    assert row["error"] == "cannot build broken: RuntimeError: cannot build on purpose"
    assert row["miou"] is None and row["dataset"] == f"folder:{data}"
    assert (tmp_path / "out").is_dir()  # a failed measurement still records its row


def test_cli_help_states_the_library_defaults() -> None:
    from segbench.runners.defaults import TRAIN

    text = " ".join(_invoke(["--help"]).stdout.split())
    assert f"Default: {TRAIN['cpu'][0]} CPU, {TRAIN['cuda'][0]} CUDA." in text
    assert f"Default: {TRAIN['cpu'][1]} CPU, {TRAIN['cuda'][1]} CUDA." in text
    assert f"Default: {recipe.DEFAULT_LR:g}." in text
