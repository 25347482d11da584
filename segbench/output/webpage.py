"""One self-contained HTML report: the tables and the PNG plots embedded as base64, no external files."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from segbench.output.tables import format_cell, header_notes, is_number, visible_columns

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
.notes { color: #555; font-size: 0.85em; }
"""


def table_html(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str] | None = None,
    title: str | None = None,
    footnotes: Iterable[str] = (),
) -> str:
    """An HTML table of ``rows`` with the same columns, cell formatting and notes as the terminal table."""
    cols = visible_columns(list(rows), columns)
    parts = [f"<h2>{html.escape(title)}</h2>"] if title else []
    parts.append("<table><thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr></thead><tbody>")
    for row in rows:
        cells = []
        for col in cols:
            value = row.get(col)
            cells.append(f"<td{' class=num' if is_number(value) else ''}>{html.escape(format_cell(col, value))}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table>")
    notes = header_notes(cols, footnotes)
    if notes:
        parts.append("<ul class=notes>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    return "\n".join(parts)


def image_html(path: Path) -> str:
    """A PNG inlined as a data URI, captioned with its file name."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    name = html.escape(path.stem.replace("_", " "))
    return f'<figure><img alt="{name}" src="data:image/png;base64,{data}"><figcaption>{name}</figcaption></figure>'


def page(title: str, sections: Iterable[str]) -> str:
    """Wrap HTML sections into a complete document."""
    body = "\n".join(sections)
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head>\n<body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )
