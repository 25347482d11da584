"""Latency measurement: row fields, variants, correctness fields, memory, traces (tiny CPU models).

No test asserts a speed: the machine is shared. The CPU cross-check against torch.utils.benchmark
lives in benchmarks/test_crosscheck.py.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch
from helpers import latency_row, tiny_latency, written
from torch import nn
from typer.testing import CliRunner

from segbench.cli import app
from segbench.errors import UserError
from segbench.measure.faults import OOM, error_reason
from segbench.measure.memory import MIB, cpu_peak_mb, peak_from_events
from segbench.measure.outputs import Agreement, compare_outputs
from segbench.measure.session import Variant, expand_variants
from segbench.registry import ModelSpec
from segbench.rows.latency import summarize
from segbench.rows.schema import ROW_FIELDS, make_row
from segbench.runners.defaults import Timing, timing
from segbench.runners.latency import LatencyConfig, latency
from segbench.runtimes.torch_runtime import CUDA_GRAPH_ON_CPU

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def latency_rows(specs, **options):
    """Every row of the latency runner for ``specs`` with ``LatencyConfig(**options)``."""
    return list(latency(specs, LatencyConfig(**options)))


def tiny_net(classes: int = 5) -> nn.Module:
    """A small conv net with non-trivial logits (random weights, BN with random statistics)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, classes, 1))
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    return net.eval()


def test_default_row_fields_are_filled_and_consistent() -> None:
    row = latency_row(tiny_net(), device="cpu", warmup=2, iters=7)
    assert row["error"] is None and row["iters"] == 7
    assert row["latency_ms_min"] <= row["latency_ms_median"] <= row["latency_ms_p90"]
    assert row["latency_ms_min"] <= row["latency_ms_mean"]
    assert row["latency_ms_std"] >= 0
    assert row["throughput_ips"] == pytest.approx(2 * 1000 / row["latency_ms_median"])
    assert row["host_ms_median"] == row["latency_ms_median"]  # one clock on CPU
    assert row["threads"] == torch.get_num_threads()
    assert Variant(row["precision"], row["channels_last"], row["compiled"], row["cuda_graph"]) == Variant()
    # the fp32 eager default is the reference itself: no correctness fields, no compile time
    assert row["output_max_abs_diff"] is None and row["output_argmax_agreement"] is None
    assert row["compile_seconds"] is None
    assert row["peak_mem_mb"] > 0
    assert row.get("trace_file") is None


def test_threads_are_set_recorded_and_restored() -> None:
    before = torch.get_num_threads()
    seen = []

    class Spy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(torch.get_num_threads())
            return x * 2

    row = latency_row(Spy(), device="cpu", warmup=1, iters=3, threads=1)
    assert row["threads"] == 1
    assert set(seen) == {1}
    assert torch.get_num_threads() == before


def test_threads_are_restored_when_the_model_raises() -> None:
    before = torch.get_num_threads()

    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise ValueError("shape mismatch\nsecond line")

    row = latency_row(Broken(), device="cpu", warmup=0, iters=1, threads=1)
    assert torch.get_num_threads() == before
    assert row["error"] == "ValueError: shape mismatch"


def test_channels_last_variant_matches_fp32_eager() -> None:
    net = tiny_net()
    row = latency_row(net, variant=Variant(channels_last=True), device="cpu", warmup=1, iters=3)
    assert row["channels_last"] is True and row["precision"] == "fp32"
    assert row["output_max_abs_diff"] < 1e-4
    assert row["output_argmax_agreement"] == pytest.approx(1.0)
    # the caller's model is untouched: still contiguous fp32
    weight = net[0].weight
    assert weight.dtype == torch.float32 and weight.is_contiguous()


#: How PyTorch says an operator has no bf16 kernel on this device, e.g. ``"slow_conv2d_cpu" not implemented for 'BFloat16'``.
BF16_UNSUPPORTED = "not implemented for 'BFloat16'"


def test_bf16_on_cpu_reports_agreement_or_fails_cleanly() -> None:
    net = tiny_net()
    row = latency_row(net, variant=Variant("bf16"), device="cpu", warmup=1, iters=3)
    if row["error"] is not None:
        # PyTorch's documented refusal of a dtype an operator has no kernel for on this CPU (the sweep
        # turns it into a row error); any other failure of the bf16 path is a bug and fails the test
        assert BF16_UNSUPPORTED in row["error"], row["error"]
        pytest.skip(f"bf16 unsupported here: {row['error']}")
    assert row["precision"] == "bf16"
    # bf16 keeps 8 mantissa bits: logits of order 1 differ by ~1e-2, not by 0 and not by 1
    assert 0 < row["output_max_abs_diff"] < 0.2
    assert row["output_argmax_agreement"] > 0.9
    assert next(net.parameters()).dtype == torch.float32


def test_cuda_graph_on_cpu_is_refused_with_a_clear_message() -> None:
    row = latency_row(tiny_net(), variant=Variant(cuda_graph=True), device="cpu", warmup=0, iters=1)
    assert row["error"] == CUDA_GRAPH_ON_CPU == "cuda graphs need --device cuda"


def test_bad_precision_and_iters_are_user_errors() -> None:
    with pytest.raises(UserError, match="fp32, fp16, bf16, int8"):
        latency_row(tiny_net(), variant=Variant("fp8"), device="cpu")
    with pytest.raises(UserError, match="iters"):
        latency_row(tiny_net(), device="cpu", iters=0)


def test_trace_file_is_written_and_named(tmp_path) -> None:
    (tmp_path / "traces").mkdir()
    row = latency_row(tiny_net(), device="cpu", warmup=1, iters=2, trace_dir=tmp_path / "traces")
    path = tmp_path / "traces" / "net-2x16x16-torch-fp32.json"
    assert row["trace_file"] == str(path)
    events = json.loads(path.read_text())["traceEvents"]
    assert any("conv" in str(e.get("name", "")).lower() for e in events)


def test_trace_name_says_model_shape_runtime_and_variant(tmp_path) -> None:
    row = latency_row(
        tiny_net(), variant=Variant(channels_last=True), device="cpu", warmup=0, iters=1, trace_dir=tmp_path
    )
    assert row["trace_file"] == str(tmp_path / "net-2x16x16-torch-fp32+cl.json")


def test_cpu_peak_memory_counts_the_bytes_a_forward_allocates() -> None:
    class Allocates(nn.Module):
        """Allocates a 4 MiB temporary and a 1 MiB output: peak 5 MiB."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            tmp = torch.empty(MIB, dtype=torch.float32)  # 4 MiB, alive until the output exists
            out = torch.zeros(MIB // 4, dtype=torch.float32)  # 1 MiB
            return out if tmp.numel() else x

    x = torch.ones(4)
    with torch.inference_mode():
        peak = cpu_peak_mb(lambda: Allocates()(x))
    assert peak == pytest.approx(5.0, abs=0.01)
    row = latency_row(Allocates(), batch=1, device="cpu", warmup=0, iters=2)
    assert row["peak_mem_mb"] == pytest.approx(5.0, abs=0.01)


def test_peak_from_events_is_the_running_maximum_in_time_order() -> None:
    events = [(3, 3 * MIB), (0, 10 * MIB), (1, -10 * MIB), (2, 5 * MIB)]
    assert peak_from_events(events) == 10.0  # 10 at t=0 beats 5 + 3 at t=3
    assert peak_from_events([(0, -MIB)]) == 0.0
    assert peak_from_events([]) == 0.0


def test_summarize_statistics() -> None:
    times = [float(t) for t in range(1, 11)]
    stats = summarize(times, batch_size=4)
    assert stats["latency_ms_median"] == 5.5
    assert stats["latency_ms_mean"] == 5.5
    assert stats["latency_ms_p90"] == pytest.approx(9.1)  # numpy's default (linear) percentile
    assert stats["latency_ms_min"] == 1.0
    assert stats["latency_ms_std"] == pytest.approx(statistics.stdev(times))
    assert stats["iters"] == 10
    assert stats["throughput_ips"] == pytest.approx(4 * 1000 / 5.5)
    single = summarize([2.0], batch_size=1)
    assert (single["latency_ms_p90"], single["latency_ms_std"], single["throughput_ips"]) == (2.0, 0.0, 500.0)


def test_compare_outputs_on_known_tensors() -> None:
    ref = torch.zeros(1, 3, 2, 2)
    ref[:, 0] = 1.0  # class 0 wins everywhere
    out = ref.clone()
    out[0, 2, 0, 0] = 2.0  # one pixel of four now says class 2
    assert compare_outputs(out, (ref, "aux")) == Agreement(max_abs_diff=2.0, argmax_agreement=0.75)
    out[0, 1, 1, 1] = float("nan")
    assert compare_outputs(out, {"out": ref}).max_abs_diff == float("inf")


def test_error_reason_maps_every_out_of_memory_to_one_text() -> None:
    assert error_reason(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")) == OOM
    assert error_reason(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried ...")) == OOM
    assert error_reason(RuntimeError("")) == "RuntimeError"


@pytest.mark.slow
def test_torch_compile_time_is_reported_separately() -> None:
    row = latency_row(tiny_net(), variant=Variant(compile=True), device="cpu", warmup=1, iters=3)
    assert row["compiled"] is True
    assert row["compile_seconds"] > row["latency_ms_median"] / 1000
    assert row["output_max_abs_diff"] < 1e-4
    assert row["output_argmax_agreement"] == pytest.approx(1.0)


# --- the sweep -----------------------------------------------------------------------------------


def _spec(name: str, builder, kind: str = "model", **extra) -> ModelSpec:
    return ModelSpec(
        name=name,
        family="test",
        builder=builder,
        default_size=(8, 8),
        default_num_classes=None if kind == "block" else 5,
        description="test model",
        kind=kind,
        plugin="tests",
        **extra,
    )


TINY = _spec("tiny", lambda num_classes: tiny_net(num_classes))


class FailsAtBatch(nn.Module):
    """Raises ``error`` for inputs of batch ``batch``; otherwise a 1x1 conv."""

    def __init__(self, batch: int, error: BaseException) -> None:
        super().__init__()
        self.batch, self.error = batch, error
        self.conv = nn.Conv2d(3, 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == self.batch:
            raise self.error
        return self.conv(x)


def test_expand_variants_rule() -> None:
    assert [v.tag for v in expand_variants()] == ["fp32"]
    assert [v.tag for v in expand_variants(("fp16",))] == ["fp32", "fp16"]  # the baseline is always there
    assert [v.tag for v in expand_variants(("fp32", "fp16"), channels_last=True)] == [
        "fp32",
        "fp32+cl",
        "fp16",
        "fp16+cl",
    ]
    assert [v.tag for v in expand_variants(("bf16",), compile=True, cuda_graph=True)] == [
        "fp32",
        "bf16",
        "bf16+graph",
        "bf16+compile",
        "bf16+compile+graph",
    ]
    assert [v.tag for v in expand_variants(("int8",), fold_bn=True)] == ["fp32", "int8", "int8+foldbn"]


def test_sweep_gives_one_row_per_cell_in_order() -> None:
    rows = latency_rows(
        [TINY],
        device="cpu",
        sizes=[(8, 8), (6, 10)],
        batch_sizes=[1, 3],
        variants=expand_variants(channels_last=True),
        timing=Timing(warmup=0, iters=2, threads=1),
    )
    cells = [(r["height"], r["width"], r["batch_size"], r["channels_last"]) for r in rows]
    assert cells == [(h, w, b, cl) for h, w in ((8, 8), (6, 10)) for b in (1, 3) for cl in (False, True)]
    for row in rows:
        assert set(row) == set(ROW_FIELDS)
        assert row["error"] is None and row["iters"] == 2 and row["threads"] == 1
        assert (row["model"], row["kind"], row["plugin"], row["device"]) == ("tiny", "model", "tests", "cpu")
        assert row["num_classes"] == 5 and row["params"] == sum(p.numel() for p in tiny_net().parameters())
        assert row["throughput_ips"] == pytest.approx(row["batch_size"] * 1000 / row["latency_ms_median"])
        assert (row["output_argmax_agreement"] is None) == (not row["channels_last"])


def test_failing_cells_become_row_errors_and_the_sweep_goes_on() -> None:
    oom = _spec("oom", lambda num_classes: FailsAtBatch(2, torch.cuda.OutOfMemoryError("CUDA out of memory.")))
    broken = _spec("broken", lambda num_classes: FailsAtBatch(1, ValueError("bad shape\ndetails")))
    unbuildable = _spec("unbuildable", lambda num_classes: 1 / 0)
    rows = latency_rows(
        [oom, broken, unbuildable, TINY],
        device="cpu",
        batch_sizes=[1, 2],
        variants=expand_variants(cuda_graph=True),
        timing=Timing(warmup=0, iters=1),
    )
    errors = [(r["model"], r["batch_size"], r["cuda_graph"], r["error"]) for r in rows]
    assert errors == [
        ("oom", 1, False, None),
        ("oom", 1, True, "cuda graphs need --device cuda"),
        ("oom", 2, False, "out of memory"),
        ("oom", 2, True, "cuda graphs need --device cuda"),
        ("broken", 1, False, "ValueError: bad shape"),
        ("broken", 1, True, "cuda graphs need --device cuda"),
        ("broken", 2, False, None),
        ("broken", 2, True, "cuda graphs need --device cuda"),
        *[
            ("unbuildable", b, g, "cannot build unbuildable: ZeroDivisionError: division by zero")
            for b in (1, 2)
            for g in (False, True)
        ],
        ("tiny", 1, False, None),
        ("tiny", 1, True, "cuda graphs need --device cuda"),
        ("tiny", 2, False, None),
        ("tiny", 2, True, "cuda graphs need --device cuda"),
    ]
    failed = next(r for r in rows if r["error"] == "out of memory")
    assert failed["latency_ms_median"] is None and failed["iters"] is None


def test_ctrl_c_stops_the_sweep_after_the_finished_rows() -> None:
    stop = _spec("stop", lambda num_classes: FailsAtBatch(2, KeyboardInterrupt()))
    rows = []
    with pytest.raises(KeyboardInterrupt):
        for row in latency(
            [stop, TINY], LatencyConfig(device="cpu", batch_sizes=[1, 2, 4], timing=Timing(warmup=0, iters=1))
        ):
            rows.append(row)
    assert [(r["model"], r["batch_size"]) for r in rows] == [("stop", 1)]


def test_block_rows_carry_block_fields_and_input_channels() -> None:
    from segbench.models.blocks import DepthwiseSeparableConv

    block = _spec(
        "block_dsconv",
        lambda **options: DepthwiseSeparableConv(**options),
        kind="block",
        default_options={"kernel_size": 5, "in_channels": 6, "out_channels": 4, "stride": 2},
    )
    (row,) = latency_rows([block], device="cpu", timing=Timing(warmup=0, iters=1))
    assert row["error"] is None
    fields = ("kind", "block", "kernel_size", "in_channels", "out_channels", "stride")
    assert [row[f] for f in fields] == ["block", "dsconv", 5, 6, 4, 2]
    assert row["num_classes"] is None and (row["height"], row["width"]) == (8, 8)


def test_default_protocol_depends_on_the_device_and_is_adaptive() -> None:
    cpu, cuda = timing("cpu"), timing("cuda:1")
    assert (cpu.warmup, cpu.iters, cpu.min_samples, cpu.min_seconds, cpu.budget_s, cpu.target) == (
        3,
        None,
        6,
        1.0,
        10.0,
        0.02,
    )
    assert (cuda.warmup, cuda.iters, cuda.min_samples, cuda.budget_s) == (10, None, 20, 2.0)
    assert timing("cpu", iters=7).iters == 7
    (row,) = latency_rows([TINY], device="cpu", timing=Timing(budget_s=0.5))
    assert row["iters"] >= 6 and len(row["latency_samples_ms"]) == row["iters"]
    assert row["latency_ms_ci_low"] <= row["latency_ms_median"] <= row["latency_ms_ci_high"]
    half_width = max(
        row["latency_ms_median"] - row["latency_ms_ci_low"], row["latency_ms_ci_high"] - row["latency_ms_median"]
    )
    assert row["ci_target_met"] == (half_width / row["latency_ms_median"] <= 0.02)


def test_trace_files_are_named_after_the_cell(tmp_path) -> None:
    rows = latency_rows(
        [TINY],
        device="cpu",
        batch_sizes=[2],
        variants=expand_variants(channels_last=True),
        timing=Timing(warmup=0, iters=1),
        trace_dir=tmp_path,
    )
    names = ["tiny-2x8x8-torch-fp32.json", "tiny-2x8x8-torch-fp32+cl.json"]
    assert [r["trace_file"] for r in rows] == [str(tmp_path / name) for name in names]
    assert all(json.loads(Path(r["trace_file"]).read_text())["traceEvents"] for r in rows)


def test_a_variant_runs_where_fp32_eager_fails() -> None:
    """The fp32 reference failing (as an fp32 out-of-memory would) must not fail the other variants:
    they are timed alone, without an agreement or a speed-up, not reported as the reference's error."""

    class Fp32Fails(nn.Module):
        def __init__(self, num_classes: int = 5) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, num_classes, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.dtype == torch.float32:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (pretend: only fp32 does not fit)")
            return self.conv(x)

    spec = _spec("fp32_fails", lambda num_classes: Fp32Fails(num_classes))
    eager, bf16 = latency_rows(
        [spec], device="cpu", variants=expand_variants(("bf16",)), timing=Timing(warmup=0, iters=2)
    )
    assert eager["error"] == "out of memory" and eager["tf32"] is None
    assert bf16["error"] is None and bf16["latency_ms_median"] > 0
    assert bf16["latency_speedup"] is None and bf16["output_argmax_agreement"] is None


def test_a_variant_that_fits_only_without_fp32_beside_it_is_timed_alone() -> None:
    """fp32 alone fits, bf16 alone fits, the two interleaved do not (pretend OOM when fp32 follows bf16):
    the bf16 row is timed alone, not reported as out of memory, and still compared with the reference."""
    last_dtype: list[torch.dtype] = []

    class NoRoomForBoth(nn.Module):
        def __init__(self, num_classes: int = 5) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, num_classes, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.dtype == torch.float32 and last_dtype[-1:] == [torch.bfloat16]:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (pretend: fp32 and bf16 do not fit together)")
            last_dtype.append(x.dtype)
            return self.conv(x)

    spec = _spec("no_room_for_both", lambda num_classes: NoRoomForBoth(num_classes))
    eager, bf16 = latency_rows(
        [spec], device="cpu", variants=expand_variants(("bf16",)), timing=Timing(warmup=1, iters=3)
    )
    assert eager["error"] is None and bf16["error"] is None
    assert bf16["iters"] == 3 and bf16["latency_speedup"] is None
    assert bf16["output_argmax_agreement"] is not None
    assert last_dtype[-3:] == [torch.bfloat16] * 3  # the retry ran bf16 alone


# --- the command line ----------------------------------------------------------------------------

runner = CliRunner()


def test_cli_json_output_parses_with_one_row_per_cell(tmp_path) -> None:
    result = runner.invoke(
        app,
        [
            "latency",
            "--models",
            "block_dsconv",
            "--size",
            "8x8,4x6",
            "--batch-size",
            "1,2",
            "--warmup",
            "0",
            "--iters",
            "2",
            "--threads",
            "1",
            "--channels-last",
            "--format",
            "json",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == 2 * 2 * 2
    assert {r["model"] for r in rows} == {"block_dsconv"} and {r["threads"] for r in rows} == {1}
    assert {(r["height"], r["width"]) for r in rows} == {(8, 8), (4, 6)}
    assert "0 warm-up + 2 timed calls per row on cpu; per cell: torch fp32, torch fp32+cl" in result.stderr
    saved = sorted(p.suffix for p in written(tmp_path))
    assert saved == [".csv", ".json", ".md"]


def test_cli_row_errors_exit_1_and_keep_the_rows() -> None:
    result = tiny_latency("--cuda-graph")
    assert result.exit_code == 1
    rows = json.loads(result.stdout)
    assert [r["error"] for r in rows] == [None, "cuda graphs need --device cuda"]


def test_cli_ctrl_c_emits_finished_rows_and_exits_130(monkeypatch) -> None:
    import segbench.runners.latency

    def interrupted(specs, config, context):
        yield make_row(
            model="first",
            batch_size=1,
            height=8,
            width=8,
            latency_ms_median=1.0,
            throughput_ips=1e3,
            **Variant().fields(),
        )
        raise KeyboardInterrupt

    monkeypatch.setattr(segbench.runners.latency, "latency", interrupted)
    result = runner.invoke(app, ["latency", "-m", "block_dsconv", "--format", "json", "--no-save"])
    assert result.exit_code == 130
    assert [r["model"] for r in json.loads(result.stdout)] == ["first"]
    assert "interrupted: keeping the 1 finished row(s)" in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cli_cuda_without_cuda_exits_2_with_one_line() -> None:
    result = runner.invoke(app, ["latency", "--device", "cuda", "--format", "json"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "segbench: error: device 'cuda' requested but CUDA is not available here; use --device cpu"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--precision", "fp8"], "bad precision fp8: accepted fp32, fp16, bf16, int8"),
        (["--batch-size", "0"], "bad batch size '0'"),
        (["--size", "8by8"], "bad size '8by8'"),
        (["--iters", "0"], "bad iters 0"),
        (["--warmup", "-1"], "bad warmup -1"),
        (["--threads", "0"], "bad threads 0"),
    ],
)
def test_cli_bad_options_exit_2(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["latency", "-m", "block_dsconv", *args])
    assert result.exit_code == 2
    assert message in result.stderr
