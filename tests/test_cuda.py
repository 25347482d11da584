"""The CUDA paths: tests marked ``cuda`` fail if the CUDA behaviour is wrong and skip without a GPU
(benchmarks/gpu_acceptance.sh runs them and fails on any skip of a ``cuda`` test not also marked
``optional_on_gpu``); the unmarked tests check on a CPU the part of each CUDA fix a CPU can show
(review cuda-2026-12-02: the finding each test covers is named in its docstring)."""

from __future__ import annotations

import copy
import sys
import warnings
import weakref
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from helpers import latency_row
from torch import nn

from segbench.measure.faults import OOM, VariantUnavailable
from segbench.measure.gpu_monitor import GpuMonitor
from segbench.measure.memory import peak_memory
from segbench.measure.session import Session, Variant, expand_variants
from segbench.measure.settings import measurement_settings, strict_fp32, tf32_enabled, tf32_in_use
from segbench.registry import ModelSpec
from segbench.rows.latency import gpu_fields
from segbench.runners.defaults import Timing
from segbench.runners.latency import LatencyConfig, latency
from segbench.runtimes import torch_runtime

CUDA = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def spec_of(name: str, module: type[nn.Module], size: tuple[int, int]) -> ModelSpec:
    """A model spec building ``module(num_classes)`` (3 classes by default) at ``size``."""
    return ModelSpec(
        name=name,
        family="t",
        builder=lambda num_classes: module(num_classes),
        default_size=size,
        default_num_classes=3,
        description="t",
        plugin="tests",
    )


def tiny_net(classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, classes, 1)).eval()


class Matmul(nn.Module):
    """One large matmul: microseconds to launch, milliseconds on the GPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ x


class Syncs(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float(x.sum().item())  # a host sync: not capturable


# ---- the CPU part of each fix ------------------------------------------------------------------


class Recorded(nn.Sequential):
    """Records every ``_apply`` (what ``.cpu()``, ``.to()``, ``.half()`` do to a module in place)."""

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__(*layers)
        self.moves: list[str] = []

    def _apply(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.moves.append("moved")
        return super()._apply(fn, *args, **kwargs)


@pytest.mark.parametrize("fold_bn", [False, True])
def test_the_onnx_export_never_moves_the_callers_model(fold_bn: bool, tmp_path: Path) -> None:
    """N1: ``export`` worked on ``model.cpu()``, which moves the cell's shared network in place."""
    pytest.importorskip("onnxscript")
    from segbench.runtimes.onnx_export import export

    model = Recorded(*tiny_net()).eval()
    weight = model[0].weight
    path = export(model, torch.randn(1, 3, 8, 8), tmp_path, fold_bn=fold_bn)
    assert path.stat().st_size > 0
    assert model.moves == [] and model[0].weight is weight  # untouched: same objects, never moved


@pytest.mark.parametrize("variant", [Variant(), Variant(channels_last=True), Variant("bf16")], ids=lambda v: v.tag)
def test_a_graphs_static_input_is_a_tensor_of_its_own(variant: Variant) -> None:
    """N4: for fp32, ``.to`` handed the graph the cell's own input, which ``predict`` then overwrote."""
    example = torch.randn(2, 3, 4, 4)
    kept = example.clone()
    static = torch_runtime.static_input(example, torch.device("cpu"), variant)
    assert static.untyped_storage().data_ptr() != example.untyped_storage().data_ptr()
    assert torch.equal(static.float(), example.to(static.dtype).float())
    static.fill_(7.0)  # what predict does with another batch
    assert torch.equal(example, kept)


def test_a_session_that_knows_its_peak_memory_is_not_measured_by_one_call() -> None:
    """N5: a graph replay allocates nothing, so its peak comes from warm-up and capture."""

    def never() -> None:
        raise AssertionError("a replay's peak is ~0: it must not be measured")

    session = Session(call=never, predict=lambda x: x, peak_mem_mb=12.5)
    assert peak_memory(session, torch.device("cuda")) == 12.5


@pytest.mark.parametrize(("precision", "bytes_per_value"), [("fp32", 4), ("bf16", 2)])
def test_rows_say_how_much_memory_the_weights_take(precision: str, bytes_per_value: int) -> None:
    """N5: "inference memory" left out the weights (537 MB of fp32 for FCN-8s), which decide whether a model fits."""
    values = 3 * 8 * 9 + 8 + 4 * 8 + 8 * 5 + 5  # conv, BatchNorm (weight, bias, running mean and var), conv
    counter = 8  # BatchNorm's num_batches_tracked: one int64, in every precision
    row = latency_row(tiny_net(), variant=Variant(precision), warmup=0, iters=1)
    assert row["weights_mb"] * 2**20 == values * bytes_per_value + counter


@pytest.fixture
def precision_api():
    """Restore every fp32_precision switch (root first: setting a parent sets its children)."""
    owners = [torch.backends, torch.backends.cuda.matmul, torch.backends.cudnn, torch.backends.cudnn.conv]
    if not all(hasattr(o, "fp32_precision") for o in owners):
        pytest.skip("PyTorch before 2.9 has no fp32_precision API")
    saved = [o.fp32_precision for o in owners]
    yield
    for owner, value in zip(owners, saved):
        owner.fp32_precision = value


def test_tf32_is_read_and_turned_off_through_the_new_precision_api(precision_api) -> None:
    """N8 / #5: after the new API is used, the legacy flags (and ``cudnn.flags``) raise."""
    torch.backends.fp32_precision = "ieee"
    for owner in (torch.backends.cudnn, torch.backends.cudnn.conv, torch.backends.cuda.matmul):
        owner.fp32_precision = "none"  # inherit: the root decides
    assert (tf32_enabled("conv"), tf32_enabled("matmul")) == (False, False)
    torch.backends.cudnn.conv.fp32_precision = "tf32"
    assert (tf32_enabled("conv"), tf32_enabled("matmul")) == (True, False)
    assert tf32_in_use(torch.device("cuda"), "fp32") == (True, False)
    assert tf32_in_use(torch.device("cuda"), "bf16") == tf32_in_use(torch.device("cpu"), "fp32") == (None, None)
    with strict_fp32():
        assert (torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision) == ("ieee",) * 2
    assert (torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision) == ("tf32", "ieee")
    # the whole CPU path: the reference (strict_fp32) and a bf16 row, with the new API in use
    row = latency_row(tiny_net(), variant=Variant("bf16"), warmup=0, iters=2)
    assert row["error"] is None and row["output_argmax_agreement"] > 0.5


def test_strict_fp32_restores_each_switch_exactly_and_touches_nothing_else(precision_api) -> None:
    """N8: the legacy round trip left matmul at 'ieee' (not 'none') and reset cudnn benchmark/determinism."""
    torch.set_float32_matmul_precision("high")  # common in user code: matmul TF32 on
    assert tf32_enabled("matmul") is True
    before = torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    benchmark, deterministic = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    torch.backends.cudnn.benchmark = True
    try:
        with strict_fp32():
            assert (tf32_enabled("conv"), tf32_enabled("matmul")) == (False, False)
            assert torch.backends.cudnn.benchmark is True and torch.backends.cudnn.deterministic is deterministic
        assert (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision) == before
    finally:
        torch.backends.cudnn.benchmark = benchmark
        torch.set_float32_matmul_precision("highest")


def test_environment_reads_tf32_under_the_new_api(precision_api) -> None:
    """N8: ``segbench env`` crashed reading the legacy flags."""
    from segbench.rows.environment import environment

    torch.backends.cudnn.conv.fp32_precision = "tf32"
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    env = environment()
    assert (env["tf32_cudnn"], env["tf32_matmul"]) == (True, False)


def test_compile_modes_name_their_rows_and_graphing_modes_are_refused_with_cuda_graphs() -> None:
    """N12: one compile mode only; Inductor's own cudagraphs must never meet segbench's."""
    from segbench.errors import UserError

    variants = expand_variants(("fp32",), compile_mode="max-autotune-no-cudagraphs", compile=True)
    assert [v.tag for v in variants] == ["fp32", "fp32+compile-max-autotune-no-cudagraphs"]
    assert [v.fields()["compile_mode"] for v in variants] == [None, "max-autotune-no-cudagraphs"]
    assert Variant.of_row(variants[1].fields()) == variants[1]
    assert torch_runtime.compile_options("max-autotune-no-cudagraphs")["freezing"] is True
    assert torch_runtime.compile_options("default") == {"freezing": True}
    graphs = expand_variants(("fp32",), compile_mode="reduce-overhead", compile=True, cuda_graph=True)
    with pytest.raises(UserError, match="reduce-overhead"):
        LatencyConfig(device="cpu", variants=graphs)


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        ("latency", ["--compile", "--compile-mode", "reduce-overhead", "--cuda-graph"], "not with --cuda-graph"),
        ("run", ["--compile", "--compile-mode", "max-autotune", "--cuda-graph"], "not with --cuda-graph"),
        ("latency", ["--compile", "--compile-mode", "fastest"], "unknown compile mode 'fastest'"),
        ("latency", ["--compile-mode", "max-autotune-no-cudagraphs"], "needs --compile"),
    ],
)
def test_the_cli_refuses_a_compile_mode_that_cannot_run_in_one_line(command, args, message, tmp_path) -> None:
    """N12: --compile-mode; Inductor's cudagraph modes refused with --cuda-graph, before anything runs."""
    from typer.testing import CliRunner

    from segbench.cli import app

    result = CliRunner().invoke(app, [command, "-m", "fast_scnn", *args, "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("segbench: error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and not list(tmp_path.iterdir())


@pytest.mark.slow
def test_a_frozen_compile_folds_batchnorm_and_agrees_with_eager() -> None:
    """N12: inference freezing with --compile (BatchNorm folded into the convolutions by Inductor)."""
    row = latency_row(tiny_net(), variant=Variant(compile=True), warmup=0, iters=2)
    assert row["error"] is None and row["compile_mode"] == "default"
    assert row["output_max_abs_diff"] < 1e-4 and row["output_argmax_agreement"] == 1.0
    assert row["compile_seconds"] > 0


def test_onnxruntime_runs_on_the_requested_gpu_with_the_tf32_it_records() -> None:
    """N3: no device_id (always GPU 0) and TF32 on by default but recorded as None."""
    from segbench.runtimes.onnxruntime_runtime import provider_of

    assert provider_of(torch.device("cuda:1"), True) == ("CUDAExecutionProvider", {"device_id": 1, "use_tf32": 1})
    assert provider_of(torch.device("cuda:0"), False) == ("CUDAExecutionProvider", {"device_id": 0, "use_tf32": 0})
    assert provider_of(torch.device("cpu"), True) == "CPUExecutionProvider"


class FakeNVML:
    """A stand-in for pynvml: one GPU whose readings the test sets; fields it lacks raise NVMLError."""

    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0

    class NVMLError(Exception):
        pass

    def __init__(self, **readings) -> None:
        self.readings = {"power_mw": 70_000, "sm": 1980, "mem": 2619, "temp": 31, "reasons": 0x1, "pids": []}
        self.readings.update(readings)
        self.energy_mj = 0

    def _get(self, name: str):
        value = self.readings.get(name)
        if value is None:
            raise self.NVMLError(f"{name}: not supported")
        return value

    def nvmlDeviceGetPowerUsage(self, handle):
        return self._get("power_mw")

    def nvmlDeviceGetClockInfo(self, handle, clock):
        return self._get("sm" if clock == self.NVML_CLOCK_SM else "mem")

    def nvmlDeviceGetTemperature(self, handle, sensor):
        return self._get("temp")

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle):
        return self._get("reasons")

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return [SimpleNamespace(pid=p) for p in self._get("pids")]

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if self.readings.get("energy") is False:
            raise self.NVMLError("no energy counter before Volta")
        return self.energy_mj


def test_gpu_rows_record_clocks_throttling_other_processes_and_flag_them() -> None:
    """N9 / item 4: nothing recorded the conditions a GPU number depends on."""
    import os

    nvml = FakeNVML()
    gpu = GpuMonitor(nvml, handle="gpu0")
    assert gpu.idle_w == 70.0
    before = gpu.state()
    assert (before.sm_mhz, before.mem_mhz, before.power_w, before.temp_c) == (1980, 2619, 70.0, 31)
    assert (before.reasons, before.other_processes) == (("gpu_idle",), 0)
    nvml.readings.update(power_mw=650_000, temp=None, reasons=0x4 | 0x40, pids=[os.getpid(), 4242])
    after = gpu.state()
    assert (after.power_w, after.temp_c, after.other_processes) == (650.0, None, 1)  # this process is not "other"
    fields = gpu_fields(before, after, 0.5)
    assert fields["gpu_throttle_reasons"] == "gpu_idle,sw_power_cap,hw_thermal_slowdown"
    assert (fields["gpu_throttled"], fields["gpu_shared"], fields["gpu_other_processes"]) == (True, True, 1)
    assert (fields["gpu_power_w_before"], fields["gpu_power_w_after"], fields["gpu_temp_c_after"]) == (
        70.0,
        650.0,
        None,
    )
    calm = gpu_fields(before, before, None)
    assert (calm["gpu_throttled"], calm["gpu_shared"], calm["energy_j_per_image"]) == (False, False, None)
    assert gpu_fields(None, None, None) == {}  # no NVML: the fields stay None in the row


def test_energy_per_image_subtracts_the_idle_power() -> None:
    """Item 4: energy per image from the total-energy counter, idle subtracted."""
    import time

    nvml = FakeNVML(power_mw=50_000)
    gpu = GpuMonitor(nvml, handle="gpu0")
    calls: list[float] = []

    def call() -> None:  # each call: 0.1 s at 250 W (i.e. 25 J, 5 J of it idle)
        time.sleep(0.1)
        calls.append(time.perf_counter())
        nvml.energy_mj += 25_000

    energy = gpu.energy_j_per_image(call, torch.device("cpu"), batch_size=4)
    seconds_per_call = 0.1  # the loop's own overhead counts as idle time too: a bound, not equality
    assert len(calls) >= 5
    assert (25 - 50 * seconds_per_call * 1.5) / 4 < energy <= (25 - 50 * seconds_per_call) / 4
    nvml.readings["energy"] = False
    assert gpu.energy_j_per_image(call, torch.device("cpu"), batch_size=4) is None


def test_a_paired_oom_is_retried_after_the_failed_calls_tensors_are_freed() -> None:
    """#3/N6: the alone retry ran inside the ``except``, whose traceback kept the failed call's tensors."""
    state: dict[str, Any] = {"calls": 0, "failed": None, "alive_at_retry": None}

    class OOMOnce(nn.Module):
        def __init__(self, num_classes: int) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, num_classes, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.dtype == torch.bfloat16:  # the variant; its model is a copy, so the state is shared here
                state["calls"] += 1
                if state["calls"] == 2:  # the first paired call after the priming one
                    activations = torch.ones(1024)  # what the failed call had allocated
                    state["failed"] = weakref.ref(activations)
                    raise torch.cuda.OutOfMemoryError("CUDA out of memory (pretend: paired)")
                if state["failed"] is not None and state["alive_at_retry"] is None:
                    state["alive_at_retry"] = state["failed"]() is not None
            return self.conv(x)

    spec = spec_of("oom_once", OOMOnce, (8, 8))
    config = LatencyConfig(variants=[Variant(), Variant("bf16")], timing=Timing(warmup=0, iters=2))
    rows = list(latency([spec], config))
    assert [r["error"] for r in rows] == [None, None]
    assert rows[1]["latency_speedup"] is None  # the retry was timed alone
    assert state["alive_at_retry"] is False  # the failed call's tensors were gone when the retry ran


def test_a_lost_device_ends_the_sweep_with_rows_not_a_traceback(monkeypatch) -> None:
    """N6: a sticky CUDA error made the memory release raise, and the sweep ended with a traceback."""
    import segbench.measure.faults as faults
    from segbench.runners.cells import Cell, measure_cells

    def sticky(device) -> None:
        if str(device).startswith("cuda"):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(faults, "release_memory", sticky)  # a dependency: what a dead context does
    measured: list[int] = []

    def measure(index: int, keys: list) -> list:
        measured.append(index)
        if index == 1:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return [{}] * len(keys)

    cells = [Cell([{"model": f"m{i}"}], partial(measure, i), device="cuda") for i in range(4)]
    rows = list(measure_cells(cells))
    assert measured == [0, 1]  # nothing ran on the dead context after the failure
    assert [r["error"] is None for r in rows] == [True, False, False, False]
    assert rows[1]["error"].startswith("RuntimeError: CUDA error: an illegal memory access")
    assert "context was lost" in rows[1]["error"] and "CUDA_LAUNCH_BLOCKING=1" in rows[1]["error"]
    assert all(r["error"].startswith("not measured: the cuda context was lost") for r in rows[2:])


def test_cuda_warms_up_by_time_as_well_as_by_count() -> None:
    """N9: 10 warm-up calls are 15-60 ms of Fast-SCNN, shorter than an idle GPU's clock ramp."""
    import time

    from segbench.measure.timer import Protocol, time_sessions
    from segbench.runners.defaults import timing

    assert timing("cuda").warmup_s == 1.0 and timing("cpu").warmup_s == 0.0
    assert timing("cuda", warmup=3).warmup_s == 0.0  # --warmup N: exactly N calls, as asked
    calls: list[float] = []
    session = Session(call=lambda: (time.sleep(0.05), calls.append(1)), predict=lambda x: x)
    time_sessions([session], torch.device("cpu"), Protocol(warmup=1, iters=1, warmup_s=0.3))
    assert len(calls) >= 0.3 / 0.05 + 1  # the warm-up lasted 0.3 s at least, then one timed call


def test_cuda_training_forces_no_determinism_that_only_slows_it() -> None:
    """N7: deterministic cuDNN without autotuning made CUDA training slower, and the row said false anyway."""
    from segbench.measure.training import CUDA_NONDETERMINISTIC, _deterministic

    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    try:
        with _deterministic(torch.device("cuda")) as alerts:
            assert not torch.are_deterministic_algorithms_enabled()
            assert torch.backends.cudnn.benchmark is True and torch.backends.cudnn.deterministic is False
        assert alerts == [CUDA_NONDETERMINISTIC]  # the row says deterministic = false, with the reason
        assert torch.backends.cudnn.benchmark is False  # restored
        with _deterministic(torch.device("cpu")):
            assert torch.are_deterministic_algorithms_enabled()  # the CPU guarantee stays
    finally:
        torch.backends.cudnn.benchmark = benchmark


# ---- on a GPU ----------------------------------------------------------------------------------


def cuda(test):
    """Mark ``test`` as a CUDA test (skipped without a GPU)."""
    for mark in CUDA:
        test = mark(test)
    return test


@cuda
def test_latency_is_the_device_time_from_events_not_the_launch_time() -> None:
    row = latency_row(Matmul(), size=(4096, 4096), batch=1, channels=1, device="cuda", warmup=3, iters=10)
    # the host returns right after launching; only CUDA events see the GPU's milliseconds
    assert row["latency_ms_median"] > 5 * row["host_ms_median"]
    assert row["tf32"] is tf32_enabled("conv") and row["tf32_matmul"] is tf32_enabled("matmul")
    assert row["peak_mem_mb"] > 0


@cuda
def test_an_out_of_memory_cell_on_the_gpu_is_a_row_error_and_its_memory_is_released() -> None:
    free, _ = torch.cuda.mem_get_info()
    held: list[weakref.ref] = []

    class Greedy(nn.Module):
        def __init__(self, num_classes: int) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, num_classes, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[-1] == 64:
                block = torch.empty(free // 2, dtype=torch.uint8, device=x.device)  # really allocated
                held.append(weakref.ref(block))
                torch.empty(2 * free, dtype=torch.uint8, device=x.device)  # then more than the GPU has
            return self.conv(x)

    spec = spec_of("greedy", Greedy, (16, 16))
    before = torch.cuda.memory_reserved()
    rows = list(
        latency([spec], LatencyConfig(device="cuda", sizes=[(64, 64), (32, 32)], timing=Timing(warmup=1, iters=2)))
    )
    assert [r["error"] for r in rows] == [OOM, None]
    assert held and held[0]() is None  # the failed call's half of the GPU is gone...
    assert torch.cuda.memory_reserved() - before < free // 4  # ...and given back to the driver


@cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_a_cuda_graph_replays_real_work_on_its_own_static_input(precision: str, tmp_path: Path) -> None:
    model = tiny_net().cuda()
    first, second = (
        torch.randn(2, 3, 16, 16, device="cuda", generator=torch.Generator("cuda").manual_seed(s)) for s in (1, 2)
    )
    kept = first.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "The CUDA Graph is empty" would fail here
        with torch.inference_mode():
            session = torch_runtime.prepare(
                model,
                first,
                device=torch.device("cuda"),
                variant=Variant(precision, cuda_graph=True),
                threads=1,
                workdir=tmp_path,
            )
            out_first = session.predict(first).clone()
            out_second = session.predict(second).clone()
            eager_second = model.to(torch_runtime.DTYPES[precision])(second.to(torch_runtime.DTYPES[precision]))
    assert torch.equal(first, kept)  # N4: predict(second) did not overwrite the caller's input
    assert not torch.equal(out_first, out_second)  # the replay computed the new input
    torch.testing.assert_close(out_second.float(), eager_second.float(), atol=2e-2, rtol=2e-2)
    assert session.peak_mem_mb is not None and session.peak_mem_mb > 0  # N5: warm-up and capture


@cuda
def test_a_model_that_breaks_capture_reports_its_own_error_and_leaves_the_stream(tmp_path: Path) -> None:
    x = torch.randn(1, 3, 8, 8, device="cuda")
    with pytest.raises(VariantUnavailable, match="cannot capture a CUDA graph") as info, torch.inference_mode():
        torch_runtime.prepare(
            Syncs(), x, device=torch.device("cuda"), variant=Variant(cuda_graph=True), threads=1, workdir=tmp_path
        )
    # CUDA's own words for the sync, not for the follow-on error at the end of the capture
    assert "not permitted when stream is capturing" in str(info.value)
    assert "previous error during capture" not in str(info.value)
    assert torch.cuda.current_stream() == torch.cuda.default_stream()  # N11
    # the process is sane: the next capture works
    row = latency_row(
        tiny_net(), size=(8, 8), batch=1, variant=Variant(cuda_graph=True), device="cuda", warmup=1, iters=3
    )
    assert row["error"] is None and row["latency_ms_median"] > 0


@cuda
def test_the_reference_is_true_fp32_and_rows_say_whether_tf32_was_used() -> None:
    """#5: a 3->8 channel conv differs by ~0 either way; 256 channels x 3x3 differ by ~1e-3 in TF32."""
    torch.manual_seed(0)
    conv = nn.Conv2d(256, 256, 3, padding=1).cuda().eval()
    x = torch.randn(1, 256, 32, 32, device="cuda")
    exact = copy.deepcopy(conv).double().cpu()(x.double().cpu())
    saved = torch.backends.cudnn.conv.fp32_precision if hasattr(torch.backends.cudnn, "conv") else None
    try:
        with torch.inference_mode():
            with strict_fp32():
                strict = (conv(x).double().cpu() - exact).abs().max().item()
            if saved is None:
                torch.backends.cudnn.allow_tf32 = True
            else:
                torch.backends.cudnn.conv.fp32_precision = "tf32"
            loose = (conv(x).double().cpu() - exact).abs().max().item()
        assert strict < 1e-4 < loose  # the reference is IEEE fp32; TF32 is really what the rows got
        for allowed in (True, False):
            if saved is None:
                torch.backends.cudnn.allow_tf32 = allowed
            else:
                torch.backends.cudnn.conv.fp32_precision = "tf32" if allowed else "ieee"
            row = latency_row(
                tiny_net(), size=(64, 64), batch=1, variant=Variant(channels_last=True), device="cuda", iters=3
            )
            assert row["error"] is None and row["tf32"] is allowed
    finally:
        if saved is not None:
            torch.backends.cudnn.conv.fp32_precision = saved


@cuda
@pytest.mark.optional_on_gpu
def test_onnxruntime_rows_on_cuda_leave_the_torch_rows_working() -> None:
    """N1/N3: the export moved the shared network to the CPU and every CUDA row after it failed."""
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu not installed")  # allowed on a GPU machine: optional_on_gpu
    rows = [
        latency_row(tiny_net(), size=(32, 32), batch=1, device="cuda", runtimes=runtimes, iters=3)
        for runtimes in (("onnxruntime", "torch"), ("torch", "onnxruntime"))
    ]
    assert [r["error"] for r in rows] == [None, None]
    assert all(r["output_argmax_agreement"] > 0.99 for r in rows if r["runtime"] == "onnxruntime")


@cuda
def test_an_oom_retry_runs_after_the_failed_call_is_released() -> None:
    """#3/N6 on a GPU: the alone retry of a paired OOM fits once the failed call's activations are freed."""
    free, _ = torch.cuda.mem_get_info()
    calls = {"n": 0}

    class PairedOOM(nn.Module):
        def __init__(self, num_classes: int) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, num_classes, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.dtype == torch.float16:
                calls["n"] += 1
                if calls["n"] == 3:  # the first timed call: hold 60 % of free memory, then fail
                    block = torch.empty(int(free * 0.6), dtype=torch.uint8, device=x.device)
                    raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (pretend, holding {block.numel()})")
                if calls["n"] > 3:  # the retry: needs 60 % again, possible only if the first block is gone
                    torch.empty(int(free * 0.6), dtype=torch.uint8, device=x.device)
            return self.conv(x)

    spec = spec_of("paired", PairedOOM, (16, 16))
    rows = list(
        latency(
            [spec],
            LatencyConfig(device="cuda", variants=[Variant(), Variant("fp16")], timing=Timing(warmup=1, iters=2)),
        )
    )
    assert [r["error"] for r in rows] == [None, None]
    assert rows[1]["latency_speedup"] is None  # timed alone


@cuda
@pytest.mark.optional_on_gpu  # a one-GPU machine skips it: the acceptance script allows that
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_settings_restore_the_current_device_and_graphs_capture_on_the_second_gpu(tmp_path: Path) -> None:
    torch.cuda.set_device(0)
    with measurement_settings(torch.device("cuda:1"), None):
        assert torch.cuda.current_device() == 1
    assert torch.cuda.current_device() == 0
    row = latency_row(tiny_net(), batch=1, variant=Variant(cuda_graph=True), device="cuda:0", warmup=1, iters=2)
    assert row["error"] is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        row = latency_row(tiny_net(), batch=1, variant=Variant(cuda_graph=True), device="cuda:1", warmup=1, iters=3)
    assert row["error"] is None and row["output_argmax_agreement"] == 1.0 and row["latency_ms_median"] > 0.001


# ---- the acceptance script (benchmarks/gpu_acceptance.sh, benchmarks/gpu_checks.py) -------------

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU exit on a machine without CUDA")
def test_the_acceptance_script_stops_at_once_with_one_line_without_a_gpu(tmp_path: Path) -> None:
    import subprocess

    out = tmp_path / "gpu-check"
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_acceptance.sh"), str(out)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "gpu_acceptance: no CUDA device visible to torch here (see docs/gpu.md); nothing was run"
    ]
    assert not out.exists()  # nothing measured, nothing written


def test_the_acceptance_skip_rule_is_the_marker_not_the_message(tmp_path: Path) -> None:
    """N2: the old rule failed on any skip message containing "CUDA" (one test skips on GPUs by design)."""
    import subprocess

    (tmp_path / "test_marked.py").write_text(
        "import pytest\n"
        "@pytest.mark.cuda\n@pytest.mark.optional_on_gpu\n"
        "def test_optional():\n    pytest.skip('needs two CUDA devices')\n"
        "@pytest.mark.skipif(True, reason='checks the message on a machine without CUDA')\n"
        "def test_unmarked():\n    pass\n"
        "@pytest.mark.cuda\ndef test_runs():\n    assert True\n"
    )
    (tmp_path / "test_required.py").write_text(
        "import pytest\n@pytest.mark.cuda\ndef test_required():\n    pytest.skip('no reason containing the word')\n"
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    cuda: x\n    optional_on_gpu: x\n")

    def check(*files: str) -> subprocess.CompletedProcess:
        script = str(ROOT / "benchmarks" / "gpu_checks.py")
        return subprocess.run(
            [sys.executable, script, "tests", str(tmp_path), *files],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
        )

    allowed = check("test_marked.py")
    assert allowed.returncode == 0, allowed.stdout
    refused = check("test_marked.py", "test_required.py")
    assert refused.returncode == 1
    assert "cuda tests that skipped on a GPU machine: test_required.py::test_required" in refused.stdout
