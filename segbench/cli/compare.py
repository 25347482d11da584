"""``segbench compare``: the regression gate between two result files (exit 1 on a regression)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from segbench.cli.app import command
from segbench.errors import UserError


@command("compare")
def compare(
    base: Annotated[Path, typer.Argument(help="Result file (.json, .csv or .jsonl) of the reference run.")],
    new: Annotated[Path, typer.Argument(help="Result file of the run to check against BASE.")],
    latency_tolerance: Annotated[
        str, typer.Option("--latency-tolerance", help="Allowed median-latency growth: 10% or 0.1.")
    ] = "10%",
    miou_tolerance: Annotated[
        str, typer.Option("--miou-tolerance", help="Allowed mIoU drop in absolute points: 0.5.")
    ] = "0.5",
    force: Annotated[
        bool, typer.Option("--force", help="Compare latencies timed under different protocols too (and say so).")
    ] = False,
) -> None:
    """Check NEW against BASE: params and MACs exact, latency (same device) and mIoU within tolerance.

    Rows are matched on model, block geometry, device type, precision and variant flags, batch size,
    input size and class count. Latencies timed under different protocols are not comparable unless --force. Prints a Markdown verdict; exit 1 on a regression, 0 otherwise.
    """
    from segbench.output.compare import checks_to_markdown, compare_rows, has_regression, parse_points, parse_tolerance
    from segbench.rows.files import load_rows

    lat_tol = parse_tolerance(latency_tolerance, "--latency-tolerance")
    miou_tol = parse_points(miou_tolerance, "--miou-tolerance")
    base_rows, new_rows = load_rows([base]), load_rows([new])
    for path, rows in ((base, base_rows), (new, new_rows)):
        if not rows:
            raise UserError(f"no result rows in {path}: nothing to compare")
    checks = compare_rows(base_rows, new_rows, lat_tol, miou_tol, force)
    typer.echo(checks_to_markdown(checks, str(base), str(new), lat_tol, miou_tol))
    if has_regression(checks):
        raise typer.Exit(1)
