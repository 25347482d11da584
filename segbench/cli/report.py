"""``segbench report``: merge result files from several runs and machines into tables, plots and HTML."""

from __future__ import annotations

import contextlib
import html
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from segbench.cli.app import command
from segbench.cli.options import check_format
from segbench.errors import UserError
from segbench.output.tables import FORMATS

REPORT_FORMATS = (*FORMATS, "html")


@command("report")
def report(
    files: Annotated[
        list[Path], typer.Argument(help="Result files (.json, .csv, or a killed run's .jsonl) of any segbench command.")
    ],
    fmt: Annotated[str, typer.Option("--format", "-f", help=f"Output format: {', '.join(REPORT_FORMATS)}.")] = "table",
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Folder for PNG plots: miou_vs_latency, macs_vs_latency, k2_study."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Write the report to this file ('-' = stdout). Default: stdout, except html, which goes "
            "to results/report-<timestamp>.html.",
        ),
    ] = None,
) -> None:
    """Merge result rows of several runs/machines; print tables, draw plots, or write one HTML page.

    Tables show the model and block rows apart; device name, host, precision and versions become
    columns where the merged rows differ in them. JSON and CSV carry every field of every row.
    """
    from segbench.output.plots import draw_plots
    from segbench.output.tables import render_sections
    from segbench.rows.files import load_rows
    from segbench.rows.journal import new_run_id

    check_format(fmt, REPORT_FORMATS)
    if out is not None and any(out.resolve() == f.resolve() for f in files):
        raise UserError(f"--out {out} is one of the input files; write the report elsewhere")
    rows = load_rows(files)
    if not rows:
        raise UserError(f"no result rows in {', '.join(map(str, files))}: nothing to report")
    title = f"segbench report: {len(rows)} rows from {len(files)} file(s)"
    plots = draw_plots(rows, plot) if plot is not None else []
    if plots:
        print(f"segbench: wrote {', '.join(map(str, plots))}", file=sys.stderr)
    if fmt == "html":
        if out is None:
            out = Path("results") / f"report-{new_run_id()}.html"
        with _output(out) as stream:
            stream.write(_html(rows, title, files, plots))
    else:
        with _output(out):
            render_sections(rows, fmt, title)


def _html(rows: list[dict[str, Any]], title: str, files: list[Path], plots: list[Path]) -> str:
    """The page: tables, then the plots (drawn into a temporary folder when --plot was not given)."""
    from segbench.output.history import history
    from segbench.output.plots import draw_plots
    from segbench.output.tables import sections
    from segbench.output.trends import trend_figures
    from segbench.output.webpage import image_html, page, table_html

    tables = [table_html(part, columns, name, notes) for name, part, columns, notes in sections(rows)]
    source = f"<p class=notes>Merged from: {html.escape(', '.join(str(f) for f in files))}</p>"
    series = [s for s in history(rows, "latency_ms_median", 0.1) if len(s.runs) > 1]
    tables += ["<h2>Latency trends (runs in time order)</h2>", *trend_figures(series)] if series else []
    if plots:
        return page(title, [source, *tables, "<h2>Plots</h2>", *map(image_html, plots)])
    with tempfile.TemporaryDirectory() as tmp:
        images = [image_html(p) for p in draw_plots(rows, tmp)]
    return page(title, [source, *tables, *(["<h2>Plots</h2>", *images] if images else [])])


@contextlib.contextmanager
def _output(out: Path | None) -> Iterator[Any]:
    """stdout, or the file ``out`` (its folder created); stdout is redirected into the file meanwhile."""
    if out is None or str(out) == "-":
        yield sys.stdout
        return
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stream = out.open("w")
    except OSError as exc:
        raise UserError(f"cannot write report file {out}: {exc.strerror}") from None
    with stream, contextlib.redirect_stdout(stream):
        yield stream
    print(f"segbench: wrote {out}", file=sys.stderr)
