"""``segbench flops``: params and MACs per model by three counters, reconciled; or per operator / module."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from segbench.cli.app import command
from segbench.cli.options import (
    Format,
    Models,
    NoSave,
    NumClasses,
    Out,
    check_format,
    check_positive,
    parse_size,
)
from segbench.errors import UserError

COLUMNS = ("model", "height", "width", "params", "macs_analytic", "macs_other", "macs_fvcore", "macs_thop", "flops")
BREAKDOWN_COLUMNS = ("params", "macs_analytic", "macs_other", "macs_fvcore", "macs_thop", "flops", "share")
BY = ("operator", "module")
SHARE_NOTE = "share = (macs_analytic + macs_other) / the model's total of both"

Size = Annotated[Optional[str], typer.Option("--size", help="HxW input size. Default: each model's own.")]
BatchSize = Annotated[int, typer.Option("--batch-size", "-b", help="Batch size of the counted input.")]
By = Annotated[
    Optional[str], typer.Option("--by", help="Break each model down per 'operator' type or top-level 'module'.")
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
) -> None:
    """Count params and MACs (analytic, fvcore, thop). MACs are multiply-accumulates; FLOPs = 2 x MACs.

    macs_analytic (convolutions, transposed convolutions, linear) is exact; macs_other holds BN,
    activations, pooling, adds and interpolation; footnotes explain every other counter's number.
    """
    from segbench.cli.output import emit
    from segbench.measure.analytic import CONVENTION_NOTE
    from segbench.measure.macs import merge_footnotes
    from segbench.plugins import get_registry
    from segbench.results import MACS_NOTE

    check_format(fmt)
    hw = parse_size(size) if size is not None else None
    check_positive(num_classes, "num-classes")
    check_positive(batch_size, "batch size")
    if by is not None and by not in BY:
        raise UserError(f"bad --by {by!r}: accepted {', '.join(BY)}")
    rows: list[dict[str, Any]] = []
    counts = []
    for spec in get_registry().select(models, kind="model"):
        print(f"segbench: counting {spec.name}", file=sys.stderr)
        model_rows, count = count_rows(spec, hw, num_classes, batch_size, by)
        rows += model_rows
        if count is not None:
            counts.append(count)
    columns = COLUMNS if by is None else ("model", by, *BREAKDOWN_COLUMNS)
    columns += ("error",) if any(r.get("error") for r in rows) else ()
    notes = [CONVENTION_NOTE, *merge_footnotes(counts)] + ([SHARE_NOTE] if by else [])
    title = f"Params and MACs{f' per {by}' if by else ''} ({MACS_NOTE})"
    emit(rows, fmt, "flops", None if no_save else out, columns=columns, title=title, footnotes=notes)


def count_rows(
    spec: Any, size: tuple[int, int] | None, num_classes: int | None, batch_size: int, by: str | None
) -> tuple[list[dict[str, Any]], Any]:
    """One spec's rows: the model row, or its breakdown rows; a failed count gives one error row."""
    from segbench.measure.latency import error_reason
    from segbench.measure.macs import count_spec
    from segbench.results import make_row, spec_fields

    height, width = size or spec.default_size
    classes = (num_classes or spec.default_num_classes) if spec.kind == "model" else None
    fields = spec_fields(spec, height=height, width=width, batch_size=batch_size, num_classes=classes, device="cpu")
    if spec.kind == "block":
        options = spec.options()
        fields["block"] = spec.name.removeprefix("block_")
        fields.update({k: options.get(k) for k in ("kernel_size", "in_channels", "out_channels", "stride")})
    try:
        count = count_spec(spec, (height, width), classes, batch_size)
    except UserError:
        raise
    except Exception as exc:  # the row says why; the other models are still counted
        return [make_row(**fields, error=f"count: {error_reason(exc)}")], None
    if by is None:
        return [make_row(**fields, **count.fields)], count
    parts = count.operator_rows() if by == "operator" else count.module_rows()
    rows = []
    for part in parts:
        extra = {by: part.pop(by), "share": part.pop("share")}
        rows.append({**make_row(**fields, **part), **extra})
    return rows, count
