"""The runner contract and the one loop that measures: cells in, rows out, faults into ``error``.

A runner turns ``(specs, config)`` into `Cell`s, each naming the rows it will make before anything
is measured, and `measure_cells` measures them in order and yields each row the moment its cell is
done. A cell that raises becomes rows whose ``error`` says why (``stage: reason`` when the cell has
a stage), its memory is given back, and the next cell runs. Bad user input (UserError) is checked
before the first cell and stops the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from segbench.errors import UserError
from segbench.rows.schema import make_row

if TYPE_CHECKING:
    from torch import nn

    from segbench.registry import ModelSpec

Row = dict[str, Any]
#: ``progress(model, what it is doing now)``: how runners report to a progress display.
Progress = Callable[[str, str], None]


def no_progress(model: str, stage: str) -> None:
    """The progress callback of a runner called without a display."""


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


def measure_cells(cells: Iterable[Cell]) -> Iterator[Row]:
    """Measure each cell in turn and yield its rows as soon as it is done (see the module docstring)."""
    from segbench.measure.faults import BuildError, error_reason, release_memory

    for cell in cells:
        try:
            results = cell.measure()
            failed = False
        except UserError:
            raise
        except Exception as exc:  # one failing cell must not stop the sweep: its rows say why
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
