"""The latency row fields of a measurement: the one place that turns `segbench.measure` results
(timed samples, a `Measurement`) into field names of the schema.

Here rather than in measure/: the primitives return plain values and never name a row field, so a
field renamed in `segbench.rows.schema` is renamed in this layer only; and both the latency and the
blocks runner use these builders.
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

from segbench.measure.stats import median_ci, ratios

if TYPE_CHECKING:
    from segbench.measure.latency import Measurement

NON_FINITE = "the output holds inf or NaN (an fp16 overflow?); output_max_abs_diff is inf"


def measurement_fields(measured: Measurement) -> dict[str, Any]:
    """Every latency field of one measured session: statistics, speed-up when paired, memory, agreement."""
    samples = measured.samples
    fields: dict[str, Any] = {
        **latency_fields(samples.device_ms[-1], samples.host_ms[-1], measured.batch_size, samples.target_met),
        "peak_mem_mb": measured.peak_mem_mb,
        "compile_seconds": measured.prepare_seconds,
        "threads": measured.threads,
        "tf32": measured.tf32,
        "output_max_abs_diff": None,
        "output_argmax_agreement": None,
        "trace_file": None if measured.trace is None else str(measured.trace),
    }
    if measured.paired:
        fields.update(speedup_fields(samples.device_ms[0], samples.device_ms[1]))
    if measured.agreement is not None:
        fields["output_max_abs_diff"], fields["output_argmax_agreement"] = measured.agreement
    if not measured.finite:  # e.g. fp16 overflow: the timing is of a wrong result
        fields["error"] = NON_FINITE
    return fields


def latency_fields(device_ms: list[float], host_ms: list[float], batch_size: int, target_met: bool) -> dict[str, Any]:
    """The row's latency statistics: `summarize`, the median's 95 % interval, the samples themselves."""
    low, high = median_ci(device_ms)
    return {
        **summarize(device_ms, batch_size),
        "host_ms_median": statistics.median(host_ms),
        "latency_ms_ci_low": low,
        "latency_ms_ci_high": high,
        "latency_samples_ms": list(device_ms),
        "ci_target_met": target_met,
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
