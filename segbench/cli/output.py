"""What every command does with its rows: render them on stdout and save them under --out."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

import typer

from segbench.report import render
from segbench.results import save_rows


def emit(
    rows: list[dict[str, Any]],
    fmt: str,
    command: str,
    out_dir: Path | None,
    columns: Sequence[str] | None = None,
    title: str | None = None,
    footnotes: Iterable[str] = (),
) -> None:
    """Render rows on stdout and save them; exit 1 when any row records a failed measurement."""
    render(rows, fmt, columns=columns, title=title, footnotes=footnotes)
    if out_dir is not None and rows:
        paths = save_rows(rows, out_dir, command)
        print(f"segbench: wrote {', '.join(str(p) for p in paths)}", file=sys.stderr)
    failed = [r for r in rows if r.get("error")]
    for row in failed:
        print(f"segbench: {row.get('model')}: {row['error']}", file=sys.stderr)
    if failed:
        raise typer.Exit(1)
