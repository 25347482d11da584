"""What every command does with a runner's rows: show progress, collect them (Ctrl-C keeps the
finished ones), render them on stdout, save them under --out, and set the exit code."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import typer

from segbench.output.tables import render
from segbench.rows.files import save_rows

EXIT_INTERRUPTED = 130
Row = dict[str, Any]


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


def collect(
    rows: Iterator[Row], progress: Progress, on_row: Callable[[Row], str | None] | None = None
) -> tuple[list[Row], bool]:
    """Gather a runner's rows as they finish, with its ``progress`` display running meanwhile.

    ``on_row`` may return a line to print for each finished row. On Ctrl-C the finished rows are
    kept. Returns (rows, interrupted).
    """
    done: list[Row] = []
    try:
        with progress:
            for row in rows:
                done.append(row)
                line = on_row(row) if on_row else None
                if line:
                    progress.print(f"segbench: {line}")
    except KeyboardInterrupt:
        note(f"interrupted: keeping the {len(done)} finished row(s)")
        return done, True
    return done, False


def emit(
    rows: list[Row],
    fmt: str,
    command: str,
    out_dir: Path | None,
    columns: Sequence[str] | None = None,
    title: str | None = None,
    footnotes: Iterable[str] = (),
    interrupted: bool = False,
) -> None:
    """Render rows on stdout and save them; exit 130 after Ctrl-C, 1 when a row records a failure."""
    from segbench.output.tables import to_markdown

    render(rows, fmt, columns=columns, title=title, footnotes=footnotes)
    save(rows, command, out_dir, to_markdown(rows, columns, title, footnotes))
    finish(rows, interrupted)


def save(rows: list[Row], command: str, out_dir: Path | None, markdown: str | None) -> None:
    """Write the result files (when there are rows and --no-save was not given) and name them."""
    if out_dir is not None and rows:
        note(f"wrote {', '.join(str(p) for p in save_rows(rows, out_dir, command, markdown))}")


def finish(rows: list[Row], interrupted: bool) -> None:
    """Name each failed row on stderr and set the exit code."""
    failed = [r for r in rows if r.get("error")]
    for row in failed:
        note(f"{row.get('model')}: {row['error']}")
    if interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)
    if failed:
        raise typer.Exit(1)
