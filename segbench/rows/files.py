"""Result files: JSON (every field), CSV (every flat field), and reading either back."""

from __future__ import annotations

import csv
import io
import json
import math
import time
from pathlib import Path
from typing import Any, Iterable

from segbench.errors import UserError
from segbench.rows.schema import JSON_ONLY_FIELDS, ROW_FIELDS


def save_rows(
    rows: list[dict[str, Any]], out_dir: str | Path, command: str, markdown: str | None = None
) -> list[Path]:
    """Write ``<command>-<timestamp>.json`` and ``.csv`` (and ``.md`` when given) under ``out_dir``."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {out}: {exc.strerror}") from None
    stem = out / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"
    paths = [stem.with_suffix(".json"), stem.with_suffix(".csv")]
    paths[0].write_text(to_json(rows) + "\n")
    paths[1].write_text(to_csv(rows))
    if markdown is not None:
        paths.append(stem.with_suffix(".md"))
        paths[2].write_text(markdown + "\n")
    return paths


def to_csv(rows: list[dict[str, Any]]) -> str:
    """CSV of every field but the JSON-only ones (per-class lists, counter notes)."""
    buffer = io.StringIO()
    fields = [f for f in _columns(rows) if f not in JSON_ONLY_FIELDS]
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(_plain(rows))
    return buffer.getvalue()


def to_json(rows: list[dict[str, Any]]) -> str:
    """Strict JSON (NaN becomes null) so any JSON parser reads the output."""
    return json.dumps(_plain(rows), indent=1, allow_nan=False)


def load_rows(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Read rows back from JSON or CSV result files (CSV values are typed back to numbers)."""
    rows: list[dict[str, Any]] = []
    for path in map(Path, paths):
        if not path.is_file():
            raise UserError(f"result file not found: {path}")
        try:
            if path.suffix == ".json":
                data = json.loads(path.read_text())
                if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
                    raise ValueError("expected a JSON array of result rows")
                rows.extend(data)
            elif path.suffix == ".csv":
                with path.open(newline="") as fh:
                    rows.extend({k: _parse_cell(v) for k, v in r.items()} for r in csv.DictReader(fh))
            else:
                raise ValueError("accepted: .json or .csv result files")
        except (ValueError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read result file {path}: {exc}") from None
    return [{**dict.fromkeys(ROW_FIELDS), **r} for r in rows]


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    extra = [k for r in rows for k in r if k not in ROW_FIELDS]
    return list(ROW_FIELDS) + list(dict.fromkeys(extra))


def _parse_cell(text: str) -> Any:
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in (sorted(value) if isinstance(value, (set, frozenset)) else value)]
    if hasattr(value, "item"):  # numpy / torch scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
