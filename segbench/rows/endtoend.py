"""The end-to-end row fields of a pipeline's timed calls (`segbench.measure.endtoend`)."""

from __future__ import annotations

import statistics
from typing import Any

from segbench.measure.endtoend import STAGES
from segbench.measure.stats import median_ci
from segbench.rows.latency import summarize


def e2e_fields(times: list[tuple[float, float, float]], source: tuple[int, int]) -> dict[str, Any]:
    """From per-call stage times (ms): the end-to-end median, its 95 % interval and p90, each stage's
    median, and the frames' size."""
    totals = [sum(t) for t in times]
    low, high = median_ci(totals)
    summary = summarize(totals, batch_size=1)
    fields: dict[str, Any] = {
        "e2e_ms_median": summary["latency_ms_median"],
        "e2e_ms_ci_low": low,
        "e2e_ms_ci_high": high,
        "e2e_ms_p90": summary["latency_ms_p90"],
        "source_height": source[0],
        "source_width": source[1],
    }
    for i, stage in enumerate(STAGES):
        fields[f"{stage}_ms_median"] = statistics.median(t[i] for t in times)
    return fields
