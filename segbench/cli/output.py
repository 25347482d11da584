"""What every command does with a runner's rows: show progress, journal each row as it finishes,
stop cleanly on Ctrl-C or SIGTERM keeping the finished rows, render them on stdout, write the final
result files, and set the exit code."""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import typer

from segbench.output.tables import render

if TYPE_CHECKING:
    from segbench.rows.journal import Journal

EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM
Row = dict[str, Any]


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, a job scheduler): stops the run like Ctrl-C does."""


def note(text: str) -> None:
    """A progress or status line: stderr, so stdout stays the command's table or JSON."""
    print(f"segbench: {text}", file=sys.stderr, flush=True)


class Progress:
    """A spinner on stderr showing ``model: stage`` as runners report it (their ``progress`` callback).

    ``done`` as the stage prints how long the model took.
    """

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import Progress as Bar
        from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

        self.bar = Bar(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                       console=Console(stderr=True), transient=True)  # fmt: skip
        self.task = self.bar.add_task("starting", total=None)
        self.started: dict[str, float] = {}

    def __enter__(self) -> "Progress":
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


def resumed_rows(resume: Path | None, command: str) -> list[Row]:
    """The rows of ``--resume FILE`` (checked to be this command's results), or none."""
    from segbench.errors import UserError
    from segbench.rows.files import load_rows

    if resume is None:
        return []
    if not resume.is_file():
        raise UserError(f"--resume {resume}: result file not found")
    if not resume.name.startswith(f"{command}-"):
        raise UserError(f"--resume {resume}: not a result file of segbench {command} ({command}-*.json)")
    return load_rows([resume])


def open_journal(out_dir: Path | None, command: str, resume: Path | None, previous: list[Row]) -> "Journal | None":
    """The journal of this run: under --out, or the resumed file's; None with --no-save.

    Opened only once every option has been checked, so bad input writes nothing.
    """
    from segbench.rows.journal import Journal

    if resume is not None:
        return Journal(resume.parent, command, resume, previous)
    return None if out_dir is None else Journal(out_dir, command)


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
    journal: "Journal | None",
    on_row: Callable[[Row], str | None] | None = None,
) -> tuple[list[Row], int | None]:
    """Gather a runner's rows as they finish, journaling each, with the ``progress`` display running.

    ``on_row`` may return a line to print for each finished row. Ctrl-C and SIGTERM keep the finished
    rows. Returns (rows, the exit code of an interruption or None); a resumed run's earlier rows come first.
    """
    done: list[Row] = list(journal.previous) if journal is not None else []
    try:
        with _sigterm_stops(), progress:
            for row in rows:
                if journal is not None:
                    journal.append(row)
                done.append(row)
                line = on_row(row) if on_row else None
                if line:
                    progress.print(f"segbench: {line}")
    except KeyboardInterrupt as stop:
        code = EXIT_TERMINATED if isinstance(stop, Terminated) else EXIT_INTERRUPTED
        note(f"{'terminated' if code == EXIT_TERMINATED else 'interrupted'}: keeping the {len(done)} finished row(s)")
        return done, code
    return done, None


def emit(
    rows: list[Row],
    fmt: str,
    journal: "Journal | None",
    columns: Sequence[str] | None = None,
    title: str | None = None,
    footnotes: Iterable[str] = (),
    stopped: int | None = None,
) -> None:
    """Render rows on stdout, write the final files, and exit: 130/143 when stopped, 1 on a row error."""
    from segbench.output.tables import to_markdown

    render(rows, fmt, columns=columns, title=title, footnotes=footnotes)
    save(rows, journal, to_markdown(rows, columns, title, footnotes))
    finish(rows, stopped)


def save(rows: list[Row], journal: "Journal | None", markdown: str | None) -> None:
    """Write the final result files of the journaled run and name them."""
    if journal is not None and not rows:
        journal.discard()
    elif journal is not None:
        note(f"wrote {', '.join(str(p) for p in journal.finish(rows, markdown))}")


def finish(rows: list[Row], stopped: int | None) -> None:
    """Name each failed row on stderr and set the exit code."""
    failed = [r for r in rows if r.get("error")]
    for row in failed:
        note(f"{row.get('model')}: {row['error']}")
    if stopped is not None:
        raise typer.Exit(stopped)
    if failed:
        raise typer.Exit(1)
