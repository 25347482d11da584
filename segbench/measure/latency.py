"""Latency, throughput and memory of one model on one input, in one deployment variant.

Timing method (the README states it):

- ``model.eval()`` and ``torch.inference_mode()`` throughout.
- One priming call first: with ``compile=True`` it triggers the torch.compile compilation, and its
  wall time is reported as ``compile_seconds``; on CUDA it also runs the cudnn.benchmark autotuning.
  Then ``warmup`` untimed calls, then ``iters`` timed calls. Compilation never falls in the timed loop.
- CUDA: ``torch.backends.cudnn.benchmark = True`` while measuring (restored afterwards). Each timed
  call is bracketed by two CUDA events on the current stream and synchronised before the next call;
  the latency is the event time. ``host_ms`` is the wall time the host spends in the call (launching
  kernels, without the wait for the GPU): when it is close to the event time the GPU is waiting for
  the CPU, i.e. the model is launch-bound (CUDA graphs or a bigger batch help).
- CPU: ``torch.set_num_threads(threads)`` when given (the previous value is restored afterwards); the
  thread count in effect is recorded. Each call is timed with ``time.perf_counter``; latency and
  host time are the same clock.
- Reported: median, mean, p90 (linear interpolation), min and sample std of the per-call times in ms;
  throughput = batch size / median seconds.
- Precision: fp16 / bf16 cast the model and the input (``model.half()`` / ``.bfloat16()``) rather than
  using autocast: for inference, a model cast once runs every layer in the low precision without the
  per-op casts autocast inserts, which is the faster honest deployment. channels_last converts the
  model and the input with ``memory_format=torch.channels_last``.
- CUDA graphs: after the warm-up (run on a side stream) one forward pass is captured with
  ``torch.cuda.graph`` and the timed loop replays it on the same static input.
- Correctness: every variant other than fp32 eager is compared with fp32 eager on the same input:
  ``output_max_abs_diff`` (max |logit difference|) and ``output_argmax_agreement`` (fraction of pixels
  whose argmax over channels agrees). An output with inf or NaN gives ``output_max_abs_diff = inf``
  and a row ``error`` (the latency is kept: it is the time of a wrong result).
- Memory: see ``segbench.measure.memory`` (CUDA allocator peak; CPU allocator peak of one profiled pass).
- ``trace_dir``: after timing, a few more calls run under ``torch.profiler`` and are written as a
  Chrome trace; profiling never overlaps the timed loop.
"""

from __future__ import annotations

import contextlib
import copy
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from segbench.checks import check_precisions, check_timing
from segbench.errors import UserError
from segbench.measure.faults import VariantUnavailable
from segbench.measure.memory import cpu_peak_mb, cuda_peak_mb, cuda_reset_peak

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
TRACE_ITERS = 3
CUDA_GRAPH_WARMUP = 2  # side-stream calls before capture, at least (PyTorch's CUDA graph recipe)
CUDA_GRAPH_ON_CPU = "cuda graphs need --device cuda"
NON_FINITE = "the output holds inf or NaN (an fp16 overflow?); output_max_abs_diff is inf"


@dataclass(frozen=True)
class Variant:
    """One deployment variant of a model: precision and the speed switches."""

    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    cuda_graph: bool = False

    @property
    def tag(self) -> str:
        """``fp16+cl+compile+graph``-style short name."""
        flags = [n for n, on in (("cl", self.channels_last), ("compile", self.compile), ("graph", self.cuda_graph)) if on]
        return "+".join([self.precision, *flags])

    def fields(self) -> dict[str, Any]:
        """The row fields that name this variant."""
        return {
            "precision": self.precision,
            "channels_last": self.channels_last,
            "compiled": self.compile,
            "cuda_graph": self.cuda_graph,
        }


def measure_latency(
    model: nn.Module,
    example: torch.Tensor,
    *,
    device: str | torch.device,
    precision: str = "fp32",
    channels_last: bool = False,
    compile: bool = False,
    cuda_graph: bool = False,
    warmup: int = 10,
    iters: int = 50,
    threads: int | None = None,
    trace_dir: str | Path | None = None,
    trace_name: str | None = None,
) -> dict[str, Any]:
    """Time ``model(example)`` on ``device`` in one variant; returns result-row fields.

    ``model`` is put in eval mode and moved to ``device`` (in place); variants that cast it or change
    its memory format work on a copy, so the caller's model stays fp32 and contiguous. ``example`` is
    the fp32 input batch (its first dimension is the batch size). Raises ``VariantUnavailable`` for a
    variant the device cannot run, and lets other failures (CUDA out of memory, an unsupported dtype)
    propagate: `segbench.measure.faults.error_reason` turns any of them into a one-line row error.
    """
    dev = torch.device(device)
    check_precisions([precision])
    check_timing(warmup, iters, threads)
    if cuda_graph and dev.type != "cuda":
        raise VariantUnavailable(CUDA_GRAPH_ON_CPU)
    default = precision == "fp32" and not (channels_last or compile or cuda_graph)
    with _measurement_settings(dev, threads) as used_threads, torch.inference_mode():
        model = model.eval().to(dev)
        example = example.to(dev)
        reference = None if default else model(example)
        runner = _variant(model, precision, channels_last)
        x = _variant_input(example, precision, channels_last)
        fields, call = _run(runner, x, dev, compile, cuda_graph, warmup, iters)
        fields.update(output_max_abs_diff=None, output_argmax_agreement=None, trace_file=None)
        output = main_output(call())
        if reference is not None:
            fields.update(compare_outputs(output, reference))
        if not bool(torch.isfinite(output).all()):  # e.g. fp16 overflow: the timing is of a wrong result
            fields["error"] = NON_FINITE
        if trace_dir is not None:
            tag = Variant(precision, channels_last, compile, cuda_graph).tag
            name = trace_name or default_trace_name(model, example, tag)
            fields["trace_file"] = str(write_trace(call, dev, Path(trace_dir), name))
    return {
        **fields,
        "threads": used_threads,
        "precision": precision,
        "channels_last": channels_last,
        "compiled": compile,
        "cuda_graph": cuda_graph,
    }


def _run(
    model: nn.Module,
    x: torch.Tensor,
    dev: torch.device,
    compile: bool,
    cuda_graph: bool,
    warmup: int,
    iters: int,
) -> tuple[dict[str, Any], Callable[[], Any]]:
    """Prime (compile), warm up, capture, time, measure memory; returns the fields and the timed call."""
    forward: Callable[[torch.Tensor], Any] = model
    compile_seconds = None
    if compile:
        torch.compiler.reset()  # a cold compile per row: no stale graphs, no recompile limit reached
        forward = torch.compile(model, dynamic=False)
    start = time.perf_counter()
    forward(x)  # priming call: compilation, cudnn autotuning, lazy initialisation
    _sync(dev)
    if compile:
        compile_seconds = time.perf_counter() - start
    baseline = cuda_reset_peak(dev) if dev.type == "cuda" else 0
    if cuda_graph:
        call = _capture_graph(forward, x, dev, warmup)
    else:
        for _ in range(warmup):
            forward(x)

        def call() -> Any:
            return forward(x)

    if dev.type == "cuda":
        device_ms, host_ms = _time_cuda(call, iters)
        peak_mb = cuda_peak_mb(dev, baseline)
    else:
        device_ms = host_ms = _time_cpu(call, iters)
        peak_mb = cpu_peak_mb(call)
    fields = {
        **summarize(device_ms, x.shape[0]),
        "host_ms_median": statistics.median(host_ms),
        "peak_mem_mb": peak_mb,
        "compile_seconds": compile_seconds,
    }
    return fields, call


def _time_cpu(call: Callable[[], Any], iters: int) -> list[float]:
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def _time_cuda(call: Callable[[], Any], iters: int) -> tuple[list[float], list[float]]:
    """Per call: CUDA event time (device ms) and the host's wall time inside the call (host ms)."""
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    host = []
    torch.cuda.synchronize()
    for start_event, end_event in zip(starts, ends):
        begin = time.perf_counter()
        start_event.record()
        call()
        end_event.record()
        host.append((time.perf_counter() - begin) * 1e3)
        end_event.synchronize()
    return [s.elapsed_time(e) for s, e in zip(starts, ends)], host


def _capture_graph(
    forward: Callable[[torch.Tensor], Any], x: torch.Tensor, dev: torch.device, warmup: int
) -> Callable[[], Any]:
    """Warm up on a side stream, capture one forward pass; the returned call replays it."""
    stream = torch.cuda.Stream(dev)
    stream.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(stream):
        for _ in range(max(warmup, CUDA_GRAPH_WARMUP)):
            forward(x)
    torch.cuda.current_stream(dev).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_output = forward(x)

    def replay() -> Any:
        graph.replay()
        return static_output

    return replay


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
    """The logits of a forward pass: the tensor itself, the first of a tuple, or ``out`` of a dict."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        return main_output(output.get("out", next(iter(output.values()))))
    if isinstance(output, (list, tuple)) and output:
        return main_output(output[0])
    raise TypeError(f"cannot compare a model output of type {type(output).__name__}")


def write_trace(call: Callable[[], Any], dev: torch.device, trace_dir: Path, name: str) -> Path:
    """Profile ``TRACE_ITERS`` calls with torch.profiler and write ``trace_dir/name.json`` (Chrome)."""
    from torch.profiler import ProfilerActivity

    from segbench.measure.profiling import quiet_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    try:
        trace_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create trace folder {trace_dir}: {exc.strerror}") from None
    path = trace_dir / f"{name}.json"
    with quiet_profile(activities=activities, record_shapes=True) as prof:
        for _ in range(TRACE_ITERS):
            call()
            _sync(dev)
    prof.export_chrome_trace(str(path))
    return path


def default_trace_name(model: nn.Module, example: torch.Tensor, tag: str) -> str:
    """``<class>-<b>x<c>x<h>x<w>-<variant tag>``, safe as a file name."""
    shape = "x".join(map(str, example.shape))
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", f"{type(model).__name__.lower()}-{shape}-{tag}")


def _variant(model: nn.Module, precision: str, channels_last: bool) -> nn.Module:
    if precision == "fp32" and not channels_last:
        return model
    variant = copy.deepcopy(model).to(dtype=PRECISIONS[precision])
    return variant.to(memory_format=torch.channels_last) if channels_last else variant


def _variant_input(example: torch.Tensor, precision: str, channels_last: bool) -> torch.Tensor:
    x = example.to(dtype=PRECISIONS[precision])
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


@contextlib.contextmanager
def _measurement_settings(dev: torch.device, threads: int | None) -> Iterator[int]:
    """Set the thread count (and cudnn.benchmark on CUDA) for one measurement; restore them after."""
    previous_threads = torch.get_num_threads()
    previous_benchmark = torch.backends.cudnn.benchmark
    if threads is not None:
        torch.set_num_threads(threads)
    if dev.type == "cuda":
        if dev.index is not None:
            torch.cuda.set_device(dev)
        torch.backends.cudnn.benchmark = True
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous_threads)
        torch.backends.cudnn.benchmark = previous_benchmark
