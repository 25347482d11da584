"""The runner contract and the one loop that measures: cells in, rows out, faults into ``error``.

A runner turns ``(specs, config)`` into `Cell`s, each naming the rows it will make before anything
is measured, and `measure_cells` measures them in order and yields each row the moment its cell is
done. A cell that raises anything but Ctrl-C / SIGTERM (SystemExit and UserError from plugin code included)
becomes rows whose ``error`` says why (``stage: reason`` when the cell has a stage), its memory is
given back, and the next cell runs; what a cell prints goes to stderr. Bad user input is checked
before the first cell (the configs, the runners' ``prepare``), so it stops a run before anything is
measured.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

from segbench.rows.schema import make_row

if TYPE_CHECKING:
    from torch import nn

    from segbench.registry import ModelSpec

Row = dict[str, Any]
#: ``progress(model, what it is doing now)``: how runners report to a progress display.
Progress = Callable[[str, str], None]


def no_progress(model: str, stage: str) -> None:
    """The progress callback of a runner called without a display."""


@dataclass(frozen=True, kw_only=True)
class RunnerOptions:
    """What every runner's config has besides its own settings.

    :param progress: called with (model, what it is doing now) as the runner goes.
    :param done: rows of an earlier run of the same command (``--resume``): a cell whose every row
        is among them, with the same key fields and no error, is skipped.
    """

    progress: Progress = field(default=no_progress, compare=False)
    done: Sequence[Row] = field(default=(), compare=False, repr=False)

    def is_done(self, keys: Sequence[Row]) -> bool:
        """Whether every row of a cell (its ``keys``) was already measured without error."""
        return bool(self.done) and all(any(_matches(key, row) for row in self.done) for key in keys)


def _matches(key: Row, row: Row) -> bool:
    return not row.get("error") and all(row.get(name) == value for name, value in key.items())


@dataclass
class Cell:
    """One unit of a runner's work: the rows it makes (their identifying fields) and how to measure.

    ``measure()`` returns the measured fields of each row, in the order of ``keys``; a cell with one
    key may return several (a per-operator breakdown), each merged with that key.
    """

    keys: list[Row]
    measure: Callable[[], list[Row]]
    device: str = "cpu"
    stage: str | None = None


def measure_cells(cells: Iterable[Cell], options: RunnerOptions = RunnerOptions()) -> Iterator[Row]:
    """Measure each cell in turn and yield its rows as soon as it is done (see the module docstring).

    Cells already ``done`` (see `RunnerOptions`) are skipped.
    """
    from segbench.measure.faults import BuildError, error_reason, release_memory

    for cell in cells:
        if options.is_done(cell.keys):
            continue
        try:
            with contextlib.redirect_stdout(sys.stderr):  # a model that prints must not corrupt --format json
                results = cell.measure()
            failed = False
        except (KeyboardInterrupt, GeneratorExit):
            raise
        except BaseException as exc:  # noqa: B036 - a cell's fault, even SystemExit from plugin code, is its row's
            reason = error_reason(exc)
            if cell.stage and not isinstance(exc, BuildError):  # a build error names itself
                reason = f"{cell.stage}: {reason}"
            results = [{"error": reason}] * len(cell.keys)
            failed = True
        if failed:  # outside the except: its traceback holds the failed cell's tensors
            release_memory(cell.device)
        keys = cell.keys * len(results) if len(cell.keys) == 1 else cell.keys
        for key, fields in zip(keys, results):
            yield make_row(**{**key, **fields})


class Built:
    """A spec's model, built once on first use for all of its cells; a failed build fails each cell.

    Cells that are never measured never build it.
    """

    def __init__(self, spec: "ModelSpec", seed: int | None = None, **build_options: Any) -> None:
        self.spec, self.seed, self.options = spec, seed, build_options
        self._model: "nn.Module | None" = None
        self._error: Exception | None = None

    def get(self) -> "nn.Module":
        if self._error is not None:
            raise self._error
        if self._model is None:
            import torch

            from segbench.measure.faults import BuildError, error_reason

            try:
                if self.seed is not None:
                    torch.manual_seed(self.seed)  # the initial weights are part of what the seed fixes
                self._model = self.spec.build(**self.options)
            except Exception as exc:
                self._error = BuildError(f"cannot build {self.spec.name}: {error_reason(exc)}")
                raise self._error from None
        return self._model
