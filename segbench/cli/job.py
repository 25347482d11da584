"""The one shape of a measuring command, so that a command module only parses its options, builds a
config, calls its runner and picks the columns:

    job = Job("latency", device, output)        # torchrun joined, --resume read, progress display
    rows = job.collect(latency(specs, config, job.context))    # journal opened, rows gathered
    job.emit(rows, columns, title, footnotes)   # stdout, result files, exit code
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from segbench.cli.output import Progress, collect, emit, finish, open_journal, resumed_rows, save
from segbench.rows.row import Row

if TYPE_CHECKING:
    from segbench.cli.options import Output
    from segbench.rows.journal import Journal


class Job:
    """One run of a measuring command (``flops``, ``latency``, ``blocks``, ``train``, ``run``, ``load``, ``profile``).

    Joins torchrun first (a rank's cores are pinned before torch starts its threads), then reads the
    rows of ``--resume`` and starts the progress display. ``device`` is the one to measure on (under
    torchrun, the rank's own); ``context`` is what the runner gets besides its config. Under torchrun a
    sweep is sharded over the ranks, ``data_parallel`` training is shared by them.
    """

    def __init__(self, command: str, device: str, output: Output, *, data_parallel: bool = False) -> None:
        from segbench.runners.cells import Context
        from segbench.runners.distributed import join

        self.team = join(device, data_parallel=data_parallel)
        self.command, self.output = command, output
        self.device = self.team.device if self.team else device
        self.progress = Progress()
        self.previous = resumed_rows(output.resume, command, output.settings)
        self.context = Context(
            progress=self.progress,
            done=self.previous,
            shard=self.team.shard if self.team else None,
            parallel=self.team.parallel if self.team else None,
        )
        self.journal: Journal | None = None
        self.stopped: int | None = None

    def collect(self, rows: Iterator[Row], on_row: Callable[[Row], str | None] | None = None) -> list[Row]:
        """The runner's rows, journaled as they finish (the runner has checked every option by now)."""
        self.journal = open_journal(self.output.folder, self.command, self.output.resume, self.previous, self.team)
        done, self.stopped = collect(
            rows,
            self.progress,
            self.journal,
            on_row=on_row,
            team=self.team,
            settings=self.output.settings,
            previous=self.previous if self.team is None or self.team.rank == 0 else (),  # rank 0 merges
        )
        return done

    def emit(self, rows: list[Row], columns: Sequence[str], title: str, footnotes: Iterable[str] = ()) -> None:
        """One table on stdout (``error`` added to the columns when a row has one), the result files, and
        the exit code."""
        if "error" not in columns and any(r.get("error") for r in rows):
            columns = [*columns, "error"]
        emit(rows, self.output.format, self.journal, columns, title, footnotes, self.stopped)

    def emit_sections(self, rows: list[Row], title: str, footnotes: list[str]) -> None:
        """A table per kind of row (models, blocks) on stdout, the result files, and the exit code."""
        from segbench.output.tables import render_sections, sections_markdown

        failure = save(rows, self.journal, sections_markdown(rows, title, footnotes))
        if rows:
            render_sections(rows, self.output.format, title, footnotes)
        finish(rows, self.stopped, failure)
