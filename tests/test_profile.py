"""``segbench profile``: per-layer facts against hand counts, the ceiling cache, ORT nodes mapped back to
Fast-SCNN's modules, the roofline as a floor, and bad input."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from segbench.cli import app
from segbench.measure import ceilings as ceilings_module
from segbench.measure.ceilings import Calibration, Ceilings, ceilings_for, measure_ceilings
from segbench.measure.layers import describe
from segbench.measure.roofline import roofline_fields
from segbench.rows.schema import LAYER_FIELDS

runner = CliRunner()
ONNX = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxscript", "onnxruntime")),
    reason="needs segbench[onnx]",
)
#: Short enough for a unit test; the ceilings' method is the same as the default's.
SHORT = Calibration(repeats=5, seconds=0.05)


class Tiny(nn.Module):
    """conv 3x3 (3->8) + BN + ReLU, a functional add, depthwise 3x3, 1x1 conv with bias (8->4), 2x resize."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.pw = nn.Conv2d(8, 4, 1)
        self.drop = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn(self.conv(x)))
        y = self.drop(self.pw(self.dw(y + y)))
        return F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)


def test_tiny_network_layers_match_hand_counts():
    layers = describe(Tiny().eval(), torch.zeros(1, 3, 8, 8))
    got = [(la.name, la.op, la.input_shape, la.output_shape, la.macs, la.macs_other, la.nbytes) for la in layers]
    f = 4  # fp32 bytes
    assert got == [
        ("conv", "conv", "1x3x8x8", "1x8x8x8", 64 * 8 * 3 * 9, 0, f * (3 * 64 + 8 * 64 + 8 * 3 * 9)),
        ("bn", "bn", "1x8x8x8", "1x8x8x8", 0, 512, f * (512 + 512 + 4 * 8)),  # weight, bias, mean, var
        ("relu", "relu", "1x8x8x8", "1x8x8x8", 0, 512, f * (512 + 512)),
        ("(root):add", "add", "1x8x8x8+1x8x8x8", "1x8x8x8", 0, 512, f * 3 * 512),
        ("dw", "dwconv", "1x8x8x8", "1x8x8x8", 64 * 8 * 9, 0, f * (512 + 512 + 8 * 9)),
        ("pw", "pwconv", "1x8x8x8", "1x4x8x8", 64 * 4 * 8, 0, f * (512 + 256 + 4 * 8 + 4)),
        ("(root):interpolate", "interpolate", "1x4x8x8", "1x4x16x16", 0, 4 * 4 * 256, f * (256 + 1024)),
    ]  # dropout (eval) is no layer


def test_a_module_called_twice_is_one_layer_doing_both_calls_work():
    shared = nn.Sequential(nn.ReLU())
    twice = nn.Module()
    twice.relu = shared[0]
    twice.forward = lambda x: twice.relu(twice.relu(x) - 1)  # type: ignore[method-assign]
    layers = {la.name: la for la in describe(twice, torch.zeros(1, 2, 4, 4))}
    assert set(layers) == {"relu", "(root):sub"}
    assert (layers["relu"].macs_other, layers["relu"].nbytes) == (2 * 32, 2 * 4 * (32 + 32))


def test_network_floor_fuses_elementwise_layers_into_their_producer():
    from segbench.measure.roofline import network_floor

    layers = describe(Tiny().eval(), torch.zeros(1, 3, 8, 8))
    memory_only = Ceilings(1e9, 1.0, 1.0, 1.0, 1 << 20, 1 << 25, 1, "fp32", "2026-01-01T00:00:00+00:00")
    f = 4
    # conv+bn+relu+add as one: input, conv weights, BN's 4 vectors, add's second input, one output
    fused = f * (3 * 64 + 8 * 3 * 9 + 4 * 8 + 512 + 512)
    rest = f * (512 + 512 + 8 * 9) + f * (512 + 256 + 4 * 8 + 4) + f * (256 + 1024)  # dw, pw, interpolate
    assert network_floor(layers, memory_only, f) == pytest.approx((fused + rest) / 1e6)  # 1 GB/s: bytes / 1e6 ms


def test_roofline_fields_by_hand():
    roofs = Ceilings(100.0, 400.0, 200.0, 20.0, 1 << 20, 1 << 25, 1, "fp32", "2026-01-01T00:00:00+00:00")
    # 1e6 MACs, 1e5 bytes (in L2): compute 0.01 ms, memory 0.00025 ms -> compute bound at 0.01 ms
    fields = roofline_fields(10**6, 10**5, 0.02, roofs)
    assert fields["roofline_ms"] == pytest.approx(0.01) and fields["efficiency"] == pytest.approx(0.5)
    assert (fields["bound"], fields["ceiling"], fields["intensity"]) == ("compute", "compute", 10.0)
    assert fields["achieved_gmacs"] == pytest.approx(50.0) and fields["achieved_gbs"] == pytest.approx(5.0)
    # 1e3 MACs, 1e8 bytes (beyond the LLC): DRAM, 5 ms; taking 100 ms is overhead
    fields = roofline_fields(1000, 10**8, 100.0, roofs)
    assert fields["roofline_ms"] == pytest.approx(5.0)
    assert (fields["bound"], fields["ceiling"]) == ("overhead", "bandwidth_dram")
    assert roofline_fields(1000, 4 << 20, 1.0, roofs)["ceiling"] == "bandwidth_llc"


def test_ceilings_are_measured_with_sane_values():
    found = measure_ceilings(1, "fp32", torch.float32, SHORT)
    assert found.peak_gmacs > 0.1 and found.bandwidth_gbs_dram > 0.1
    assert found.bandwidth_gbs_l2 >= found.bandwidth_gbs_llc >= found.bandwidth_gbs_dram
    assert found.l2_bytes < found.llc_bytes


def test_ceilings_are_cached_and_a_foreign_or_corrupt_cache_is_measured_again(tmp_path, monkeypatch):
    measured: list[int] = []
    fake = Ceilings(50.0, 300.0, 150.0, 15.0, 1 << 20, 1 << 25, 2, "fp32", "2026-12-02T00:00:00+00:00")

    def measure(threads, precision, dtype, calibration):
        measured.append(threads)
        return replace(fake, threads=threads, measured_at=f"measure {len(measured)}")

    monkeypatch.setattr(ceilings_module, "measure_ceilings", measure)
    here = {"cpu": "this cpu", "hostname": "here"}
    first, cached = ceilings_for(here, 2, "fp32", torch.float32, folder=tmp_path)
    assert (cached, measured) == (False, [2])
    again, cached = ceilings_for(here, 2, "fp32", torch.float32, folder=tmp_path)
    assert (cached, again, measured) == (True, first, [2])
    path = tmp_path / "ceilings-cpu-fp32-2t.json"
    saved = json.loads(path.read_text())
    assert saved["machine"] == here and saved["ceilings"]["measured_at"] == "measure 1"
    path.write_text(json.dumps({**saved, "method": ceilings_module.METHOD - 1}))  # an older method's file
    assert ceilings_for(here, 2, "fp32", torch.float32, folder=tmp_path)[1] is False
    measured.pop()
    saved = json.loads(path.read_text())
    # another machine's file at the same place: refused, measured again, replaced
    path.write_text(json.dumps({**saved, "machine": {"cpu": "other cpu", "hostname": "there"}}))
    other, cached = ceilings_for(here, 2, "fp32", torch.float32, folder=tmp_path)
    assert (cached, other.measured_at, len(measured)) == (False, "measure 2", 2)
    assert json.loads(path.read_text())["machine"] == here
    for corrupt in ("{not json", json.dumps({"machine": here, "ceilings": {"peak_gmacs": "x"}})):
        path.write_text(corrupt)
        assert ceilings_for(here, 2, "fp32", torch.float32, folder=tmp_path)[1] is False
    assert len(measured) == 4
    assert ceilings_for(here, 2, "fp32", torch.float32, folder=tmp_path, recalibrate=True)[1] is False
    assert ceilings_module.cached_ceilings(here, tmp_path)[0].measured_at == "measure 5"
    assert ceilings_module.cached_ceilings({"cpu": "other"}, tmp_path) == []


def _fast_scnn() -> nn.Module:
    from segbench.models.fast_scnn import FastSCNN

    torch.manual_seed(0)
    return FastSCNN().eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Fast-SCNN at 64x128, its layers and its ONNX export (one export for the runtime tests)."""
    from segbench.runtimes.onnx_export import export

    model, x = _fast_scnn(), torch.randn(1, 3, 64, 128)
    return model, x, describe(model, x), export(model, x, tmp_path_factory.mktemp("onnx"))


@ONNX
def test_onnxruntime_nodes_map_to_fast_scnn_modules(exported, tmp_path):
    import onnxruntime as ort

    from segbench.measure.layers import OnnxGraph, map_nodes, onnxruntime_runs
    from segbench.runtimes.onnx_export import INPUT_NAME
    from segbench.runtimes.onnxruntime_runtime import session_options

    model, x, layers, path = exported
    options = session_options(1)
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path / "ort")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(2):
        session.run(None, {INPUT_NAME: x.numpy()})
    rows = map_nodes(OnnxGraph(path, layers), onnxruntime_runs(Path(session.end_profiling()), 1), layers)
    _check_mapped(rows, model, layers, inserted={"(unmapped Squeeze)"})


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="needs segbench[openvino]")
@ONNX
def test_openvino_nodes_map_to_fast_scnn_modules(exported):
    from segbench.measure.layers import OnnxGraph, map_nodes, openvino_runs
    from segbench.runtimes.openvino_runtime import compile_cpu

    model, x, layers, path = exported
    compiled = compile_cpu(path, 1, perf_count=True)
    request = compiled.create_infer_request()
    request.infer({0: x.numpy()})
    rows = map_nodes(OnnxGraph(path, layers), openvino_runs(compiled, [request.get_profiling_info()]), layers)
    _check_mapped(rows, model, layers, inserted=set())


def _check_mapped(rows: list, model: nn.Module, layers: list, inserted: set[str]) -> None:
    """Every row but the runtime's own (reorders, ``inserted``) names Fast-SCNN layers; every
    convolution is in exactly one row; all of macs_analytic is accounted for."""
    from segbench.measure.layers import REORDER, is_unmapped

    modules = dict(model.named_modules())
    by_layer = {la.name: la for la in layers}
    mapped_convs = []
    for row in rows:
        assert len(row.times_ms) == 1 and row.times_ms[0] > 0
        if is_unmapped(row.name):
            assert row.name in {REORDER, *inserted} and row.macs == 0
            continue
        assert "conv" in row.op or row.op in {"pool", "interpolate", "add", "cat", "relu", "add+relu"}, row
        assert row.nbytes > 0 and (row.macs > 0) == ("conv" in row.op)
        for part in _parts(row.name):
            assert part in by_layer, (row.name, part)
            if isinstance(modules.get(part), nn.Conv2d):
                mapped_convs.append(part)
    assert sorted(mapped_convs) == sorted(n for n, m in modules.items() if isinstance(m, nn.Conv2d))
    assert sum(r.macs for r in rows) == sum(la.macs for la in layers)


def _parts(name: str) -> list[str]:
    """The layer names a row's ``layer`` stands for (``a.b.conv+bn+relu`` or a comma list)."""
    if ", " in name or "+" not in name:
        return name.split(", ")
    parent, last = name.rsplit(".", 1)
    return [f"{parent}.{part}" for part in last.split("+")]


def test_profile_rows_and_the_roofline_is_a_floor(tmp_path):
    """A correctness property of the ceilings and the byte counts (a wrong one shows up as a layer
    faster than its roof), not a timing claim: layers can only be slower than their roofs."""
    from segbench.plugins import get_registry
    from segbench.runners.defaults import Timing
    from segbench.runners.profile import ProfileConfig, profile

    timing = Timing(warmup=1, threads=1)
    config = ProfileConfig(size=(64, 128), calls=5, timing=timing, calibration=SHORT, cache_dir=tmp_path)
    rows = list(profile(get_registry().select("fast_scnn", kind="model"), config))
    layers, (summary,) = rows[:-1], rows[-1:]
    assert summary["kind"] == "model" and summary["error"] is None
    assert summary["timing_protocol"] == "paired fixed warmup=1 iters=5" and summary["iters"] == 5
    assert len(layers) >= 40 and all(r["kind"] == "layer" for r in layers)
    for row in layers:
        assert all(row[f] is not None for f in LAYER_FIELDS), row
        assert row["efficiency"] == pytest.approx(row["roofline_ms"] / row["layer_ms"])
    assert sum(r["layer_share"] for r in layers) == pytest.approx(1.0)
    assert 0 < summary["roofline_ms"] < sum(r["roofline_ms"] for r in layers)  # eager does not fuse
    assert summary["efficiency"] == pytest.approx(summary["roofline_ms"] / summary["latency_ms_median"])
    assert summary["macs_analytic"] == sum(r["macs_analytic"] for r in layers)
    assert summary["profile_coverage"] > 0  # its value is a timing claim: see benchmarks/test_profile.py
    assert summary["unattributed_ms"] == pytest.approx(summary["latency_ms_median"] * (1 - summary["profile_coverage"]))
    too_fast = [(r["layer"], r["efficiency"]) for r in layers if r["layer_share"] >= 0.01 and r["efficiency"] > 1.1]
    assert too_fast == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--runtime", "tensorrt"], "unknown runtime"),
        (["--size", "16x16"], "too small"),
        (["--size", "0x64"], "bad size"),
        (["--warmup", "-1"], "warmup"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = runner.invoke(app, ["profile", "-m", "fast_scnn", "--no-save", *args])
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_a_runtime_without_a_profiler_is_bad_input(fake_plugins):
    from tests.test_runtimes import RUNTIME_PLUGIN

    fake_plugins("segbench-torchscript", RUNTIME_PLUGIN)
    result = runner.invoke(app, ["profile", "-m", "fast_scnn", "--runtime", "torchscript", "--no-save"])
    assert result.exit_code == 2
    assert "torchscript has no per-layer profiler" in result.output


def test_adaptive_timing_does_not_apply():
    """Profile times exactly ``calls`` calls; a Timing asking for more or adaptive timing is refused."""
    from segbench.errors import UserError
    from segbench.runners.defaults import Timing
    from segbench.runners.profile import ProfileConfig

    assert ProfileConfig(calls=7, timing=Timing(warmup=2)).protocol.iters == 7
    with pytest.raises(UserError, match="do not apply"):
        ProfileConfig(timing=Timing(budget_s=1.0))
