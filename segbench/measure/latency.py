"""Latency, throughput and memory of a prepared session (any runtime) on one input.

Timing method (the README states it), the same for every runtime:

- ``torch.inference_mode()``; the runtime's session is prepared first (export, compile, the first
  call: ``compile_seconds``), never inside the timed loop. Then ``warmup`` untimed calls, then
  ``iters`` timed calls.
- CUDA: ``torch.backends.cudnn.benchmark = True`` while measuring (restored afterwards). Each timed
  call of a PyTorch session is bracketed by two CUDA events on the current stream and synchronised
  before the next call; the latency is the event time. ``host_ms`` is the wall time the host spends
  in the call (launching kernels, without the wait for the GPU): when it is close to the event time
  the GPU is waiting for the CPU, i.e. the model is launch-bound (CUDA graphs or a bigger batch help).
  A runtime whose call blocks until its result is on the host (ONNX Runtime) is timed by the host clock.
- CPU: ``threads`` (default: torch's own count) is set for torch (``torch.set_num_threads``, restored
  afterwards) and handed to the runtime as its intra-op thread count; the row records it. Each call
  is timed with ``time.perf_counter``; latency and host time are the same clock.
- Reported: median, mean, p90 (linear interpolation), min and sample std of the per-call times in ms;
  throughput = batch size / median seconds.
- Correctness: every variant other than PyTorch fp32 eager is compared with PyTorch fp32 eager on the
  same input: ``output_max_abs_diff`` (max |logit difference|) and ``output_argmax_agreement``
  (fraction of pixels whose argmax over channels agrees). An output with inf or NaN gives
  ``output_max_abs_diff = inf`` and a row ``error`` (the latency is kept: it is the time of a wrong result).
- Memory: see ``segbench.measure.memory`` (CUDA allocator peak; CPU allocator peak of one profiled
  pass); only for sessions that run through PyTorch's allocator, None for other runtimes.
- ``trace_dir``: after timing, a few more calls of a PyTorch session run under ``torch.profiler`` and
  are written as a Chrome trace; profiling never overlaps the timed loop.
"""

from __future__ import annotations

import contextlib
import random
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segbench.checks import check_precisions, check_timing
from segbench.measure.allocator import keep_freed_memory
from segbench.measure.memory import cpu_peak_mb, cuda_peak_mb, cuda_reset_peak
from segbench.measure.stats import median_ci, ratios, relative_half_width
from segbench.measure.session import Session, Variant

TRACE_ITERS = 3
NON_FINITE = "the output holds inf or NaN (an fp16 overflow?); output_max_abs_diff is inf"


@dataclass(frozen=True)
class Protocol:
    """How many calls are timed: ``iters`` exactly, or (``iters`` None) adaptively: at least
    ``min_samples`` calls over at least ``min_seconds`` (a short burst of load then cannot be the
    whole sample), then until the 95 % interval of every median (and of every paired ratio) is
    within +-``target`` of it, or ``budget_s`` seconds of timed calls are spent."""

    warmup: int
    iters: int | None = None
    min_samples: int = 6
    min_seconds: float = 1.0
    budget_s: float = 10.0
    target: float = 0.02


@dataclass
class Timing:
    """Per session, the device and host milliseconds of each timed call, and whether the target was met."""

    device_ms: list[list[float]]
    host_ms: list[list[float]]
    target_met: bool


def time_sessions(sessions: Sequence[Session], device: torch.device, protocol: Protocol) -> Timing:
    """Time the sessions alternately, call by call, in a shuffled order each round.

    Interleaving is what makes ratios trustworthy on a shared machine: a burst of load, or the
    clock drifting, hits every session of a round alike, and each per-round ratio cancels it.
    """
    for _ in range(protocol.warmup):
        for session in sessions:
            session.call()
    order = random.Random(0)
    device_ms: list[list[float]] = [[] for _ in sessions]
    host_ms: list[list[float]] = [[] for _ in sessions]
    start = time.perf_counter()
    while True:
        for i in order.sample(range(len(sessions)), len(sessions)):
            timed, host = _time_call(sessions[i], device)
            device_ms[i].append(timed)
            host_ms[i].append(host)
        done = len(device_ms[0])
        met = done >= 2 and _within_target(device_ms, protocol.target)
        if protocol.iters is not None:
            if done >= protocol.iters:
                return Timing(device_ms, host_ms, met)
        else:
            spent = time.perf_counter() - start
            if done >= protocol.min_samples and ((met and spent >= protocol.min_seconds) or spent >= protocol.budget_s):
                return Timing(device_ms, host_ms, met)


def _within_target(samples: list[list[float]], target: float) -> bool:
    widths = [relative_half_width(s) for s in samples]
    widths += [relative_half_width(ratios(samples[0], s)) for s in samples[1:]]
    return max(widths) <= target


def _time_call(session: Session, device: torch.device) -> tuple[float, float]:
    """(device ms, host ms) of one call: CUDA events around a PyTorch call on a GPU, else the host clock."""
    if device.type == "cuda" and not session.blocking:
        start_event, end_event = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        begin = time.perf_counter()
        start_event.record()
        session.call()
        end_event.record()
        host = (time.perf_counter() - begin) * 1e3
        end_event.synchronize()
        return start_event.elapsed_time(end_event), host
    begin = time.perf_counter()
    session.call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = (time.perf_counter() - begin) * 1e3
    return elapsed, elapsed


def latency_fields(device_ms: list[float], host_ms: list[float], batch_size: int, target: float) -> dict[str, Any]:
    """The row's latency statistics: `summarize`, the median's 95 % interval, the samples themselves."""
    low, high = median_ci(device_ms)
    return {
        **summarize(device_ms, batch_size),
        "host_ms_median": statistics.median(host_ms),
        "latency_ms_ci_low": low,
        "latency_ms_ci_high": high,
        "latency_samples_ms": list(device_ms),
        "ci_target_met": relative_half_width(device_ms) <= target,
    }


def speedup_fields(baseline_ms: list[float], device_ms: list[float]) -> dict[str, Any]:
    """How many times faster than the baseline: median of the paired ratios and its 95 % interval."""
    paired = ratios(baseline_ms, device_ms)
    low, high = median_ci(paired)
    return {
        "latency_speedup": statistics.median(paired),
        "latency_speedup_ci_low": low,
        "latency_speedup_ci_high": high,
    }


def measure_session(
    session: Session,
    example: torch.Tensor,
    reference: torch.Tensor | None,
    *,
    device: torch.device,
    protocol: Protocol,
    baseline: Session | None = None,
    trace: Path | None = None,
) -> dict[str, Any]:
    """Time ``session`` (alternately with ``baseline`` when given), measure its memory, compare its output.

    :param example: the input the session was prepared for (its first dimension is the batch).
    :param reference: PyTorch fp32 eager logits for ``example`` (None: this session is the reference).
    :param baseline: the session ``latency_speedup`` is relative to (PyTorch fp32 eager), timed call by
        call alternately with this one.
    :param trace: write a Chrome trace of a few more calls to this file (PyTorch sessions only).
    """
    sessions = [session] if baseline is None else [baseline, session]
    timing = time_sessions(sessions, device, protocol)
    fields: dict[str, Any] = {
        **latency_fields(timing.device_ms[-1], timing.host_ms[-1], example.shape[0], protocol.target),
        "ci_target_met": timing.target_met,
        "peak_mem_mb": peak_memory(session, device),
        "compile_seconds": session.prepare_seconds,
        "threads": session.threads,
        "tf32": tf32_in_use(device) if session.in_torch else None,
        "output_max_abs_diff": None,
        "output_argmax_agreement": None,
        "trace_file": None,
    }
    if baseline is not None:
        fields.update(speedup_fields(timing.device_ms[0], timing.device_ms[1]))
    output = main_output(session.predict(example)).float().cpu()
    if reference is not None:
        fields.update(compare_outputs(output, reference))
    if not bool(torch.isfinite(output).all()):  # e.g. fp16 overflow: the timing is of a wrong result
        fields["error"] = NON_FINITE
    if trace is not None and session.in_torch:
        fields["trace_file"] = str(write_trace(session.call, device, trace))
    return fields


def peak_memory(session: Session, device: torch.device) -> float | None:
    """Peak tensor memory (MiB) of one call beyond what was allocated before it; None outside torch."""
    if not session.in_torch:
        return None
    if device.type == "cuda":
        baseline = cuda_reset_peak(device)
        session.call()
        return cuda_peak_mb(device, baseline)
    return cpu_peak_mb(session.call)


def measure_latency(
    model: nn.Module,
    example: torch.Tensor,
    *,
    device: str | torch.device,
    precision: str = "fp32",
    channels_last: bool = False,
    compile: bool = False,
    cuda_graph: bool = False,
    fold_bn: bool = False,
    warmup: int = 10,
    iters: int = 50,
    threads: int | None = None,
    trace_dir: str | Path | None = None,
    trace_name: str | None = None,
) -> dict[str, Any]:
    """Time ``model(example)`` in PyTorch, in one variant; returns result-row fields.

    ``model`` is put in eval mode and moved to ``device`` (in place); variants work on a copy, so the
    caller's model stays fp32 and contiguous. ``example`` is the fp32 input batch. Raises
    ``VariantUnavailable`` for a variant the device cannot run, and lets other failures (CUDA out of
    memory, an unsupported dtype) propagate: `segbench.measure.faults.error_reason` turns any of them
    into a one-line row error.
    """
    from segbench.runtimes import torch_runtime

    dev = torch.device(device)
    check_precisions([precision])
    check_timing(warmup, iters, threads)
    variant = Variant(precision, channels_last, compile, cuda_graph, fold_bn)
    with measurement_settings(dev, threads) as used_threads, torch.inference_mode():
        model = model.eval().to(dev)
        example = example.to(dev)
        with strict_fp32():
            reference = None if variant == Variant() else main_output(model(example)).float().cpu()
        with tempfile.TemporaryDirectory() as workdir:
            session = torch_runtime.prepare(
                model, example, device=dev, variant=variant, threads=used_threads, workdir=Path(workdir)
            )
            trace = None
            if trace_dir is not None:
                name = trace_name or default_trace_name(model, example, variant.tag)
                trace = Path(trace_dir) / f"{name}.json"
            fields = measure_session(
                session, example, reference, device=dev, protocol=Protocol(warmup, iters), trace=trace
            )
    return {**fields, **variant.fields()}


def summarize(times_ms: list[float], batch_size: int) -> dict[str, Any]:
    """Median, mean, p90, min, std (sample) of per-call times, and images per second at the median."""
    median = statistics.median(times_ms)
    p90 = statistics.quantiles(times_ms, n=10, method="inclusive")[8] if len(times_ms) > 1 else times_ms[0]
    return {
        "latency_ms_median": median,
        "latency_ms_mean": statistics.fmean(times_ms),
        "latency_ms_p90": p90,
        "latency_ms_min": min(times_ms),
        "latency_ms_std": statistics.stdev(times_ms) if len(times_ms) > 1 else 0.0,
        "iters": len(times_ms),
        "throughput_ips": batch_size * 1e3 / median,
    }


def compare_outputs(output: torch.Tensor, reference: Any) -> dict[str, float]:
    """Max |difference| and argmax (over dim 1) agreement of a variant's output with fp32 eager."""
    ref = main_output(reference).float()
    out = output.float().contiguous()
    diff = (out - ref).abs()
    max_diff = float("inf") if not torch.isfinite(diff).all() else diff.max().item()
    agreement = (out.argmax(1) == ref.argmax(1)).float().mean().item() if out.dim() > 1 else None
    return {"output_max_abs_diff": max_diff, "output_argmax_agreement": agreement}


def main_output(output: Any) -> torch.Tensor:
    """The logits of a forward pass: the tensor itself, the first of a tuple or list, or ``out`` of a dict."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        return main_output(output.get("out", next(iter(output.values()))))
    if isinstance(output, (list, tuple)) and output:
        return main_output(output[0])
    raise TypeError(f"cannot compare a model output of type {type(output).__name__}")


def write_trace(call: Callable[[], Any], dev: torch.device, path: Path) -> Path:
    """Profile ``TRACE_ITERS`` calls with torch.profiler and write ``path`` (Chrome trace)."""
    from torch.profiler import ProfilerActivity

    from segbench.measure.profiling import quiet_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    path.parent.mkdir(parents=True, exist_ok=True)
    with quiet_profile(activities=activities, record_shapes=True) as prof:
        for _ in range(TRACE_ITERS):
            call()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
    prof.export_chrome_trace(str(path))
    return path


def default_trace_name(model: nn.Module, example: torch.Tensor, tag: str) -> str:
    """``<class>-<b>x<c>x<h>x<w>-<variant tag>``, safe as a file name."""
    shape = "x".join(map(str, example.shape))
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", f"{type(model).__name__.lower()}-{shape}-{tag}")


@contextlib.contextmanager
def measurement_settings(dev: torch.device, threads: int | None) -> Iterator[int]:
    """Set the thread count (and on CUDA the current device and cudnn.benchmark) for one
    measurement; restore all three after. On CPU freed memory is kept in the process from now on
    (`segbench.measure.allocator`)."""
    previous_threads = torch.get_num_threads()
    previous_benchmark = torch.backends.cudnn.benchmark
    previous_device = torch.cuda.current_device() if dev.type == "cuda" else None
    if threads is not None:
        torch.set_num_threads(threads)
    if dev.type == "cuda":
        if dev.index is not None:
            torch.cuda.set_device(dev)
        torch.backends.cudnn.benchmark = True
    else:
        keep_freed_memory()
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous_threads)
        torch.backends.cudnn.benchmark = previous_benchmark
        if previous_device is not None:
            torch.cuda.set_device(previous_device)


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """TF32 off for cuDNN convolutions and CUDA matmuls: the fp32 reference every row is compared
    with is true fp32, whatever the timed rows use (their ``tf32`` field says)."""
    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


def tf32_in_use(device: torch.device) -> bool | None:
    """Whether fp32 convolutions on ``device`` run in TF32 (PyTorch's default on Ampere and later)."""
    return bool(torch.backends.cudnn.allow_tf32) if device.type == "cuda" else None
