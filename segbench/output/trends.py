"""Trend plots of history series: the value of each run with its 95 % interval, change points marked.

PNG through matplotlib (``segbench history --plot DIR``); the interactive SVG of the HTML page is
drawn in the browser from the same series (`segbench.output.webpage`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from segbench.output.compare import geometry_words, switch_words
from segbench.output.history import Series
from segbench.rows.schema import JSON_ONLY_FIELDS


def series_title(series: Series) -> str:
    """``fcn8s 1x512x1024 torch fp32 cpu (AMD EPYC, vm)``: what the series holds constant, in short."""
    key = series.key
    parts = [str(key.get("model")), *geometry_words(key)]
    if key.get("height") is not None:
        parts.append(f"{key.get('batch_size')}x{key['height']}x{key.get('width')}")
    parts += [str(key[f]) for f in ("runtime", "precision", "device") if key.get(f) is not None]
    parts += switch_words(key)
    machine = ", ".join(str(key[f]) for f in ("device_name", "hostname") if key.get(f))
    return " ".join(parts) + (f" ({machine})" if machine else "")


def file_name(series: Series) -> str:
    """A file name for the series' plot: its title and metric, letters, digits, dots and dashes only."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", f"trend {series.metric} {series_title(series)}").strip("-") + ".png"


def draw_trends(found: Sequence[Series], out_dir: str | Path) -> list[Path]:
    """One PNG per series in ``out_dir``: runs in order, 95 % intervals as error bars, change points as
    dashed lines labelled with their ratio; returns the files written."""
    from segbench.output.plots import _figure, _save  # the report's figure size and writer, shared

    written = []
    for series in found:
        xs = list(range(1, len(series.runs) + 1))
        ys = [r.value for r in series.runs]
        fig, axes = _figure()
        ax = axes[0][0]
        bars = [(r.value - r.low, r.high - r.value) if r.low and r.high else (0, 0) for r in series.runs]
        ax.errorbar(xs, ys, yerr=list(zip(*bars)), fmt="o-", capsize=3, color="#1f77b4")
        for change in series.change_points:
            ax.axvline(change.index + 0.5, color="#d62728" if change.regression else "#2ca02c", linestyle="--")
            ax.annotate(f"x{change.ratio:.2f}", (change.index + 0.55, max(ys)), color="#444")
        ax.set_xlabel("run (in time order)")
        ax.set_ylabel(series.metric)
        ax.set_title(series_title(series), fontsize=9, wrap=True)
        ax.set_xticks(xs)
        path = Path(out_dir) / file_name(series)
        _save(fig, path)
        written.append(path)
    return written


def trend_figures(found: Sequence[Series]) -> list[str]:
    """The interactive trend of each series for the HTML page (`segbench.output.webpage.trend_html`);
    each point carries its row (less the per-call samples and other lists) for the hover."""
    from segbench.output.webpage import trend_html
    from segbench.rows.files import to_json_line

    figures = []
    for series in found:
        runs = [
            {
                "value": r.value,
                "low": r.low,
                "high": r.high,
                "row": {
                    k: v
                    for k, v in json.loads(to_json_line(r.row)).items()
                    if v is not None and k not in JSON_ONLY_FIELDS
                },
            }
            for r in series.runs
        ]
        changes = [{"index": c.index, "ratio": c.ratio, "regression": c.regression} for c in series.change_points]
        figures.append(trend_html(series_title(series), series.metric, runs, changes))
    return figures
