"""What every command does with a runner's rows: show progress, journal each row as it finishes,
stop cleanly on Ctrl-C or SIGTERM keeping the finished rows, render them on stdout, write the final
result files, and set the exit code.

Under torchrun (`segbench.runners.distributed`) every rank measures and journals its part, but only
rank 0 speaks: it alone shows progress, renders the table or JSON on stdout and writes the final
files; the other ranks print nothing but errors and leave once their rows are with rank 0.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from segbench.output.tables import render
from segbench.rows.files import latest_attempts
from segbench.rows.row import Row

if TYPE_CHECKING:
    from segbench.rows.journal import Journal
    from segbench.runners.distributed import Team

EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, a job scheduler): stops the run like Ctrl-C does."""


def speaks() -> bool:
    """Whether this process reports progress: always, but for the ranks other than 0 under torchrun."""
    return os.environ.get("RANK", "0") == "0"


def note(text: str) -> None:
    """A progress or status line: stderr, so stdout stays the command's table or JSON."""
    if speaks():
        print(f"segbench: {text}", file=sys.stderr, flush=True)


class Progress:
    """A spinner on stderr showing ``model: stage`` as runners report it (their ``progress`` callback).

    ``done`` as the stage prints how long the model took. Silent on ranks other than 0.
    """

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import Progress as Bar
        from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

        self.bar = Bar(
            SpinnerColumn(),
            TextColumn("{task.description}", markup=False),  # model names are not markup
            TimeElapsedColumn(),
            console=Console(stderr=True, quiet=not speaks()),
            transient=True,
            disable=not speaks(),
        )
        self.task = self.bar.add_task("starting", total=None)
        self.started: dict[str, float] = {}

    def __enter__(self) -> Progress:
        self.bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.stop()

    def __call__(self, model: str, stage: str) -> None:
        now = time.perf_counter()
        started = self.started.setdefault(model, now)
        if stage == "done":
            self.print(f"segbench: {model}: done in {now - started:.1f} s")
        self.bar.update(self.task, description=f"{model}: {stage}")

    def print(self, text: str) -> None:
        """A line above the spinner (on stderr)."""
        self.bar.console.print(text, highlight=False, markup=False, soft_wrap=True)


def resumed_rows(resume: Path | None, command: str, settings: str | None = None) -> list[Row]:
    """The rows of ``--resume FILE`` (checked to be this command's results, measured with ``settings``), or none.

    A file measured with other settings (another --size, --warmup, --by, ...) is refused: its cells
    would count as done, and the file would mix rows of two protocols. Rows of files written before
    rows recorded their settings are taken as they are.
    """
    from segbench.errors import UserError
    from segbench.rows.files import load_rows
    from segbench.rows.journal import journal_paths, stem_of

    if resume is None:
        return []
    if not resume.is_file():
        raise UserError(f"--resume {resume}: result file not found")
    if not resume.name.startswith(f"{command}-"):
        raise UserError(f"--resume {resume}: not a result file of segbench {command} ({command}-*.json)")
    rows = load_rows(journal_paths(stem_of(resume)) if resume.suffix == ".jsonl" else [resume])
    other = next((r["settings"] for r in rows if r.get("settings") not in (None, settings)), None)
    if settings is not None and other is not None:
        raise UserError(f"--resume {resume}: measured with other settings ({other}) than this run ({settings})")
    return rows


def open_journal(
    out_dir: Path | None, command: str, resume: Path | None, previous: list[Row], team: Team | None = None
) -> Journal | None:
    """The journal of this run: under --out, or the resumed file's; None with --no-save (``out_dir``
    None), --resume or not.

    Opened only once every option has been checked, so bad input writes nothing. Under torchrun each
    rank of a sweep opens its own, in rank 0's run; in training only rank 0 keeps one.
    """
    from segbench.rows.journal import Journal

    if out_dir is None:
        return None
    folder = resume.parent if resume is not None else out_dir
    if team is None:
        return Journal(folder, command, resume, previous)
    if team.data_parallel:
        return Journal(folder, command, resume, previous) if team.rank == 0 else None
    if team.rank == 0:
        journal = Journal(folder, command, resume, previous, rank=0)
        team.share(journal.run_id)
        return journal
    return Journal(folder, command, resume, [], rank=team.rank, run_id=team.share(None))


@contextlib.contextmanager
def _sigterm_stops() -> Iterator[None]:
    """While measuring, SIGTERM raises `Terminated` (like Ctrl-C's KeyboardInterrupt)."""

    def stop(signum: int, frame: Any) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def collect(
    rows: Iterator[Row],
    progress: Progress,
    journal: Journal | None,
    on_row: Callable[[Row], str | None] | None = None,
    team: Team | None = None,
    settings: str | None = None,
    previous: Sequence[Row] = (),
) -> tuple[list[Row], int | None]:
    """Gather a runner's rows as they finish, journaling each, with the ``progress`` display running.

    ``on_row`` may return a line to print for each finished row. Ctrl-C and SIGTERM keep the finished
    rows; a journal that cannot be written (a full disk) is said once and the rows go on in memory; each
    row records the run's ``settings`` (what ``--resume`` checks); a resumed cell measured again replaces
    its error row (`segbench.rows.journal.latest_attempts`). Returns (rows, the exit code of an interruption or None); a resumed run's earlier rows come first.
    Under torchrun (``team``) rank 0 returns every rank's rows, exit code 1 if a rank failed, and the
    other ranks exit here.
    """
    done: list[Row] = list(previous)  # a resumed run's rows, kept whether or not this run saves
    code = None
    try:
        with _sigterm_stops(), progress:
            for row in rows:
                row["settings"] = settings
                if journal is not None:
                    _journal(journal, row)
                done.append(row)
                line = on_row(row) if on_row else None
                if line:
                    progress.print(f"segbench: {line}")
    except KeyboardInterrupt as stop:
        code = EXIT_TERMINATED if isinstance(stop, Terminated) else EXIT_INTERRUPTED
        note(f"{'terminated' if code == EXIT_TERMINATED else 'interrupted'}: keeping the {len(done)} finished row(s)")
    done = latest_attempts(done)
    if team is None:
        return done, code
    return _meet(team, done, code, journal)


def _journal(journal: Journal, row: Row) -> None:
    """Journal a row; the first failure (a full disk) is said once, the rows go on in memory."""
    from segbench.writing import WriteError

    try:
        journal.append(row)
    except WriteError as exc:
        note(f"{exc}: the rows are kept in memory, printed, and saved at the end if the disk allows")


def _meet(team: Team, rows: list[Row], code: int | None, journal: Journal | None) -> tuple[list[Row], int | None]:
    """The end of a run under torchrun: rank 0 gets every rank's rows; the others leave (exit 0, or 1 on failure).

    From here on SIGTERM (which torchrun sends when a rank fails) no longer stops rank 0: it writes the
    merged rows first (torchrun's SIGKILL follows 30 s later). Another rank may die: its journal stays.
    """
    if team.rank == 0:
        signal.signal(signal.SIGTERM, lambda signum, frame: note("SIGTERM: writing the rows of every rank first"))
    merged, failure = team.meet(rows, code is not None, journal)
    if failure is not None:
        print(f"segbench: {failure}", file=sys.stderr, flush=True)
    if merged is None:
        if journal is not None:
            journal.close()
        raise typer.Exit(1 if failure else 0)
    return merged, 1 if failure else code


def emit(
    rows: list[Row],
    fmt: str,
    journal: Journal | None,
    columns: Sequence[str] | None = None,
    title: str | None = None,
    footnotes: Iterable[str] = (),
    stopped: int | None = None,
) -> None:
    """Render rows on stdout, write the final files, and exit: 130/143 when stopped, 1 on a row error."""
    from segbench.output.tables import to_markdown

    failure = save(rows, journal, to_markdown(rows, columns, title, footnotes))
    render(rows, fmt, columns=columns, title=title, footnotes=footnotes)
    finish(rows, stopped, failure)


def save(rows: list[Row], journal: Journal | None, markdown: str | None) -> str | None:
    """Write the final result files of the journaled run and name them; first, so that a failing stdout
    cannot lose them. A failed write is returned (its one line), not raised: the rows are still printed."""
    from segbench.writing import WriteError

    try:
        if journal is not None and not rows:
            journal.discard()
        elif journal is not None:
            note(f"wrote {', '.join(str(p) for p in journal.finish(rows, markdown))}")
    except WriteError as exc:
        kept = f" and in {journal.path}" if journal is not None and journal.path.exists() else ""
        return f"{exc}; the finished rows are on stdout{kept}"
    return None


def finish(rows: list[Row], stopped: int | None, failure: str | None = None) -> None:
    """Name each failed row (and a failed write) on stderr and set the exit code."""
    failed = [r for r in rows if r.get("error")]
    for row in failed:
        note(f"{row.get('model')}: {row['error']}")
    if failure is not None:
        note(f"error: {failure}")
    if stopped is not None:
        raise typer.Exit(stopped)
    if failed or failure is not None:
        raise typer.Exit(1)
