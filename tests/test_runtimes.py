"""Runtimes as plugins: PyTorch, ONNX Runtime and OpenVINO through one protocol; BatchNorm folding;
int8; a third-party runtime; a missing runtime as a row error (tiny models, CPU)."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from helpers import tiny_latency
from torch import nn
from typer.testing import CliRunner

from segbench.cli import app
from segbench.measure.session import Variant
from segbench.plugins import get_registry
from segbench.runtimes.batchnorm import fold_batchnorm

runner = CliRunner()
ONNX = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime", "openvino")),
    reason="needs the onnx and openvino extras",
)


def with_random_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """BatchNorm statistics and affine terms away from the identity, so folding and exports are tested."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.copy_(torch.randn(bn.num_features, generator=generator) * 0.2)
            bn.running_var.copy_(torch.rand(bn.num_features, generator=generator) + 0.5)
            bn.weight.copy_(torch.rand(bn.num_features, generator=generator) + 0.5)
            bn.bias.copy_(torch.randn(bn.num_features, generator=generator) * 0.2)
    return model.eval()


def fast_scnn() -> nn.Module:
    torch.manual_seed(0)
    return with_random_statistics(get_registry().model("fast_scnn").build(num_classes=5))


def test_folding_batchnorm_removes_every_conv_bn_pair_and_keeps_the_output():
    model = fast_scnn()
    pairs = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        before = model(x)
        folded = fold_batchnorm(model)
        after = model(x)
    assert folded == pairs == 44  # every BatchNorm of Fast-SCNN follows a conv inside a ConvBNReLU
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert torch.allclose(before, after, atol=1e-5)
    assert before.abs().max() > 1e-2  # the outputs compared are not all near zero


@ONNX
@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
def test_onnx_runtimes_agree_with_pytorch_at_an_odd_size(name, tmp_path):
    """The dynamo export handles Fast-SCNN's adaptive pooling at 97x131 (the legacy exporter refuses it)."""
    model = fast_scnn()
    x = torch.randn(1, 3, 97, 131, generator=torch.Generator().manual_seed(2))
    runtime = get_registry().runtimes[name]
    with torch.inference_mode():
        reference = model(x)
        session = runtime.prepare(
            model, x, device=torch.device("cpu"), variant=Variant(), threads=1, workdir=tmp_path, calibration=[]
        )
        output = session.predict(x)
    assert output.shape == reference.shape == (1, 5, 97, 131)
    assert (output - reference).abs().max() < 1e-4
    assert torch.equal(output.argmax(1), reference.argmax(1))
    assert session.prepare_seconds > 0 and not session.in_torch and session.threads == 1
    assert (tmp_path / "model.onnx").is_file()


@ONNX
def test_int8_is_calibrated_and_close_to_fp32(tmp_path):
    model = fast_scnn()
    generator = torch.Generator().manual_seed(3)
    calibration = [torch.randn(1, 3, 64, 64, generator=generator) for _ in range(4)]
    x = calibration[0]
    runtime = get_registry().runtimes["onnxruntime"]
    with torch.inference_mode():
        reference = model(x)
        session = runtime.prepare(
            model,
            x,
            device=torch.device("cpu"),
            variant=Variant("int8"),
            threads=1,
            workdir=tmp_path,
            calibration=calibration,
        )
        output = session.predict(x)
    assert (tmp_path / "model-int8.onnx").is_file()
    error = (output - reference).abs().max() / reference.abs().max()
    assert 0 < error < 0.25  # int8: not exact, not garbage
    (tmp_path / "model-int8.onnx").unlink()
    with pytest.raises(Exception, match="int8 needs calibration images"):
        runtime.prepare(
            model, x, device=torch.device("cpu"), variant=Variant("int8"), threads=1, workdir=tmp_path, calibration=[]
        )


@ONNX
def test_latency_rows_per_runtime_and_variant():
    result = runner.invoke(
        app,
        [
            "latency",
            "-m",
            "fast_scnn",
            "--size",
            "64x64",
            "--runtime",
            "torch,onnxruntime,openvino",
            "--fold-bn",
            "--warmup",
            "0",
            "--iters",
            "2",
            "--threads",
            "1",
            "--format",
            "json",
            "--no-save",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["runtime"], r["bn_folded"]) for r in rows] == [
        (rt, folded) for rt in ("torch", "onnxruntime", "openvino") for folded in (False, True)
    ]
    for row in rows:
        assert row["error"] is None and row["threads"] == 1 and row["latency_ms_median"] > 0
    reference, *others = rows
    assert reference["output_argmax_agreement"] is None  # PyTorch fp32 eager is the reference itself
    assert all(r["output_max_abs_diff"] < 1e-4 for r in others)
    for row in rows[2:]:  # other runtimes: preparation time apart, memory not torch's to measure
        assert row["compile_seconds"] > 0 and row["peak_mem_mb"] is None


def test_a_variant_no_selected_runtime_runs_is_bad_input():
    result = runner.invoke(app, ["latency", "-m", "block_dsconv", "--runtime", "onnxruntime", "--compile"])
    assert result.exit_code == 2
    assert "no runtime of onnxruntime runs fp32+compile" in result.stderr


RUNTIME_PLUGIN = """
import time
import torch
import segbench
from segbench.registry import RuntimeSpec
from segbench.measure.session import Session


def prepare(model, example, *, device, variant, threads, workdir, calibration):
    start = time.perf_counter()
    traced = torch.jit.trace(model, example)
    return Session(call=lambda: traced(example), predict=lambda x: traced(x),
                   prepare_seconds=time.perf_counter() - start, threads=threads)


@segbench.hookimpl
def register_runtimes(register):
    register(RuntimeSpec(name="torchscript", description="torch.jit.trace", devices=("cpu",),
                         precisions=("fp32",), switches=frozenset(), unavailable=lambda device: None,
                         prepare=prepare))
    register(RuntimeSpec(name="vendor_sdk", description="not installed here", devices=("cpu",),
                         precisions=("fp32",), switches=frozenset(),
                         unavailable=lambda device: "vendor_sdk not installed: pip install segbench-vendor",
                         prepare=prepare))
"""


def test_a_runtime_plugin_adds_rows_and_a_missing_one_says_how_to_install(fake_plugins):
    fake_plugins("segbench-torchscript", RUNTIME_PLUGIN)
    assert get_registry().runtimes["torchscript"].plugin == "segbench-torchscript"
    result = tiny_latency("--runtime", "torch,torchscript,vendor_sdk")
    assert result.exit_code == 1
    _torch_row, script, missing = json.loads(result.stdout)
    assert (script["runtime"], script["error"], script["output_max_abs_diff"]) == ("torchscript", None, 0.0)
    assert script["compile_seconds"] > 0 and script["output_argmax_agreement"] == 1.0
    assert missing["error"] == "vendor_sdk not installed: pip install segbench-vendor"
    listing = {e["name"]: e for e in json.loads(runner.invoke(app, ["list", "--format", "json"]).stdout)}
    assert listing["vendor_sdk"]["available"] == "cpu: vendor_sdk not installed: pip install segbench-vendor"


@ONNX
@pytest.mark.slow
def test_run_gives_each_runtime_row_its_own_miou(fake_plugins, tmp_path):
    """int8 next to fp32: agreement and mIoU of the trained network, through each runtime's session."""
    result = runner.invoke(
        app,
        [
            "run",
            "-m",
            "fast_scnn",
            "--size",
            "64x64",
            "--steps",
            "20",
            "--train-batch-size",
            "4",
            "--runtime",
            "torch,onnxruntime",
            "--precision",
            "fp32,int8",
            "--warmup",
            "0",
            "--iters",
            "2",
            "--format",
            "json",
            "--no-save",
        ],
    )
    assert result.exit_code == 0, result.output
    eager, ort_fp32, ort_int8 = json.loads(result.stdout)
    assert [(r["runtime"], r["precision"]) for r in (eager, ort_fp32, ort_int8)] == [
        ("torch", "fp32"),
        ("onnxruntime", "fp32"),
        ("onnxruntime", "int8"),
    ]
    assert eager["train_steps"] == ort_int8["train_steps"] == 20 and eager["miou"] > 0
    assert ort_fp32["output_argmax_agreement"] > 0.999
    assert ort_fp32["miou"] == pytest.approx(eager["miou"], abs=0.005)  # the same network, another runtime
    assert ort_int8["miou"] is not None and 0 <= ort_int8["miou"] <= 1
    assert ort_int8["output_argmax_agreement"] > 0.8


def test_latency_times_a_checked_weights_file(tmp_path):
    good, bad = tmp_path / "good.pt", tmp_path / "bad.pt"
    torch.save(get_registry().model("block_dsconv").build().state_dict(), good)
    torch.save({"weight": torch.zeros(1)}, bad)
    assert tiny_latency("--weights", str(good)).exit_code == 0
    result = tiny_latency("--weights", str(bad))
    assert result.exit_code == 2
    assert "bad.pt: weights do not fit block_dsconv" in result.stderr
