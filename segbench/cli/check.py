"""``segbench check``: measure now against a baseline; exit 0 (no regression), 1 (regression) or 125
(could not measure or compare), the codes `git bisect run` reads as good, bad and skip.

Every failure to give a verdict (a model the commit does not register, a failed row, a row with no
baseline series) exits 125, so a bisect skips that commit instead of blaming it. Nothing is saved:
a check is a probe, not a run of the history.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from segbench.cli.app import command
from segbench.cli.options import BatchSizes, Device, Models, Precisions, Runtimes, Sizes
from segbench.errors import UserError
from segbench.runners.defaults import Timing

EXIT_SKIP = 125

Baseline = Annotated[
    str,
    typer.Option(
        "--baseline",
        help="A result file to beat, or 'history': each series' runs since its last change point in --results.",
    ),
]


@command("check")
def check_command(
    baseline: Baseline,
    models: Models = None,
    device: Device = "cpu",
    size: Sizes = None,
    batch_size: BatchSizes = "1",
    precision: Precisions = "fp32",
    runtime: Runtimes = "torch",
    *,
    timing: Timing,
    results: Annotated[Path, typer.Option("--results", help="The folder of --baseline history.")] = Path("results"),
    tolerance: Annotated[
        str, typer.Option("--tolerance", help="Allowed slowdown (latency_ms_median growth): 10% or 0.1.")
    ] = "10%",
) -> None:
    """Time the selection now (as `segbench latency`) and judge each row against its baseline series."""
    from segbench.cli.options import parse_int_list, parse_names, parse_sizes, variants_of
    from segbench.output.compare import parse_tolerance
    from segbench.output.history import history, series_key, verdict
    from segbench.plugins import get_registry
    from segbench.rows.files import load_rows
    from segbench.rows.store import read_paths
    from segbench.runners.latency import LatencyConfig, latency

    regressed = False
    try:
        limit = parse_tolerance(tolerance, "--tolerance")
        base = read_paths([results]) if baseline == "history" else load_rows([Path(baseline)])
        known = {series_key(s.runs[0].row): s for s in history(base, "latency_ms_median", limit)}
        if not known:
            raise UserError(f"no latency rows in the baseline {results if baseline == 'history' else baseline}")
        config = LatencyConfig(
            device=device,
            sizes=parse_sizes(size),
            batch_sizes=parse_int_list(batch_size, "batch size"),
            variants=variants_of(precision, False, False, False, False),
            runtimes=parse_names(runtime),
            timing=timing,
        )
        rows = list(latency(get_registry().select(models, kind="model"), config))
        if not rows:
            raise UserError("nothing was measured")
        for row in rows:
            what = (
                f"{row['model']} {row['batch_size']}x{row['height']}x{row['width']} {row['runtime']} {row['precision']}"
            )
            if row.get("error"):
                raise UserError(f"{what}: {row['error']}")
            series = known.get(series_key(row))
            if series is None:
                raise UserError(f"{what}: no baseline series on this machine with this variant and protocol")
            bad, evidence = verdict(series, row, limit)
            regressed |= bad
            typer.echo(f"{what}: {row['latency_ms_median']:.3f} ms: {'REGRESSION' if bad else 'ok'}: {evidence}")
    except UserError as exc:
        typer.echo(f"segbench: check: cannot judge: {exc}", err=True)
        raise typer.Exit(EXIT_SKIP) from None
    except Exception as exc:  # a commit that cannot run at all: skip it
        typer.echo(f"segbench: check: could not measure: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(EXIT_SKIP) from None
    raise typer.Exit(1 if regressed else 0)
