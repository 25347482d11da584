"""One self-contained HTML report: the tables and the PNG plots embedded as base64, no external files.

The page is interactive with no network at view time: the script below is embedded in the page (plain
JavaScript, no library). Tables sort by a click on a header (numbers as numbers) and filter by the text
typed above them, and scroll sideways instead of running off the page; trend plots are drawn as SVG
from the series' data, show a run's row on hover, zoom with the mouse wheel and reset on double-click.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from segbench.output.tables import format_cell, header_notes, is_number, visible_columns

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; white-space: nowrap; }
th { background: #f0f0f0; cursor: pointer; user-select: none; position: sticky; top: 0; }
th[aria-sort=ascending]::after { content: " \\25B2"; }
th[aria-sort=descending]::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:hover { background: #eef4ff; }
input.filter { margin-top: 0.5em; padding: 0.2em 0.4em; width: 20em; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
figure.trend { margin: 1em 0; max-width: 60em; }
figure.trend svg { width: 100%; height: auto; border: 1px solid #ddd; background: #fff; }
figure.trend figcaption { font-size: 0.9em; overflow-wrap: anywhere; }
.tip { position: fixed; pointer-events: none; background: #fffbe6; border: 1px solid #aaa; padding: 0.3em 0.5em;
  font-size: 0.8em; white-space: pre; display: none; z-index: 10; }
.notes { color: #555; font-size: 0.85em; }
"""
#: The page's script (sorting, filtering, trend plots), embedded in every page.
SCRIPT = Path(__file__).with_name("webpage.js")


def table_html(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str] | None = None,
    title: str | None = None,
    footnotes: Iterable[str] = (),
) -> str:
    """An HTML table of ``rows`` with the same columns, cell formatting and notes as the terminal table."""
    cols = visible_columns(list(rows), columns)
    parts = [f"<h2>{html.escape(title)}</h2>"] if title else []
    parts.append("<input class=filter type=search placeholder='filter rows' aria-label='filter rows'>")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    parts.append(f"<div class=scroll><table class=sortable><thead><tr>{head}</tr></thead><tbody>")
    for row in rows:
        cells = []
        for col in cols:
            value = row.get(col)
            if is_number(value):
                cells.append(f"<td class=num data-value='{value!r}'>{html.escape(format_cell(col, value))}</td>")
            else:
                cells.append(f"<td>{html.escape(format_cell(col, value))}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table></div>")
    notes = header_notes(cols, footnotes)
    if notes:
        parts.append("<ul class=notes>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    return "\n".join(parts)


def image_html(path: Path) -> str:
    """A PNG inlined as a data URI, captioned with its file name."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    name = html.escape(path.stem.replace("_", " "))
    return f'<figure><img alt="{name}" src="data:image/png;base64,{data}"><figcaption>{name}</figcaption></figure>'


def trend_html(title: str, metric: str, runs: Sequence[dict[str, Any]], changes: Sequence[dict[str, Any]]) -> str:
    """A trend plot, drawn by the page's script: each run's value with its interval and row, the change points.

    :param runs: per run ``value``, ``low`` and ``high`` (or None) and ``row`` (shown on hover).
    :param changes: per change point ``index`` (the first run after it), ``ratio`` and ``regression``.
    """
    data = json.dumps({"metric": metric, "runs": runs, "changes": changes}, allow_nan=False, default=str)
    return (
        f"<figure class=trend><script type='application/json'>{_script_safe(data)}</script>"
        f"<figcaption>{html.escape(title)}</figcaption></figure>"
    )


def _script_safe(text: str) -> str:
    """JSON that cannot end its <script> element early."""
    return text.replace("</", "<\\/")


def page(title: str, sections: Iterable[str]) -> str:
    """Wrap HTML sections into a complete document, with the page's script embedded."""
    body = "\n".join(sections)
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head>\n<body>\n<h1>{html.escape(title)}</h1>\n{body}\n"
        f"<div class=tip></div><script>{SCRIPT.read_text()}</script>\n</body></html>\n"
    )
