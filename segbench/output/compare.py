"""The regression gate: compare two result files row by row and say, per check, whether NEW regressed.

Rows are matched on ``KEY_FIELDS``: what was measured and how (model, block geometry, device type,
variant, batch, size, classes), but not on which machine, so a run on another GPU still matches.
Per matched pair:

- params and MAC counts must be equal (they do not depend on the machine);
- median latency may grow by at most the latency tolerance (relative), and is compared only when
  both rows ran on the same ``device_name`` and were timed under the same ``timing_protocol``
  (unless forced); otherwise the check says "not comparable". A growth
  beyond the tolerance is a regression only when it is also statistically clear (`slower`): a
  noisy machine must not fail an unchanged model;
- mIoU may drop by at most the mIoU tolerance (absolute, in points: 0.5 = half a percentage point),
  compared only for the same dataset, training steps and evaluation protocol;
- a row that failed in NEW (``error`` set) or is missing from NEW is a regression;
- a compared value that is not a finite, non-negative number (NaN, inf, text) is a regression.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from segbench.errors import UserError
from segbench.output.tables import format_cell, markdown_row, markdown_text
from segbench.rows.row import Row
from segbench.rows.schema import IDENTITY_FIELDS, VARIANT_FIELDS

KEY_FIELDS: tuple[str, ...] = (*IDENTITY_FIELDS, *VARIANT_FIELDS)
EXACT_FIELDS = ("params", "params_trainable", "macs_analytic", "macs_fvcore", "macs_thop")
#: The rank test's level, and the fewest samples a side it is run on (below: the intervals decide;
#: with 6 a side the exact test's smallest p-value is 1/924, so it can reach ALPHA).
ALPHA = 0.05
MIN_SAMPLES = 6
OK, REGRESSION, NOT_COMPARABLE, ADDED = "ok", "REGRESSION", "not comparable", "added"
#: mIoU is compared only at the same evaluation protocol (files from before protocols: whole).
PROTOCOL_FIELDS = ("protocol", "window", "scales", "flip")  # the slide stride is a key field
PROTOCOL_DEFAULTS = {"protocol": "whole"}


@dataclass(frozen=True)
class Check:
    """One line of the verdict: which row, which quantity, both values, the change and the status."""

    row: str
    check: str
    base: str
    new: str
    change: str
    status: str


def parse_tolerance(text: str, what: str) -> float:
    """``"10%"`` -> 0.1 and ``"0.1"`` -> 0.1; a non-negative finite number is required."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise UserError(f"bad {what} {text!r}: expected a non-negative fraction or percentage, e.g. 0.1 or 10%")
    return value


def parse_points(text: str, what: str) -> float:
    """``"0.5"`` -> 0.5 mIoU points; a non-negative finite number is required."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise UserError(f"bad {what} {text!r}: expected a non-negative number of mIoU points, e.g. 0.5")
    return value


def row_key(row: Row) -> tuple[Any, ...]:
    return tuple(row.get(f) for f in KEY_FIELDS)


def key_label(row: Row) -> str:
    """A short name for a matched row: model, block geometry, size, batch, device, runtime and variant."""
    parts = [str(row.get("model")), *geometry_words(row)]
    if row.get("height") is not None:
        parts.append(f"{row['height']}x{row.get('width')}")
    if row.get("batch_size") is not None:
        parts.append(f"bs{row['batch_size']}")
    parts += [str(row[f]) for f in ("device", "runtime", "precision") if row.get(f) is not None]
    return " ".join([*parts, *switch_words(row)])


def geometry_words(row: Row) -> list[str]:
    """``K=3 C=64 N=64`` for a block row, nothing for a model: what a label says of a block's geometry."""
    if row.get("kernel_size") is None:
        return []
    return [f"K={row['kernel_size']} C={row.get('in_channels')} N={row.get('out_channels')}"]


def switch_words(row: Row) -> list[str]:
    """The names of the variant switches a row has on (``channels_last compiled``), for its label."""
    return [f for f in ("channels_last", "compiled", "cuda_graph", "bn_folded") if row.get(f) is True]


def _index(rows: Sequence[Row], which: str) -> dict[tuple[Any, ...], Row]:
    index: dict[tuple[Any, ...], Row] = {}
    for row in rows:
        key = row_key(row)
        if key in index:
            raise UserError(
                f"{which} holds two rows for {key_label(row)!r}: compare files of one run each "
                f"(rows are matched on {', '.join(KEY_FIELDS)})"
            )
        index[key] = row
    return index


def compare_rows(
    base: Sequence[Row],
    new: Sequence[Row],
    latency_tolerance: float = 0.1,
    miou_tolerance: float = 0.5,
    force: bool = False,
) -> list[Check]:
    """Every check for every row of BASE and NEW, in BASE's order, then rows only NEW has.

    ``force``: compare latencies timed under different protocols too (the check says so).
    """
    base_index, new_index = _index(base, "BASE"), _index(new, "NEW")
    checks: list[Check] = []
    for key, old in base_index.items():
        label = key_label(old)
        row = new_index.get(key)
        if row is None:
            checks.append(Check(label, "row", "present", "missing", "", REGRESSION))
            continue
        pair = _check_pair(label, old, row, latency_tolerance, miou_tolerance, force)
        if not pair:  # BASE measured nothing this gate knows: passing it would vouch for nothing
            measured = ", ".join((*EXACT_FIELDS, "latency_ms_median", "miou"))
            pair = [Check(label, "row", "-", "-", f"BASE row has none of {measured}", REGRESSION)]
        checks += pair
    for key, row in new_index.items():
        if key not in base_index:
            checks.append(Check(key_label(row), "row", "missing", "present", "", ADDED))
    return checks


def _check_pair(label: str, old: Row, row: Row, latency_tol: float, miou_tol: float, force: bool) -> list[Check]:
    checks = []
    if row.get("error") and not old.get("error"):
        checks.append(Check(label, "error", "-", str(row["error"]), "", REGRESSION))
    for field in EXACT_FIELDS:
        a, b = old.get(field), row.get(field)
        if a is None:
            continue
        shown = (format_cell(field, a), format_cell(field, b))
        unusable = _unusable(a, b)
        if unusable:
            checks.append(Check(label, field, *shown, unusable, REGRESSION))
            continue
        status = OK if a == b else REGRESSION
        change = "" if a == b else f"{b - a:+,}"
        checks.append(Check(label, field, *shown, change, status))
    checks += _latency(label, old, row, latency_tol, force)
    checks += _miou(label, old, row, miou_tol)
    return checks


def _latency(label: str, old: Row, row: Row, tolerance: float, force: bool) -> list[Check]:
    """Slower beyond the tolerance *and* statistically clear, or it is not a regression (see `slower`).

    Rows timed under different protocols (or one without a recorded protocol, from an older file)
    are not comparable: a change of protocol is not a change of the model. Unless ``force``.
    """
    field = "latency_ms_median"
    a, b = old.get(field), row.get(field)
    if a is None:
        return []
    shown = (format_cell(field, a), format_cell(field, b))
    if b is None:
        return [Check(label, field, *shown, "not measured", REGRESSION)]
    unusable = _unusable(a, b) or _unusable_evidence(old, "base") or _unusable_evidence(row, "new")
    if unusable:
        return [Check(label, field, *shown, unusable, REGRESSION)]
    if old.get("device_name") != row.get("device_name"):
        return [Check(label, field, *shown, f"{old.get('device_name')} vs {row.get('device_name')}", NOT_COMPARABLE)]
    protocols = old.get("timing_protocol"), row.get("timing_protocol")
    forced = ""
    if protocols[0] != protocols[1]:
        differ = f"timing protocol {protocols[0] or 'not recorded'} vs {protocols[1] or 'not recorded'}"
        if not force:
            return [Check(label, field, *shown, f"{differ} (--force compares them)", NOT_COMPARABLE)]
        forced = f"; compared under different protocols (--force): {differ}"
    change = b / a - 1 if a else math.inf
    clear, evidence = slower(old, row)
    status = REGRESSION if change > tolerance and clear else OK
    return [Check(label, field, *shown, f"{change:+.1%} (limit +{tolerance:.1%}); {evidence}{forced}", status)]


def slower(old: Row, new: Row, alpha: float = ALPHA) -> tuple[bool, str]:
    """Whether NEW is clearly slower than OLD, and the evidence in words.

    With both rows' per-call samples (JSON result files): a one-sided Mann-Whitney rank test at
    ``alpha`` (scipy's: exact for small samples without ties, else the normal approximation); else
    with both 95 % intervals: the intervals apart; else only the medians (older files).
    """
    if all((row.get("processes") or 1) > 1 for row in (old, new)):  # before the samples: see there
        return _apart_across_processes(old, new)
    samples = old.get("latency_samples_ms"), new.get("latency_samples_ms")
    if all(isinstance(s, list) and len(s) >= MIN_SAMPLES for s in samples):
        from scipy.stats import mannwhitneyu

        p = float(mannwhitneyu(samples[1], samples[0], alternative="greater").pvalue)
        return p < alpha, f"rank test p={p:.2g} ({'clear' if p < alpha else 'not clear'} at {alpha:g})"
    old_high, new_low = old.get("latency_ms_ci_high"), new.get("latency_ms_ci_low")
    if isinstance(old_high, (int, float)) and isinstance(new_low, (int, float)):
        apart = new_low > old_high
        return apart, f"95% intervals {'apart' if apart else 'overlap'}"
    return True, "no samples or intervals: medians only"


def _apart_across_processes(old: Row, new: Row) -> tuple[bool, str]:
    """Rows timed in several processes (``--processes``): their intervals hold what a rerun moves by,
    so the per-call samples (one process's noise) must not decide. Clearly slower when the log ratio
    of the medians exceeds the two 95 % half-widths (OLD's upper, NEW's lower) added in quadrature."""
    names = [
        (old, "latency_ms_ci_high"),
        (old, "latency_ms_median"),
        (new, "latency_ms_median"),
        (new, "latency_ms_ci_low"),
    ]
    values = [row.get(name) for row, name in names]
    known = [float(v) for v in values if isinstance(v, (int, float)) and v > 0]
    if len(known) < len(values):
        return True, "no intervals: medians only"
    old_high, old_median, new_median, low = known
    margin = math.hypot(math.log(old_high / old_median), math.log(new_median / low))
    clear = math.log(new_median / old_median) > margin
    return clear, f"beyond the intervals across processes (+{math.expm1(margin):.1%}): {'yes' if clear else 'no'}"


def _miou(label: str, old: Row, row: Row, tolerance: float) -> list[Check]:
    a, b = old.get("miou"), row.get("miou")
    if a is None:
        return []
    shown = (format_cell("miou", a), format_cell("miou", b))
    if b is None:
        return [Check(label, "miou", *shown, "not measured", REGRESSION)]
    unusable = _unusable(a, b)
    if unusable:
        return [Check(label, "miou", *shown, unusable, REGRESSION)]
    for field in ("dataset", "train_steps", *PROTOCOL_FIELDS):
        before, after = (PROTOCOL_DEFAULTS.get(field) if r.get(field) is None else r[field] for r in (old, row))
        if before != after:
            return [Check(label, "miou", *shown, f"{field} {before} vs {after}", NOT_COMPARABLE)]
    change = round((b - a) * 100, 9)  # points; rounded so that 0.295 vs 0.300 is exactly -0.5
    status = REGRESSION if change < -tolerance else OK
    return [Check(label, "miou", *shown, f"{change:+.2f} points (limit -{tolerance:g})", status)]


def _unusable_evidence(row: Row, which: str) -> str | None:
    """Why a row's per-call samples or interval cannot be used as evidence (None when absent or usable):
    a NaN or a string among them would make every test "not clear", and the gate pass."""
    samples = row.get("latency_samples_ms")
    if samples is not None:
        if not isinstance(samples, list):
            return f"{which} latency_samples_ms is not a list ({type(samples).__name__})"
        why = next(filter(None, map(_not_a_measure, samples)), None)
        if why:
            return f"{which} latency_samples_ms holds a value that {why}"
    for field in ("latency_ms_ci_low", "latency_ms_ci_high"):
        value = row.get(field)
        why = None if value is None else _not_a_measure(value)
        if why:
            return f"{which} {field} {why}"
    return None


def _unusable(base: Any, new: Any) -> str | None:
    """Why a pair of measured values cannot be compared (None for two finite, non-negative numbers)."""
    for which, value in (("base", base), ("new", new)):
        why = _not_a_measure(value)
        if why:
            return f"{which} value {why}"
    return None


def _not_a_measure(value: Any) -> str | None:
    """Why ``value`` is not a finite, non-negative number, or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"is not a number ({value!r})"
    if math.isnan(value):
        return "is NaN"
    if math.isinf(value):
        return "is infinite"
    if value < 0:
        return "is negative"
    return None


def checks_to_markdown(checks: Sequence[Check], base: str, new: str, latency_tol: float, miou_tol: float) -> str:
    """The verdict as Markdown: conventions, one table line per check, and a summary line."""
    lines = [
        f"## segbench compare: {markdown_text(base)} -> {markdown_text(new)}",
        "",
        f"Rows matched on: {', '.join(KEY_FIELDS)}. Params and MACs must match exactly; median latency "
        f"may grow by {latency_tol:.1%} (same device_name and timing_protocol only, unless --force), and a "
        "larger growth fails only when it is "
        f"statistically clear (one-sided rank test on the per-call samples at {ALPHA:g}, else 95% intervals "
        f"apart); mIoU may drop by {miou_tol:g} points (absolute).",
        "",
        "| row | check | base | new | change | status |",
        "|---|---|---|---|---|---|",
    ]
    for c in checks:
        row = markdown_row((c.row, c.check, c.base, c.new, c.change, c.status))
        lines.append(row.replace(f"| {REGRESSION} |", f"| **{REGRESSION}** |") if c.status == REGRESSION else row)
    counts = {s: sum(c.status == s for c in checks) for s in (OK, REGRESSION, NOT_COMPARABLE, ADDED)}
    verdict = "FAIL" if has_regression(checks) else "PASS"
    lines += ["", f"**{verdict}**: {len(checks)} checks, " + ", ".join(f"{n} {s}" for s, n in counts.items())]
    if not counts[OK] and not counts[REGRESSION]:
        lines.append("Nothing was compared (no check passed): the gate fails.")
    return "\n".join(lines)


def has_regression(checks: Sequence[Check]) -> bool:
    """A regression, or a gate that compared nothing (no check ``ok``): it must not pass."""
    return any(c.status == REGRESSION for c in checks) or not any(c.status == OK for c in checks)
