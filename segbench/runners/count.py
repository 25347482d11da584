"""The count runner (``segbench flops``, and the first stage of ``run``): params and MACs per model.

Three counters (analytic, fvcore, thop; `segbench.measure.macs`) on one input per model; each row
carries ``mac_notes``, the reasons the counters differ, which tables turn into footnotes.
``by="operator"`` or ``"module"`` gives one row per operator type or top-level module instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from segbench.checks import check_positive, check_sizes
from segbench.errors import UserError
from segbench.rows.schema import spec_fields
from segbench.runners.cells import ALONE, Built, Cell, Context, Row, measure_cells

if TYPE_CHECKING:
    from segbench.registry import ModelSpec

BY = ("operator", "module")


@dataclass(frozen=True)
class CountConfig:
    """What to count: input size (None: each spec's own), classes (None: each spec's own), batch."""

    size: tuple[int, int] | None = None
    num_classes: int | None = None
    batch_size: int = 1
    by: str | None = None

    def __post_init__(self) -> None:
        check_sizes([self.size] if self.size else None)
        check_positive(self.num_classes, "number of classes")
        check_positive(self.batch_size, "batch size")
        if self.by is not None and self.by not in BY:
            raise UserError(f"bad --by {self.by!r}: accepted {', '.join(BY)}")


def count(specs: Sequence[ModelSpec], config: CountConfig, context: Context = ALONE) -> Iterator[Row]:
    """One row per spec (or per operator / module with ``config.by``), yielded as each is counted."""
    return measure_cells(cells(specs, config, context), context)


def cells(
    specs: Sequence[ModelSpec], config: CountConfig, context: Context, built: dict[str, Built] | None = None
) -> Iterator[Cell]:
    """One cell per spec. ``built`` (spec name -> `Built`) counts models another stage built.

    Without it, the spec is built on the ``meta`` device (no memory, no initialisation) by
    `segbench.measure.macs.count_spec`.
    """
    for spec in specs:
        height, width = config.size or spec.default_size
        classes = (config.num_classes or spec.default_num_classes) if spec.kind == "model" else None
        key = spec_fields(
            spec, height=height, width=width, batch_size=config.batch_size, num_classes=classes, device="cpu"
        )
        model = (built or {}).get(spec.name)
        yield Cell([key], partial(_measure, spec, model, (height, width), classes, config, context), stage="count")


def _measure(
    spec: ModelSpec,
    model: Built | None,
    size: tuple[int, int],
    classes: int | None,
    config: CountConfig,
    context: Context,
    keys: list[Row],
) -> list[Row]:
    import torch

    from segbench.measure.macs import count_model, count_spec

    context.progress(spec.name, "count")
    if model is None:
        counted = count_spec(spec, size, classes, config.batch_size)
    else:
        counted = count_model(model.get(), torch.zeros(config.batch_size, spec.input_channels(), *size))
    fields = {**counted.fields, "mac_notes": {t: sorted(n) for t, n in counted.notes().items()}}
    if config.by is None:
        return [fields]
    parts = counted.operator_rows() if config.by == "operator" else counted.module_rows()
    return [{**part, "mac_notes": fields["mac_notes"]} for part in parts]
