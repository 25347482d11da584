"""Commands under torchrun: which part of the work is this process's, and how the ranks' rows meet.

Two ways to share work, by command:

- **Sharded sweeps** (``flops``, ``latency``, ``blocks``, ``run``): every rank plans the same cells and
  measures its own (`segbench.runners.cells.Shard`), on its own cores or GPU; each rank journals its
  rows; at the end all ranks meet at a barrier and rank 0 gathers every rank's rows, in the sweep's
  cell order, for the usual result files. If a rank died or stayed away, rank 0 takes that rank's rows
  from its journal instead and says which rank failed.
- **Data-parallel training** (``train``): every rank trains every model together
  (`segbench.measure.data_parallel`); rank 0's rows are the results, the other ranks keep none.

Latency is always measured per device: spreading a sweep over ranks and machines spreads the work,
it does not make one measurement span several devices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from segbench.runners.cells import Row, Shard

if TYPE_CHECKING:
    from segbench.measure.data_parallel import DataParallel
    from segbench.measure.distributed import Place
    from segbench.rows.journal import Journal

#: How long ranks that were stopped (Ctrl-C, SIGTERM) wait for each other: torchrun kills a rank 30 s
#: after its SIGTERM, and the rows must be merged before.
STOPPED_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Team:
    """This process's rank in a torchrun job and what it shares with the others."""

    place: "Place"
    data_parallel: bool

    @property
    def rank(self) -> int:
        return self.place.rank

    @property
    def device(self) -> str:
        """The device to measure on: ``cpu``, or ``cuda`` meaning this rank's own GPU."""
        return self.place.device

    @property
    def shard(self) -> Shard | None:
        """This rank's part of a sweep (None in data-parallel training: every rank does every cell)."""
        from segbench.measure.distributed import core_list

        if self.data_parallel:
            return None
        return Shard(self.place.rank, self.place.world_size, core_list(self.place.cores))

    @property
    def parallel(self) -> "DataParallel | None":
        """The training hooks of data-parallel training (None in sharded sweeps)."""
        from segbench.measure.data_parallel import DataParallel

        return DataParallel(self.place.rank, self.place.world_size) if self.data_parallel else None

    def share(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (the run id)."""
        from segbench.measure.distributed import broadcast

        return broadcast(self.place, value)

    def meet(self, rows: list[Row], stopped: bool, journal: "Journal | None") -> tuple[list[Row] | None, str | None]:
        """Bring the ranks' rows together on rank 0 at the end of a sweep.

        Returns (all rows in cell order on rank 0, None on the others; why a rank failed, or None).
        A rank that failed the barrier contributes the rows of this run in its journal, if it kept one.
        """
        from segbench.measure.distributed import barrier, gather
        from segbench.rows.files import load_rows
        from segbench.rows.journal import in_cell_order

        if self.data_parallel:
            return (rows if self.rank == 0 else None), None
        failure = barrier(self.place, STOPPED_TIMEOUT_S if stopped else self.place.timeout_s)
        if failure is None:
            parts = gather(self.place, rows)
            return (None if parts is None else in_cell_order([row for part in parts for row in part])), None
        if self.rank != 0:
            return None, failure
        found = list(rows)
        if journal is not None:
            found += [row for row in load_rows(journal.others()) if row.get("run_id") == journal.run_id]
        return in_cell_order(found), failure


def join(device: str, *, data_parallel: bool = False) -> Team | None:
    """This process's `Team` when torchrun started it (cores pinned, process group joined), else None.

    Call it before anything else uses torch: the cores are pinned for the threads created afterwards.
    """
    from segbench.measure.distributed import launched, start

    if not launched():
        return None
    return Team(start(device), data_parallel)
