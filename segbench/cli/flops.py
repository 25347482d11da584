"""``segbench flops``: params and MACs per model by three counters, reconciled; or per operator / module."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from segbench.cli.app import command
from segbench.cli.options import Format, Models, NoSave, NumClasses, Out, Resume, check_format, parse_size
from segbench.cli.output import Progress, collect, emit, open_journal, resumed_rows

COLUMNS = ("model", "height", "width", "params", "macs_analytic", "macs_other", "macs_fvcore", "macs_thop", "flops")
BREAKDOWN_COLUMNS = ("params", "macs_analytic", "macs_other", "macs_fvcore", "macs_thop", "flops", "share")
SHARE_NOTE = "share = (macs_analytic + macs_other) / the model's total of both"

Size = Annotated[str | None, typer.Option("--size", help="HxW input size. Default: each model's own.")]
BatchSize = Annotated[int, typer.Option("--batch-size", "-b", help="Batch size of the counted input.")]
By = Annotated[
    str | None, typer.Option("--by", help="Break each model down per 'operator' type or top-level 'module'.")
]


@command("flops")
def flops(
    models: Models = None,
    size: Size = None,
    num_classes: NumClasses = None,
    batch_size: BatchSize = 1,
    by: By = None,
    fmt: Format = "table",
    out: Out = Path("results"),
    no_save: NoSave = False,
    resume: Resume = None,
) -> None:
    """Count params and MACs (analytic, fvcore, thop). MACs are multiply-accumulates; FLOPs = 2 x MACs.

    macs_analytic (convolutions, transposed convolutions, linear) is exact; macs_other holds BN,
    activations, pooling, adds and interpolation; footnotes explain every other counter's number.
    """
    from segbench.measure.analytic import CONVENTION_NOTE
    from segbench.plugins import get_registry
    from segbench.rows.schema import MACS_NOTE, mac_footnotes
    from segbench.runners.count import CountConfig, count
    from segbench.runners.distributed import join

    team = join("cpu")  # first: a rank's cores are pinned before torch starts its threads
    check_format(fmt)
    progress, previous = Progress(), resumed_rows(resume, "flops")
    config = CountConfig(
        size=parse_size(size) if size is not None else None,
        num_classes=num_classes,
        batch_size=batch_size,
        by=by,
        progress=progress,
        done=previous,
        shard=team and team.shard,
    )
    counted = count(get_registry().select(models, kind="model"), config)
    journal = open_journal(None if no_save else out, "flops", resume, previous, team)
    rows, stopped = collect(counted, progress, journal, team=team)
    columns = COLUMNS if by is None else ("model", by, *BREAKDOWN_COLUMNS)
    columns += ("error",) if any(r.get("error") for r in rows) else ()
    notes = [CONVENTION_NOTE, *mac_footnotes(rows)] + ([SHARE_NOTE] if by else [])
    title = f"Params and MACs{f' per {by}' if by else ''} ({MACS_NOTE})"
    emit(rows, fmt, journal, columns=columns, title=title, footnotes=notes, stopped=stopped)
