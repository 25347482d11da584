"""Render result rows: rich table on the terminal, JSON, CSV, Markdown.

Tables show a chosen subset of columns with readable units; the files always hold every field.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from segbench.foreign import printable
from segbench.rows.files import to_csv, to_json
from segbench.rows.schema import JSON_ONLY_FIELDS, MACS_NOTE, ROW_FIELDS

FORMATS = ("table", "json", "csv", "md")
_MAC_COLUMNS = ("macs_fvcore", "macs_thop", "macs_analytic", "flops", "macs_other")


def render(
    rows: list[dict[str, Any]],
    fmt: str = "table",
    columns: Sequence[str] | None = None,
    title: str | None = None,
    footnotes: Iterable[str] = (),
) -> None:
    """Print rows to stdout in ``fmt``; JSON and CSV carry every field, table and md the ``columns``."""
    if fmt == "json":
        sys.stdout.write(to_json(rows) + "\n")
    elif fmt == "csv":
        sys.stdout.write(to_csv(rows))
    elif fmt == "md":
        sys.stdout.write(to_markdown(rows, columns, title, footnotes) + "\n")
    else:
        print_table(rows, columns, title, footnotes)


def visible_columns(rows: list[dict[str, Any]], columns: Sequence[str] | None) -> list[str]:
    """The requested columns, or every column some row filled (JSON-only ones left out)."""
    if columns is not None:
        return list(columns)
    filled = {k for r in rows for k, v in r.items() if v is not None}
    keys = list(ROW_FIELDS) + [k for r in rows for k in r if k not in ROW_FIELDS]
    return [k for k in dict.fromkeys(keys) if k in filled and k not in JSON_ONLY_FIELDS]


def header_notes(columns: Sequence[str], footnotes: Iterable[str]) -> list[str]:
    """Footnotes, led by the MAC/FLOP convention whenever a MAC column is shown."""
    notes = [MACS_NOTE] if any(c in _MAC_COLUMNS for c in columns) else []
    return notes + [n for n in footnotes if n not in notes]


def is_number(value: Any) -> bool:
    """A value to right-align: int or float, not bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def format_cell(column: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if column in ("miou", "pixel_acc", "output_argmax_agreement"):
            return f"{value:.4f}"
        if column == "output_max_abs_diff":
            return f"{value:.2e}"
        return f"{value:,.3f}" if abs(value) < 1000 else f"{value:,.1f}"
    return str(value)


def to_markdown(
    rows: list[dict[str, Any]],
    columns: Sequence[str] | None = None,
    title: str | None = None,
    footnotes: Iterable[str] = (),
) -> str:
    cols = visible_columns(rows, columns)
    lines = [f"### {markdown_text(title)}", ""] if title else []
    lines.append(markdown_row(cols))
    lines.append("|" + "|".join("---" for _ in cols) + "|")
    for row in rows:
        lines.append(markdown_row([format_cell(c, row.get(c)) for c in cols]))
    notes = header_notes(cols, footnotes)
    if notes:
        lines.append("")
        lines.extend(f"- {markdown_text(note)}" for note in notes)
    return "\n".join(lines)


_MARKDOWN_SPECIAL = re.compile(r"([\\`*\[\]<>|$])")


def markdown_text(text: str) -> str:
    """Outside text (model names, errors, file names) as literal Markdown: no link (``[x](http://...)``),
    no HTML, no emphasis, no math, no table cell break; one line."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def markdown_row(cells: Iterable[Any]) -> str:
    """One Markdown table line of literal cells (`markdown_text`)."""
    return "| " + " | ".join(markdown_text(cell) for cell in cells) + " |"


def print_table(
    rows: list[dict[str, Any]],
    columns: Sequence[str] | None = None,
    title: str | None = None,
    footnotes: Iterable[str] = (),
) -> None:
    cols = visible_columns(rows, columns)
    notes = header_notes(cols, footnotes)
    print_terminal_table(
        [f"{col} (G)" if col in _MAC_COLUMNS else col for col in cols],
        [[_terminal_cell(c, row.get(c)) for c in cols] for row in rows],
        title=title,
        caption="\n".join(notes) or None,
        right=[any(is_number(r.get(col)) for r in rows) for col in cols],
    )


def print_terminal_table(
    headers: Sequence[str],
    cells: Sequence[Sequence[str]],
    title: str | None = None,
    caption: str | None = None,
    right: Sequence[bool] | None = None,
) -> None:
    """The one way a table reaches the terminal (rich). Every text is a plain `rich.text.Text`, never
    markup: model names, errors (``cannot open [/dev/shm/x]``) and file contents are shown as they are,
    whatever brackets they hold, their control characters as escapes."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(
        title=Text(printable(title)) if title else None,
        caption=Text(printable(caption)) if caption else None,
        caption_justify="left",
    )
    for i, header in enumerate(headers):
        table.add_column(Text(header), justify="right" if right and right[i] else "left", overflow="fold")
    for row in cells:
        table.add_row(*(Text(printable(cell)) for cell in row))
    console = Console(highlight=False)
    if not console.is_terminal:  # a file or pipe gets the whole table, not an 80-column fold
        console = Console(width=200, highlight=False)
    console.print(table)


def _terminal_cell(column: str, value: Any) -> str:
    """Like `format_cell`, with MAC counts in units of 10^9 so wide tables fit a terminal."""
    if column in _MAC_COLUMNS and isinstance(value, int):
        return f"{value / 1e9:,.3f}"
    return format_cell(column, value)


# Comparison tables (run, report): model rows and block rows apart, with the columns that tell them apart.
_MODEL_COLUMNS = (
    "params",
    "macs_analytic",
    "macs_fvcore",
    "latency_ms_median",
    "latency_ms_p90",
    "throughput_ips",
    "peak_mem_mb",
    "train_seconds",
    "miou",
    "pixel_acc",
    "error",
)
_BLOCK_COLUMNS = (
    "params",
    "macs_analytic",
    "latency_ms_median",
    "mac_ratio",
    "mac_ratio_theory",
    "latency_speedup",
    "error",
)  # (the ratios are segbench.rows.schema.pair_ratios', on the dsconv row of each pair)
_BLOCK_GEOMETRY = ("block", "kernel_size", "in_channels", "out_channels", "stride")
#: Shown as columns only when rows differ in them; otherwise named once in an "all rows" note.
CONTEXT_COLUMNS = (
    "device",
    "device_name",
    "hostname",
    "height",
    "width",
    "batch_size",
    "precision",
    "channels_last",
    "compiled",
    "cuda_graph",
    "num_classes",
    "threads",
    "dataset",
    "init",
    "train_budget_seconds",
    "train_steps",
    "train_conv_backend",
    "torch_version",
    "cuda_version",
    "git_sha",
    "timestamp",
)


def sections(rows: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]], list[str], list[str]]]:
    """Split rows into a model table and a block table: (title, rows, columns, notes) each.

    Context fields (device, host, input size, precision, dataset, versions) become columns where the
    rows differ in them, so merged runs from several machines stay apart, and one "all rows" note
    where they are all equal, which keeps a single run's table narrow.
    """
    out = []
    for title, kind, lead, base in (
        ("Models", "model", ("model",), _MODEL_COLUMNS),
        ("Blocks", "block", ("model", *_BLOCK_GEOMETRY), _BLOCK_COLUMNS),
    ):
        part = [r for r in rows if (r.get("kind") or "model") == kind]
        if not part:
            continue
        filled = {c for r in part for c, v in r.items() if v is not None}
        varying = [c for c in CONTEXT_COLUMNS if len({str(r.get(c)) for r in part}) > 1]
        measures = [c for c in base if c in filled]
        if all(r.get("macs_analytic") is not None for r in part) and "macs_fvcore" in measures:
            measures.remove("macs_fvcore")  # the exact count is there; fvcore's is in the files
        same = [f"{c}={format_cell(c, part[0].get(c))}" for c in CONTEXT_COLUMNS if c not in varying and c in filled]
        columns = [c for c in lead if c in filled] + varying + measures
        out.append((title, part, columns, ["all rows: " + ", ".join(same)] if same else []))
    return out


def _with_footnotes(rows: list[dict[str, Any]], footnotes: Iterable[str]) -> list[tuple[str, list, list, list]]:
    """`sections`, the run-wide ``footnotes`` added under the last table only."""
    parts = sections(rows)
    footnotes = list(footnotes)
    return [(n, p, c, notes + footnotes if i == len(parts) - 1 else notes) for i, (n, p, c, notes) in enumerate(parts)]


def sections_markdown(rows: list[dict[str, Any]], title: str, footnotes: Iterable[str] = ()) -> str:
    """The `sections` as Markdown tables with their notes; ``footnotes`` under the last one."""
    return "\n\n".join(
        to_markdown(part, columns, f"{title} - {name}", notes)
        for name, part, columns, notes in _with_footnotes(rows, footnotes)
    )


def render_sections(rows: list[dict[str, Any]], fmt: str, title: str, footnotes: Iterable[str] = ()) -> None:
    """Print rows as `sections` (table, md), or every field of every row (json, csv)."""
    if fmt in ("json", "csv"):
        render(rows, fmt)
    elif fmt == "md":
        sys.stdout.write(sections_markdown(rows, title, footnotes) + "\n")
    else:
        for name, part, columns, notes in _with_footnotes(rows, footnotes):
            print_table(part, columns, f"{title} - {name}", notes)
