"""``segbench flops``: params and MACs per model by three counters, reconciled; or per operator / module."""

from __future__ import annotations

from typing import Annotated

import typer

from segbench.cli.app import command
from segbench.cli.options import Models, NumClasses, Output, parse_size

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
    *,
    output: Output,
) -> None:
    """Count params and MACs (analytic, fvcore, thop). MACs are multiply-accumulates; FLOPs = 2 x MACs.

    macs_analytic (convolutions, transposed convolutions, linear) is exact; macs_other holds BN,
    activations, pooling, adds and interpolation; footnotes explain every other counter's number.
    """
    from segbench.cli.job import Job
    from segbench.measure.analytic import CONVENTION_NOTE
    from segbench.plugins import get_registry
    from segbench.rows.schema import MACS_NOTE, mac_footnotes
    from segbench.runners.count import CountConfig, count

    job = Job("flops", "cpu", output)
    config = CountConfig(
        size=parse_size(size) if size is not None else None, num_classes=num_classes, batch_size=batch_size, by=by
    )
    rows = job.collect(count(get_registry().select(models, kind="model"), config, job.context))
    columns = COLUMNS if by is None else ("model", by, *BREAKDOWN_COLUMNS)
    notes = [CONVENTION_NOTE, *mac_footnotes(rows)] + ([SHARE_NOTE] if by else [])
    job.emit(rows, columns, f"Params and MACs{f' per {by}' if by else ''} ({MACS_NOTE})", footnotes=notes)
