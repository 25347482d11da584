"""Commands under torchrun: which part of the work is this process's, and how the ranks' rows meet.

Two ways to share work, by command:

- **Sharded sweeps** (``flops``, ``latency``, ``blocks``, ``run``): every rank plans the same cells and
  measures its own (`segbench.runners.cells.Shard`), on its own cores or GPU; each rank journals its
  rows. At the end each rank hands its rows to rank 0, which adds them to its own journal, gives a
  receipt (the rank then removes its journal) and writes the usual result files, rows in the sweep's
  cell order. A rank that died or stayed away (for ``SEGBENCH_DIST_TIMEOUT``) is named, and rank 0
  takes its rows of this run from its journal when it can see it (same machine or shared folder).
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

    place: Place
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
    def parallel(self) -> DataParallel | None:
        """The training hooks of data-parallel training (None in sharded sweeps)."""
        from segbench.measure.data_parallel import DataParallel

        return DataParallel(self.place.rank, self.place.world_size) if self.data_parallel else None

    def share(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (the run id)."""
        from segbench.measure.distributed import broadcast

        return broadcast(self.place, value)

    def meet(self, rows: list[Row], stopped: bool, journal: Journal | None) -> tuple[list[Row] | None, str | None]:
        """Bring the ranks' rows together on rank 0 at the end of a sweep (see the module docstring).

        Returns (all rows in cell order on rank 0, None on the others; why a rank failed, or None).
        """
        from segbench.measure.distributed import hand_over, take_over
        from segbench.rows.files import load_rows
        from segbench.rows.journal import in_cell_order

        if self.data_parallel:
            return (rows if self.rank == 0 else None), None
        timeout_s = STOPPED_TIMEOUT_S if stopped else self.place.timeout_s
        if self.rank != 0:
            failure = hand_over(self.place, rows, timeout_s)
            if journal is not None:
                journal.close(remove=failure is None)
            return (
                None,
                failure and f"rank {self.rank} could not hand its rows to rank 0 ({failure}); they stay in its journal",
            )
        found = list(rows)

        def receive(rank: int, theirs: list[Row]) -> None:
            found.extend(theirs)
            if journal is not None:
                journal.extend(theirs)

        failed = take_over(self.place, timeout_s, receive)
        if failed and journal is not None:
            found += [
                row
                for row in load_rows(journal.others())
                if row.get("run_id") == journal.run_id and row.get("rank") in failed
            ]
        failure = "; ".join(f"rank {k} did not finish ({why})" for k, why in failed.items())
        return in_cell_order(found), (
            failure and f"{failure}: its rows on disk are merged; --resume RESULT_FILE measures the rest"
        ) or None


def join(device: str, *, data_parallel: bool = False) -> Team | None:
    """This process's `Team` when torchrun started it (cores pinned, process group joined), else None.

    Call it before anything else uses torch: the cores are pinned for the threads created afterwards.
    """
    from segbench.measure.distributed import launched, start

    if not launched():
        return None
    return Team(start(device), data_parallel)
