"""Result files: JSON (every field), CSV (every flat field), the JSON-lines journal, reading all back.

Non-finite numbers are written as the strings ``"inf"``, ``"-inf"`` and ``"nan"`` (strict JSON has no
literal for them, and null means "not measured"); reading turns them back into floats.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from segbench._version import __version__
from segbench.errors import UserError
from segbench.rows.schema import BREAKDOWN_FIELDS, JSON_ONLY_FIELDS, ROW_FIELDS, SCHEMA_VERSION, TEXT_FIELDS

SUFFIXES = (".json", ".jsonl", ".csv")
_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def save_rows(rows: list[dict[str, Any]], stem: Path, markdown: str | None = None) -> list[Path]:
    """Write ``stem.json`` and ``stem.csv`` (and ``stem.md`` when given), each atomically."""
    paths = [stem.with_suffix(".json"), stem.with_suffix(".csv")]
    write_atomic(paths[0], to_json(rows) + "\n")
    write_atomic(paths[1], to_csv(rows))
    if markdown is not None:
        paths.append(stem.with_suffix(".md"))
        write_atomic(paths[2], markdown + "\n")
    return paths


def write_atomic(path: Path, text: str) -> None:
    """Write a temporary file beside ``path`` and rename it over ``path``: readers never see half a file."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def to_json_line(row: dict[str, Any]) -> str:
    """One row as one line of strict JSON (the journal's format)."""
    return json.dumps(_plain(row), allow_nan=False)


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
    """Read rows back from result files: ``.json``, ``.csv`` or a run's ``.jsonl`` journal.

    CSV cells are typed back to numbers; a journal's last line, cut short by a kill, is left out.
    Rows of an older schema are migrated to ``SCHEMA_VERSION`` (a row without ``schema_version`` is
    version 1). A UserError for: a file that holds no segbench rows (no ``model`` and
    ``segbench_version`` fields), a row of a newer schema, and a field this schema does not know or
    lacks (a renamed field must not silently read as not measured).
    """
    rows: list[dict[str, Any]] = []
    for path in map(Path, paths):
        if not path.is_file():
            raise UserError(f"result file not found: {path}")
        try:
            found = _read(path)
        except (ValueError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read result file {path}: {exc}") from None
        if any(not {"model", "segbench_version"} <= set(r) for r in found):
            raise UserError(f"{path} holds no segbench result rows (no model and segbench_version fields)")
        rows.extend(full_row(r, path) for r in found)
    return rows


def full_row(raw: dict[str, Any], source: str | Path) -> dict[str, Any]:
    """A row read back from ``source`` (a result file, the store) in today's schema with every field:
    non-finite numbers as floats, older versions migrated; a UserError for one this segbench cannot read."""
    path = Path(source)
    return _checked(_migrated(_typed(raw), path), path)


def _migrated(row: dict[str, Any], path: Path) -> dict[str, Any]:
    """The row in today's schema, or a UserError for a version this segbench cannot read."""
    version = 1 if row.get("schema_version") is None else row["schema_version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise UserError(f"{path}: schema_version {version!r} is not a version number")
    if version > SCHEMA_VERSION:
        raise UserError(
            f"{path} has result rows of schema version {version}; this segbench {__version__} reads "
            f"versions up to {SCHEMA_VERSION}: upgrade segbench"
        )
    if version == 1:  # before schema_version and timing_protocol: the protocol was not recorded
        row = {**dict.fromkeys(ROW_FIELDS), **row, "schema_version": 2}
    return row


def _checked(row: dict[str, Any], path: Path) -> dict[str, Any]:
    """A row of today's schema with every field, or a UserError naming the fields it lacks or does not know."""
    unknown = [k for k in row if k not in ROW_FIELDS and k not in BREAKDOWN_FIELDS]
    missing = [k for k in ROW_FIELDS if k not in row and not (path.suffix == ".csv" and k in JSON_ONLY_FIELDS)]
    if unknown or missing:
        problems = [f"unknown field(s) {', '.join(unknown)}"] if unknown else []
        problems += [f"missing field(s) {', '.join(missing)}"] if missing else []
        raise UserError(
            f"{path}: rows of schema version {SCHEMA_VERSION} with {'; '.join(problems)} "
            "(a renamed field? the file was edited, or written by another segbench)"
        )
    return {**dict.fromkeys(ROW_FIELDS), **row}


def _read(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ValueError("expected a JSON array of result rows")
        return data
    if path.suffix == ".jsonl":
        text = path.read_text()
        lines = text.splitlines()
        rows = []
        for number, line in enumerate(lines, start=1):
            try:
                rows.append(json.loads(line))
            except ValueError:
                if number < len(lines) or text.endswith("\n"):  # only an unfinished last line may be cut
                    raise ValueError(f"line {number} is not a JSON row") from None
        return rows
    if path.suffix == ".csv":
        with path.open(newline="") as fh:
            return [{k: _parse_cell(k, v) for k, v in r.items()} for r in csv.DictReader(fh)]
    raise ValueError(f"accepted: {', '.join(SUFFIXES)} result files")


def _typed(row: dict[str, Any]) -> dict[str, Any]:
    """Non-finite numbers, written as strings, back to floats (text fields stay text)."""
    return {
        k: _NON_FINITE[v] if k not in TEXT_FIELDS and isinstance(v, str) and v in _NON_FINITE else v
        for k, v in row.items()
    }


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    extra = [k for r in rows for k in r if k not in ROW_FIELDS]
    return list(ROW_FIELDS) + list(dict.fromkeys(extra))


def _parse_cell(field: str, text: str) -> Any:
    if text == "":
        return None
    if field in TEXT_FIELDS:
        return text
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
        return "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
