"""What every command does with its rows: collect them (Ctrl-C keeps the finished ones), render them
on stdout, save them under --out, and set the exit code."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import typer

from segbench.report import render
from segbench.results import save_rows

EXIT_INTERRUPTED = 130


def note(text: str) -> None:
    """A progress or status line: stderr, so stdout stays the command's table or JSON."""
    print(f"segbench: {text}", file=sys.stderr, flush=True)


def collect(
    rows: Iterable[dict[str, Any]], on_row: Callable[[dict[str, Any]], None] | None = None
) -> tuple[list[dict[str, Any]], bool]:
    """Gather rows as they finish; on Ctrl-C keep the finished ones. Returns (rows, interrupted)."""
    done: list[dict[str, Any]] = []
    try:
        for row in rows:
            done.append(row)
            if on_row:
                on_row(row)
    except KeyboardInterrupt:
        note(f"interrupted: keeping the {len(done)} finished row(s)")
        return done, True
    return done, False


def emit(
    rows: list[dict[str, Any]],
    fmt: str,
    command: str,
    out_dir: Path | None,
    columns: Sequence[str] | None = None,
    title: str | None = None,
    footnotes: Iterable[str] = (),
    interrupted: bool = False,
) -> None:
    """Render rows on stdout and save them; exit 130 after Ctrl-C, 1 when a row records a failure."""
    render(rows, fmt, columns=columns, title=title, footnotes=footnotes)
    if out_dir is not None and rows:
        note(f"wrote {', '.join(str(p) for p in save_rows(rows, out_dir, command))}")
    finish(rows, interrupted)


def finish(rows: list[dict[str, Any]], interrupted: bool) -> None:
    """Name each failed row on stderr and set the exit code."""
    failed = [r for r in rows if r.get("error")]
    for row in failed:
        note(f"{row.get('model')}: {row['error']}")
    if interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)
    if failed:
        raise typer.Exit(1)
