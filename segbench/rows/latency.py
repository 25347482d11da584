"""The latency row fields of a measurement: the one place that turns `segbench.measure` results
(timed samples, a `Measurement`) into field names of the schema.

Here rather than in measure/: the primitives return plain values and never name a row field, so a
field renamed in `segbench.rows.schema` is renamed in this layer only; and both the latency and the
blocks runner use these builders.
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any, cast

from segbench.measure.stats import across_processes, median_ci, ratios

if TYPE_CHECKING:
    from segbench.measure.gpu_monitor import GpuState
    from segbench.measure.latency import Measurement
    from segbench.rows.row import RowFields

NON_FINITE = "the output holds inf or NaN (an fp16 overflow?); output_max_abs_diff is inf"


def measurement_fields(measured: Measurement) -> RowFields:
    """Every latency field of one measured session: statistics, speed-up when paired, memory, agreement."""
    samples = measured.samples
    fields: RowFields = {
        **latency_fields(samples.device_ms[-1], samples.host_ms[-1], measured.batch_size, samples.target_met),
        "peak_mem_mb": measured.peak_mem_mb,
        "weights_mb": measured.weights_mb,
        "compile_seconds": measured.prepare_seconds,
        "threads": measured.threads,
        "tf32": measured.tf32[0],
        "tf32_matmul": measured.tf32[1],
        "output_max_abs_diff": None,
        "output_argmax_agreement": None,
        "trace_file": None if measured.trace is None else str(measured.trace),
        **gpu_fields(measured.gpu_before, measured.gpu_after, measured.energy_j_per_image),
    }
    if measured.paired:
        fields.update(speedup_fields(samples.device_ms[0], samples.device_ms[1]))
    if measured.agreement is not None:
        fields["output_max_abs_diff"], fields["output_argmax_agreement"] = measured.agreement
    if not measured.finite:  # e.g. fp16 overflow: the timing is of a wrong result
        fields["error"] = NON_FINITE
    return fields


def gpu_fields(before: GpuState | None, after: GpuState | None, energy_j_per_image: float | None) -> RowFields:
    """The GPU's conditions around a row: clocks, power and temperature before and after, the throttle
    reasons seen (either reading), how many other processes used the GPU, and the two flags a reader
    filters on: ``gpu_throttled`` (a reason that slows the GPU) and ``gpu_shared`` (another process)."""
    from segbench.measure.gpu_monitor import THROTTLING

    if before is None or after is None:
        return {}
    reasons = list(dict.fromkeys([*before.reasons, *after.reasons]))
    others = [n for n in (before.other_processes, after.other_processes) if n is not None]
    fields: dict[str, Any] = {
        f"gpu_{name}_{when}": getattr(state, name)
        for name in ("sm_mhz", "mem_mhz", "power_w", "temp_c")
        for when, state in (("before", before), ("after", after))
    }
    return cast(
        "RowFields",
        {
            **fields,
            "gpu_throttle_reasons": ",".join(reasons),
            "gpu_other_processes": max(others) if others else None,
            "gpu_throttled": any(r in THROTTLING for r in reasons),
            "gpu_shared": bool(others) and max(others) > 0,
            "energy_j_per_image": energy_j_per_image,
        },
    )


def latency_fields(device_ms: list[float], host_ms: list[float], batch_size: int, target_met: bool) -> RowFields:
    """The row's latency statistics: `summarize`, the median's 95 % interval, the samples themselves."""
    low, high = median_ci(device_ms)
    return {
        **summarize(device_ms, batch_size),
        "host_ms_median": statistics.median(host_ms),
        "latency_ms_ci_low": low,
        "latency_ms_ci_high": high,
        "latency_samples_ms": list(device_ms),
        "ci_target_met": target_met,
        "processes": 1,
    }


def speedup_fields(baseline_ms: list[float], device_ms: list[float]) -> RowFields:
    """How many times faster than the baseline: median of the paired ratios and its 95 % interval."""
    paired = ratios(baseline_ms, device_ms)
    low, high = median_ci(paired)
    return {
        "latency_speedup": statistics.median(paired),
        "latency_speedup_ci_low": low,
        "latency_speedup_ci_high": high,
        "latency_speedup_samples": paired,
    }


def pooled_fields(runs: list[dict[str, Any]], batch_size: int) -> dict[str, Any]:
    """One row's fields timed in several worker processes (``runs``: the row of each process, in order).

    The first process's row gives what does not depend on the process (counts, agreement, accuracy);
    the latency and the speed-up, with their intervals, come from every process's samples
    (`segbench.measure.stats.across_processes`); mean, p90, min and std are of all samples pooled;
    ``samples_per_process`` splits the pooled sample lists. A process whose row failed fails the row.
    """
    errors = [run.get("error") for run in runs]
    if any(errors):
        same = len(set(errors)) == 1  # e.g. a variant this runtime lacks: said once
        failed = [f"process {i + 1} of {len(runs)}: {error}" for i, error in enumerate(errors) if error]
        return {**runs[0], "error": errors[0] if same else "; ".join(failed)}
    per_process = [run["latency_samples_ms"] for run in runs]
    pooled = [ms for samples in per_process for ms in samples]
    spread = across_processes(per_process)
    fields = {
        **runs[0],
        **summarize(pooled, batch_size),
        "latency_ms_median": spread.median,
        "throughput_ips": batch_size * 1e3 / spread.median,
        "latency_ms_ci_low": spread.low,
        "latency_ms_ci_high": spread.high,
        "host_ms_median": statistics.median(run["host_ms_median"] for run in runs),
        "compile_seconds": _median_or_none([run.get("compile_seconds") for run in runs]),
        "peak_mem_mb": max((run["peak_mem_mb"] for run in runs if run.get("peak_mem_mb") is not None), default=None),
        "ci_target_met": all(run["ci_target_met"] for run in runs),
        "latency_samples_ms": pooled,
        "samples_per_process": [len(samples) for samples in per_process],
        "processes": len(runs),
        "between_process_share": spread.between_share,
    }
    if runs[0].get("latency_speedup_samples") is not None:
        ratios_per_process = [run["latency_speedup_samples"] for run in runs]
        speedup = across_processes(ratios_per_process)
        fields.update(
            latency_speedup=speedup.median,
            latency_speedup_ci_low=speedup.low,
            latency_speedup_ci_high=speedup.high,
            latency_speedup_samples=[r for run in ratios_per_process for r in run],
            # the speed-up is the row's headline: its share, not the latency's
            between_process_share=speedup.between_share,
        )
    return fields


def processes_agree(runs: list[list[dict[str, Any]]], target: float) -> bool:
    """Whether every row's headline (its speed-up when paired, else its median latency) is within
    ``target`` (relative) in each process of ``runs`` (per process, the rows of one cell)."""
    for rows in zip(*runs):
        if any(row.get("error") for row in rows):
            return False
        field = "latency_speedup" if rows[0].get("latency_speedup") is not None else "latency_ms_median"
        values = [row[field] for row in rows]
        if max(values) > min(values) * (1 + target):
            return False
    return True


def _median_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def summarize(times_ms: list[float], batch_size: int) -> RowFields:
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
