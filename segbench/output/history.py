"""History: result rows grouped into series across runs, and the change points of each series.

A series is one identity (model or block geometry, size, batch, classes), one variant (device type,
runtime, precision and switches), one machine (device name, host, CPU flags, threads) and one
protocol (dataset, training steps, init, world size): it never mixes machines. Its runs are ordered
by timestamp (then run id).

Change points: binary segmentation of the per-run values in log space (ratios, so a 30 % step is one
size whatever the model), each split kept only with evidence from two sources:

1. *between runs*: the step between the segments' means must exceed the spread of unchanged runs.
   That spread is estimated from the series itself, robustly: sigma = 1.4826 x median |x(i+1) - x(i)|
   / sqrt(2), a median absolute deviation of run-to-run differences, which a step or an outlier run
   does not inflate; it is floored by the runs' own 95 % intervals (their typical half-width / 1.96).
   The step's z = |step| / (sigma x sqrt(1/n_before + 1/n_after)) must exceed `Z_SPLIT`, set high
   because the series is short and the best of several splits is tested;
2. *within runs*: where the rows carry their per-call samples (``latency_samples_ms``), a one-sided
   rank test (Mann-Whitney) on the pooled samples after vs before, at `ALPHA_SAMPLES`.

A machine whose unchanged runs differ by 17 % while each run's interval is +-2 % passes (2) for any
shift, so (1) is what keeps false alarms rare; (2) keeps a series of rows without samples (older
files) from being judged on less evidence than it has. Each change point's ratio (after / before)
carries a 95 % interval from the same between-run spread.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from segbench.rows.row import Row
from segbench.rows.schema import IDENTITY_FIELDS, VARIANT_FIELDS

#: What a series holds constant beyond identity and variant: the machine and the protocol.
MACHINE_FIELDS = ("device_name", "hostname", "cpu_flags", "threads", "world_size")
PROTOCOL_FIELDS = ("dataset", "train_steps", "init")
SERIES_FIELDS: tuple[str, ...] = (*IDENTITY_FIELDS, *VARIANT_FIELDS, *MACHINE_FIELDS, *PROTOCOL_FIELDS)
#: Metrics where a larger value is better (a fall is the regression); every other metric: smaller is better.
HIGHER_IS_BETTER = frozenset({"miou", "pixel_acc", "throughput_ips", "latency_speedup", "output_argmax_agreement"})
#: Samples behind a metric, for the rank test of evidence (2).
SAMPLES = {"latency_ms_median": "latency_samples_ms"}
Z_SPLIT = 5.0
ALPHA_SAMPLES = 0.001
MIN_RUNS_PER_SEGMENT = 2
#: The least spread: a deterministic metric (mIoU with --seed) repeats exactly, and float rounding is no step.
EXACT = 1e-9
_Z95 = statistics.NormalDist().inv_cdf(0.975)


@dataclass
class Run:
    """One run's value of the metric in a series, with what it rests on."""

    row: Row
    value: float
    low: float | None
    high: float | None
    samples: list[float] | None


@dataclass
class ChangePoint:
    """Where a series stepped: the first run after the step, the levels before and after, and the evidence."""

    index: int
    run_id: str | None
    timestamp: str | None
    project_git_sha: str | None
    before: float
    after: float
    ratio: float
    ratio_ci_low: float
    ratio_ci_high: float
    z: float
    samples_p: float | None
    regression: bool

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass
class Series:
    """One series: its key fields, its runs in order, its change points and the between-run spread."""

    key: dict[str, Any]
    metric: str
    runs: list[Run]
    sigma: float = 0.0
    change_points: list[ChangePoint] = field(default_factory=list)
    note: str = ""

    def as_row(self) -> Row:
        """The output row: the key fields, n_runs, first, last, the change points (JSON), a note."""
        return {
            **{k: v for k, v in self.key.items() if v is not None},
            "metric": self.metric,
            "n_runs": len(self.runs),
            "first": self.runs[0].value,
            "last": self.runs[-1].value,
            "first_run_id": self.runs[0].row.get("run_id"),
            "last_run_id": self.runs[-1].row.get("run_id"),
            "run_to_run_spread": math.expm1(self.sigma),
            "change_points": [c.as_dict() for c in self.change_points],
            "note": self.note,
        }


def series_of(rows: Sequence[Row], metric: str) -> list[Series]:
    """The series of ``rows`` that carry a finite, positive ``metric`` (failed rows left out), runs ordered."""
    grouped: dict[tuple[Any, ...], list[Run]] = {}
    for row in rows:
        value = row.get(metric)
        if row.get("error") or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not math.isfinite(value) or value <= 0:
            continue
        key = series_key(row)
        grouped.setdefault(key, []).append(_run(row, metric, float(value)))
    found = []
    for key, runs in grouped.items():
        runs.sort(key=lambda r: (str(r.row.get("timestamp")), str(r.row.get("run_id"))))
        found.append(Series(dict(zip(SERIES_FIELDS, key)), metric, runs))
    return sorted(found, key=lambda s: tuple(str(v) for v in s.key.values()))


def _run(row: Row, metric: str, value: float) -> Run:
    stem = metric.removesuffix("_median")
    low, high = row.get(f"{stem}_ci_low"), row.get(f"{stem}_ci_high")
    usable = all(isinstance(v, (int, float)) and v > 0 for v in (low, high))
    samples = row.get(SAMPLES.get(metric, ""))
    return Run(
        row,
        value,
        low if usable else None,
        high if usable else None,
        samples if isinstance(samples, list) and samples else None,
    )


def analyse(series: Series, tolerance: float) -> Series:
    """Find the change points of one series (see the module docstring); ``tolerance`` marks regressions."""
    runs = series.runs
    if len(runs) < 2 * MIN_RUNS_PER_SEGMENT:
        series.note = (
            f"{len(runs)} run{'s' if len(runs) != 1 else ''}: no change points "
            f"(a step needs {MIN_RUNS_PER_SEGMENT} runs on each side)"
        )
        return series
    logs = [math.log(r.value) for r in runs]
    series.sigma = spread(runs)
    cuts = sorted(_split(logs, 0, len(logs), series.sigma, runs))
    bounds = [0, *cuts, len(logs)]
    higher = series.metric in HIGHER_IS_BETTER
    for i, cut in enumerate(cuts):
        left, right = logs[bounds[i] : cut], logs[cut : bounds[i + 2]]
        step = _step(logs, bounds[i], cut, bounds[i + 2])
        margin = _Z95 * _standard_error(series.sigma, len(left), len(right))
        ratio = math.exp(step)
        row = runs[cut].row
        series.change_points.append(
            ChangePoint(
                index=cut,
                run_id=row.get("run_id"),
                timestamp=row.get("timestamp"),
                project_git_sha=row.get("project_git_sha"),
                before=math.exp(statistics.fmean(left)),
                after=math.exp(statistics.fmean(right)),
                ratio=ratio,
                ratio_ci_low=math.exp(step - margin),
                ratio_ci_high=math.exp(step + margin),
                z=_z(step, series.sigma, len(left), len(right)),
                samples_p=_samples_p(runs[bounds[i] : cut], runs[cut : bounds[i + 2]], step),
                regression=ratio < 1 - tolerance if higher else ratio > 1 + tolerance,
            )
        )
    series.note = f"{len(cuts)} change point{'s' if len(cuts) != 1 else ''}"
    return series


def spread(runs: Sequence[Run]) -> float:
    """The between-run standard deviation in log space: a MAD of run-to-run differences, floored by the
    runs' own intervals (see the module docstring)."""
    logs = [math.log(r.value) for r in runs]
    steps = [abs(b - a) for a, b in itertools.pairwise(logs)]
    between = 1.4826 * statistics.median(steps) / math.sqrt(2) if steps else 0.0
    widths = [(math.log(r.high) - math.log(r.low)) / 2 / _Z95 for r in runs if r.low and r.high]
    within = statistics.median(widths) if widths else 0.0
    return max(between, within, EXACT)


def _standard_error(sigma: float, n_left: int, n_right: int) -> float:
    return sigma * math.sqrt(1 / n_left + 1 / n_right)


def _z(step: float, sigma: float, n_left: int, n_right: int) -> float:
    error = _standard_error(sigma, n_left, n_right)
    if error > 0:
        return abs(step) / error
    return math.inf if step else 0.0


def _split(logs: list[float], lo: int, hi: int, sigma: float, runs: Sequence[Run]) -> list[int]:
    """Binary segmentation of ``logs[lo:hi]``: the best split with evidence, then each side again."""
    cuts = range(lo + MIN_RUNS_PER_SEGMENT, hi - MIN_RUNS_PER_SEGMENT + 1)
    if not cuts:
        return []
    best = max(cuts, key=lambda cut: _z(_step(logs, lo, cut, hi), 1.0, cut - lo, hi - cut))  # the CUSUM split
    step = _step(logs, lo, best, hi)
    if _z(step, sigma, best - lo, hi - best) <= Z_SPLIT:
        return []
    p = _samples_p(runs[lo:best], runs[best:hi], step)
    if p is not None and p >= ALPHA_SAMPLES:
        return []
    return [*_split(logs, lo, best, sigma, runs), best, *_split(logs, best, hi, sigma, runs)]


def _step(logs: list[float], lo: int, cut: int, hi: int) -> float:
    return statistics.fmean(logs[cut:hi]) - statistics.fmean(logs[lo:cut])


def _samples_p(before: Sequence[Run], after: Sequence[Run], step: float) -> float | None:
    """One-sided rank-test p-value that the pooled samples after moved in the step's direction; None without samples."""
    old = [s for r in before for s in (r.samples or [])]
    new = [s for r in after for s in (r.samples or [])]
    if not old or not new:
        return None
    from scipy.stats import mannwhitneyu  # as the compare gate: exact for small samples

    larger, smaller = (new, old) if step > 0 else (old, new)
    return float(mannwhitneyu(larger, smaller, alternative="greater").pvalue)


def history(rows: Sequence[Row], metric: str, tolerance: float) -> list[Series]:
    """Every series of ``rows`` in ``metric``, analysed."""
    return [analyse(s, tolerance) for s in series_of(rows, metric)]


def last_regressions(found: Sequence[Series]) -> list[Series]:
    """The series whose last change point is a regression beyond the tolerance (``--fail-on-regression``)."""
    return [s for s in found if s.change_points and s.change_points[-1].regression]


def describe(series: Series) -> str:
    """The change points in words, for tables: ``run 5 (3f9a1c2b) x1.302 [1.271, 1.334] REGRESSION``."""
    parts = []
    for c in series.change_points:
        sha = f" ({c.project_git_sha[:8]})" if c.project_git_sha else ""
        flag = " REGRESSION" if c.regression else ""
        parts.append(f"run {c.index + 1}{sha} x{c.ratio:.3f} [{c.ratio_ci_low:.3f}, {c.ratio_ci_high:.3f}]{flag}")
    return "; ".join(parts) or series.note


#: `verdict`'s bar for one new run against a series' level: one one-sided test, not the best of many splits.
Z_CHECK = 3.0


def verdict(series: Series, row: Row, tolerance: float) -> tuple[bool, str]:
    """Whether ``row`` (a run measured now) regressed against the level of ``series`` since its last change
    point, and the evidence in words: beyond ``tolerance``, beyond the between-run spread (z > `Z_CHECK`)
    and, with samples, by the rank test on the pooled samples (`ALPHA_SAMPLES`)."""
    runs = series.runs[series.change_points[-1].index if series.change_points else 0 :]
    new = _run(row, series.metric, float(row[series.metric]))
    sigma = series.sigma or spread(series.runs)
    step = math.log(new.value) - statistics.fmean(math.log(r.value) for r in runs)
    higher = series.metric in HIGHER_IS_BETTER
    worse = -step if higher else step
    z = _z(worse, sigma, len(runs), 1) if worse > 0 else 0.0
    p = _samples_p(runs, [new], step)
    ratio = math.exp(step)
    beyond = ratio < 1 - tolerance if higher else ratio > 1 + tolerance
    regressed = beyond and z > Z_CHECK and (p is None or p < ALPHA_SAMPLES)
    evidence = f"x{ratio:.3f} vs the last {len(runs)} run(s) (limit {tolerance:.0%}), z={z:.1f} (bar {Z_CHECK:g})"
    if p is not None:
        evidence += f", samples rank test p={p:.2g} (bar {ALPHA_SAMPLES:g})"
    return regressed, evidence


def series_key(row: Row) -> tuple[Any, ...]:
    """The series a row belongs to."""
    return tuple(row.get(f) for f in SERIES_FIELDS)
