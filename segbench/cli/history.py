"""``segbench history``: every series of result rows across runs, with its change points."""

from __future__ import annotations

import fnmatch
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from segbench.cli.app import command
from segbench.cli.options import Models, check_format
from segbench.errors import UserError
from segbench.output.tables import FORMATS

HISTORY_FORMATS = (*FORMATS, "html")
COLUMNS = (
    "model",
    "batch_size",
    "height",
    "width",
    "runtime",
    "precision",
    "device_name",
    "hostname",
    "metric",
    "n_runs",
    "first",
    "last",
    "run_to_run_spread",
    "changes",
)

Paths = Annotated[
    list[Path] | None,
    typer.Argument(help="Result folders (read through their store, segbench.db) and files. Default: results/."),
]
Metric = Annotated[
    str, typer.Option("--metric", help="The row field to follow: latency_ms_median, miou, throughput_ips, ...")
]
Tolerance = Annotated[
    str,
    typer.Option("--tolerance", help="A change point beyond this relative change is a regression: 10% or 0.1."),
]


@command("history")
def history_command(
    paths: Paths = None,
    models: Models = None,
    metric: Metric = "latency_ms_median",
    since: Annotated[str | None, typer.Option("--since", help="Only runs from this date on (2026-11-30).")] = None,
    tolerance: Tolerance = "10%",
    fmt: Annotated[str, typer.Option("--format", "-f", help=f"Output format: {', '.join(HISTORY_FORMATS)}.")] = "table",
    plot: Annotated[Path | None, typer.Option("--plot", help="Folder for one PNG trend per series.")] = None,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Recreate each folder's store from its result files first.")
    ] = False,
    fail_on_regression: Annotated[
        bool,
        typer.Option("--fail-on-regression", help="Exit 1 when the last change point of a series is a regression."),
    ] = False,
) -> None:
    """One row per series (model, size, batch, variant, machine, protocol): runs, first and last value,
    and the change points, each with its run, commit, before/after and the ratio's 95 % interval."""
    from segbench.output.compare import parse_tolerance
    from segbench.output.history import Z_SPLIT, describe, history, last_regressions
    from segbench.output.tables import render
    from segbench.rows.schema import ROW_FIELDS, TEXT_FIELDS
    from segbench.rows.store import read_paths

    check_format(fmt, HISTORY_FORMATS)
    if metric not in ROW_FIELDS or metric in TEXT_FIELDS:
        raise UserError(f"--metric {metric!r}: not a numeric result-row field (e.g. latency_ms_median, miou)")
    limit = parse_tolerance(tolerance, "--tolerance")
    start = _date(since)
    rows = read_paths(paths or [Path("results")], rebuild=rebuild)
    if models is not None and models != "all":
        patterns = [p.strip() for p in models.split(",") if p.strip()]
        rows = [r for r in rows if any(fnmatch.fnmatchcase(str(r.get("model")), p) for p in patterns)]
    if start is not None:
        rows = [r for r in rows if str(r.get("timestamp") or "") >= start]
    found = history(rows, metric, limit)
    if not found:
        raise UserError(
            f"no rows with {metric} in {', '.join(map(str, paths)) if paths else 'results'} for this selection"
        )
    out = [{**s.as_row(), "changes": describe(s)} for s in found]
    if plot is not None:
        from segbench.output.trends import draw_trends

        print(f"segbench: wrote {', '.join(map(str, draw_trends(found, plot)))}", file=sys.stderr)
    title = f"segbench history: {metric}"
    notes = [
        f"{metric}: change points by binary segmentation of log values; a step needs z > {Z_SPLIT:g} against the "
        "between-run spread (MAD of run-to-run differences) and a rank test on the pooled samples; "
        "changes: first run after the step, commit, after/before ratio [95% interval]",
    ]
    if fmt == "html":
        from segbench.output.trends import trend_figures
        from segbench.output.webpage import page, table_html

        sys.stdout.write(
            page(title, [table_html(out, COLUMNS, "Series", notes), "<h2>Trends</h2>", *trend_figures(found)])
        )
    else:
        render(out, fmt, columns=COLUMNS, title=title, footnotes=notes)
    if fail_on_regression and last_regressions(found):
        for s in last_regressions(found):
            print(f"segbench: regression: {s.key.get('model')}: {describe(s)}", file=sys.stderr)
        raise typer.Exit(1)


def _date(text: str | None) -> str | None:
    """``--since`` as the ISO text row timestamps start with."""
    if text is None:
        return None
    try:
        datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"--since {text!r}: expected a date, e.g. 2026-11-30") from None
    return text
