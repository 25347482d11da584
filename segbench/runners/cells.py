"""The runner contract and the one loop that measures: cells in, rows out, faults into ``error``.

A runner turns ``(specs, config)`` into `Cell`s, each naming the rows it will make before anything
is measured, and `measure_cells` measures them in order and yields each row the moment its cell is
done. A cell that raises anything but Ctrl-C / SIGTERM (SystemExit and UserError from plugin code included)
becomes rows whose ``error`` says why (``stage: reason`` when the cell has a stage), its memory is
given back, and the next cell runs (unless the device is lost for good: a sticky CUDA error; then the
later cells are rows "not measured", which ``--resume`` measures); what a cell prints goes to stderr.
Bad user input is checked before the first cell (the configs, the runners' ``prepare``), so it stops a run before anything is
measured.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any

from segbench.foreign import foreign_code
from segbench.rows.row import Row
from segbench.rows.schema import make_row, spec_fields

if TYPE_CHECKING:
    from torch import nn

    from segbench.measure.data_parallel import DataParallel
    from segbench.measure.session import Variant
    from segbench.registry import ModelSpec

#: ``progress(model, what it is doing now)``: how runners report to a progress display.
ProgressCallback = Callable[[str, str], None]


def no_progress(model: str, stage: str) -> None:
    """The progress callback of a runner called without a display."""


def variant_key(spec: ModelSpec, device: str, label: str, runtime: Any, variant: Variant, **fields: Any) -> Row:
    """The key of a runtime x variant cell (``label``: the device's name), so every runner that
    sweeps runtimes and variants names its rows the same way."""
    return spec_fields(spec, device=device, device_name=label, runtime=runtime.name, **variant.fields(), **fields)


@dataclass(frozen=True)
class Shard:
    """This process's part of a sweep shared by ``world_size`` processes (torchrun): every rank plans
    the same cells, and cell ``first + i`` is measured by rank ``(first + i) % world_size`` only.

    Round robin rather than blocks, because neighbouring cells (one model's sizes or batch sizes)
    cost alike, so the ranks' loads stay close. Each row records its rank, the world size, the rank's
    cores and its cell's position, by which rank 0 puts the ranks' rows back in the sweep's order.
    """

    rank: int
    world_size: int
    cores: str | None = None
    first: int = 0

    def owns(self, index: int) -> bool:
        return (self.first + index) % self.world_size == self.rank

    def fields(self, index: int) -> Row:
        return {"world_size": self.world_size, "rank": self.rank, "cores": self.cores, "cell": self.first + index}

    def after(self, cells: int) -> Shard:
        """The shard of a sweep that continues this one's numbering after ``cells`` cells."""
        return replace(self, first=self.first + cells)


@dataclass(frozen=True)
class Context:
    """How a run goes, apart from what it measures (the runner's config): the second argument of every
    runner, and of `measure_cells`.

    :param progress: called with (model, what it is doing now) as the runner goes.
    :param done: rows of an earlier run of the same command (``--resume``): a cell whose every row
        is among them, with the same key fields and no error, is skipped.
    :param shard: this process's part of a sweep run by several (None: all of it).
    :param parallel: this process's part of data-parallel training (torchrun; None: alone).
    """

    progress: ProgressCallback = no_progress
    done: Sequence[Row] = field(default=(), repr=False)
    shard: Shard | None = None
    parallel: DataParallel | None = None

    def owns(self, index: int) -> bool:
        """Whether the cell at ``index`` of the sweep is this process's to measure."""
        return self.shard is None or self.shard.owns(index)

    def shard_fields(self, index: int) -> Row:
        """The row fields that say which rank measured the cell at ``index`` (none outside torchrun)."""
        return {} if self.shard is None else self.shard.fields(index)

    def is_done(self, keys: Sequence[Row]) -> bool:
        """Whether every row of a cell (its ``keys``) was already measured without error."""
        return bool(self.done) and all(any(_matches(key, row) for row in self.done) for key in keys)

    def after(self, cells: int) -> Context:
        """The context of a sweep that continues this one's after ``cells`` cells (its shard renumbered)."""
        return replace(self, shard=self.shard and self.shard.after(cells))


#: The context of a run in one process, without a display or earlier rows.
ALONE = Context()


def _matches(key: Row, row: Row) -> bool:
    return not row.get("error") and all(row.get(name) == value for name, value in key.items())


class Described(Iterator[Row]):
    """A runner's rows, with the settings it resolved before the first one in words (`describe`), for the
    notes on stderr and the footnotes of the table."""

    def __init__(self, rows: Iterator[Row], lines: list[str]) -> None:
        self.rows, self.lines = rows, lines

    def __next__(self) -> Row:
        return next(self.rows)

    def describe(self) -> list[str]:
        return list(self.lines)


@dataclass
class Cell:
    """One unit of a runner's work: the rows it makes (their identifying fields) and how to measure.

    ``measure(keys)`` gets the keys still to measure (all of them, unless a resumed run has some)
    and returns the measured fields of each row, in that order; a cell with one key may return
    several (a per-operator breakdown), each merged with that key.
    """

    keys: list[Row]
    measure: Callable[[list[Row]], list[Row]]
    device: str = "cpu"
    stage: str | None = None


@dataclass
class Outcome:
    """What `isolated` gives back: the value, or the one-line reason it failed."""

    value: Any = None
    error: str | None = None
    lost: str | None = None  # the device failed for good (a sticky CUDA error): why


def isolated(fn: Callable[[], Any], stage: str | None = None, device: str | None = None) -> Outcome:
    """Run one piece of measurement so that nothing it does can stop the run (see the module docstring).

    What it prints goes to stderr, a change of the working directory is undone (`segbench.foreign`); any
    exception but Ctrl-C / SIGTERM becomes ``error`` (prefixed
    ``stage:``, except a build error, which names itself), and the device's memory is given back.
    """
    from segbench.measure.faults import BuildError, device_lost, error_reason

    try:
        with foreign_code():  # a model that prints must not corrupt --format json, nor move the cwd
            return Outcome(fn())
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # GeneratorExit and SystemExit from plugin code included
        reason = error_reason(exc)
        if stage and not isinstance(exc, BuildError):
            reason = f"{stage}: {reason}"
    # outside the except: its traceback holds the failed cell's tensors
    lost = device_lost(device) if device is not None else None
    return Outcome(error=reason, lost=lost)


def measure_cells(cells: Iterable[Cell], context: Context = ALONE) -> Iterator[Row]:
    """Measure each cell in turn and yield its rows as soon as it is done (see the module docstring).

    Rows already ``done`` (see `Context`) are neither measured nor yielded again, and with a
    ``shard`` only this process's cells are measured.
    """
    lost = None
    for index, cell in enumerate(cells):
        todo = [key for key in cell.keys if not context.is_done([key])]
        if not todo or not context.owns(index):
            continue
        outcome = (
            Outcome(error=f"not measured: {lost}")
            if lost
            else isolated(partial(cell.measure, todo), cell.stage, cell.device)
        )
        if outcome.lost:  # every later cell would fail with the same, misattributed error
            lost = f"the {cell.device} context was lost ({outcome.lost}); rerun with CUDA_LAUNCH_BLOCKING=1 (--resume measures the rest)"
            outcome.error = f"{outcome.error}; {lost}"
        results = outcome.value if outcome.error is None else [{"error": outcome.error}] * len(todo)
        keys = todo * len(results) if len(todo) == 1 else todo
        for key, fields in zip(keys, results):
            yield make_row(**{**key, **fields, **context.shard_fields(index)})


class Built:
    """A spec's model, built once on first use for all of its cells; a failed build fails each cell.

    Cells that are never measured never build it. ``weights``: a checked ``state_dict`` file to load
    after building.
    """

    def __init__(
        self, spec: ModelSpec, seed: int | None = None, weights: str | None = None, **build_options: Any
    ) -> None:
        self.spec, self.seed, self.weights, self.options = spec, seed, weights, build_options
        self._model: nn.Module | None = None
        self._error: Exception | None = None

    def get(self) -> nn.Module:
        if self._error is not None:
            raise self._error
        if self._model is None:
            import torch

            from segbench.measure.faults import BuildError, error_reason

            try:
                if self.seed is not None:
                    torch.manual_seed(self.seed)  # the initial weights are part of what the seed fixes
                model = self.spec.build(**self.options)
                if self.weights is not None:
                    from segbench.measure.checkpoints import load_weights

                    load_weights(model, self.weights)
                self._model = model
            except Exception as exc:
                self._error = BuildError(f"cannot build {self.spec.name}: {error_reason(exc)}")
                raise self._error from None
        return self._model
