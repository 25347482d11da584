"""``--init vgg16:PATH``: FCN backbones from a VGG16 classifier checkpoint (net surgery), exact and checked."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from segbench.cli import app
from segbench.errors import UserError
from segbench.measure.checkpoints import init_from_vgg16, read_vgg16

runner = CliRunner()
#: torchvision's VGG16: the ``features`` index of each conv (ReLUs and pools take the others), per block.
CONV_INDICES = ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28))
CHANNELS = (64, 128, 256, 512, 512)


def random_vgg16_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A VGG16 classifier state_dict in torchvision's layout, He-scaled so activations stay O(1)."""
    g = torch.Generator().manual_seed(seed)
    state, in_channels = {}, 3
    for indices, channels in zip(CONV_INDICES, CHANNELS):
        for i in indices:
            fan_in = in_channels * 9
            state[f"features.{i}.weight"] = torch.randn(channels, in_channels, 3, 3, generator=g) * math.sqrt(
                2 / fan_in
            )
            state[f"features.{i}.bias"] = torch.randn(channels, generator=g) * 0.01
            in_channels = channels
    for key, (out, inp) in {
        "classifier.0": (4096, 512 * 7 * 7),
        "classifier.3": (4096, 4096),
        "classifier.6": (1000, 4096),
    }.items():
        state[f"{key}.weight"] = torch.randn(out, inp, generator=g) * math.sqrt(2 / inp)
        state[f"{key}.bias"] = torch.randn(out, generator=g) * 0.01
    return state


def classifier_hidden(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """VGG16's second hidden layer (after ReLU, eval mode) computed from the state_dict alone."""
    for indices in CONV_INDICES:
        for i in indices:
            x = F.relu(F.conv2d(x, state[f"features.{i}.weight"], state[f"features.{i}.bias"], padding=1))
        x = F.max_pool2d(x, 2)
    x = torch.flatten(x, 1)  # 512 x 7 x 7 at 224x224: torchvision's adaptive pool to 7x7 is the identity
    x = F.relu(F.linear(x, state["classifier.0.weight"], state["classifier.0.bias"]))
    return F.relu(F.linear(x, state["classifier.3.weight"], state["classifier.3.bias"]))


@pytest.fixture(scope="module")
def vgg16_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    path = tmp_path_factory.mktemp("vgg") / "vgg16.pt"
    state = random_vgg16_state()
    torch.save(state, path)
    return path, state


def test_surgery_is_exact_fc7_at_the_centre_equals_the_classifier(vgg16_file, fcn_models) -> None:
    path, state = vgg16_file
    model = fcn_models["fcn8s"]
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        init_from_vgg16(model, path)
        x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            _, _, fc7 = model.eval().backbone(x)
            expected = classifier_hidden(state, x)
        # pool5 is 7x7; fc6 (7x7, padding 3) at position (3, 3) sees exactly that map, unpadded
        assert fc7.shape[-2:] == (7, 7)
        assert expected.abs().mean() > 0.1 and (expected > 0).float().mean() > 0.2  # a non-trivial check
        torch.testing.assert_close(fc7[0, :, 3, 3], expected[0], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(model.backbone.to_pool3[0][0].weight, state["features.0.weight"], rtol=0, atol=0)
    finally:
        model.load_state_dict(saved)


def test_reading_a_wrong_checkpoint_says_what_differs(tmp_path: Path, vgg16_file) -> None:
    _, state = vgg16_file
    cases = {
        "missing": ({k: v for k, v in state.items() if k != "features.28.bias"}, "missing features.28.bias"),
        "shape": ({**state, "classifier.3.weight": torch.zeros(10, 10)}, "classifier.3.weight is (10, 10)"),
        "bn": ({**state, "features.1.running_mean": torch.zeros(64)}, "unexpected features.1.running_mean"),
    }
    for name, (bad, message) in cases.items():
        torch.save(bad, tmp_path / f"{name}.pt")
        with pytest.raises(UserError, match="not a VGG16 classifier checkpoint in torchvision's layout") as info:
            read_vgg16(tmp_path / f"{name}.pt")
        assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-m", "fast_scnn", "--init", "vgg16:{vgg}"], "--init vgg16 fits models with an FCN's VGG16 backbone"),
        (["-m", "fcn8s", "--init", "vgg16:{bad}"], "not a VGG16 classifier checkpoint"),
        (["-m", "fcn8s", "--init", "resnet50:{vgg}"], "bad --init 'resnet50:"),
        (["-m", "fcn8s", "--init", "vgg16:{vgg}", "--weights", "{vgg}"], "--init and --weights both"),
    ],
)
def test_bad_init_is_exit_2_before_training(tmp_path: Path, vgg16_file, args: list[str], message: str) -> None:
    bad = tmp_path / "bad.pt"
    torch.save({"features.0.weight": torch.zeros(3, 3)}, bad)
    args = [a.format(vgg=vgg16_file[0], bad=bad) for a in args]
    result = runner.invoke(app, ["train", *args, "--steps", "1", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.count("\n") == 1
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written


def test_train_records_the_init(vgg16_file) -> None:
    path = vgg16_file[0]
    args = [
        "train",
        "-m",
        "fcn8s",
        "--init",
        f"vgg16:{path}",
        "--steps",
        "0",
        "--size",
        "32x32",
        "--conv-backend",
        "onednn",
        "--format",
        "json",
        "--no-save",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["init"] == f"vgg16:{path}" and row["train_conv_backend"] == "onednn" and row["error"] is None
