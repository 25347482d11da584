"""The history store: every result row of a results folder in one SQLite file (``<folder>/segbench.db``).

The store is an index, never the only copy of a row: the journal and the result files are the truth.
Measuring commands add each row the moment it is journaled (`add_row`), so a killed run's rows are in
the store too; `sync` then makes the store equal to the result files of its folder: a new or changed
file replaces the rows of its run ids, and rows whose file is gone (a finished run's journal) leave
with it (other files holding rows of the same runs, such as a merged report's source, are read again). `rebuild` empties the store and syncs, so a deleted or damaged store comes back with the
same rows.

SQLite (the standard library's ``sqlite3``), not DuckDB: it ships with Python, its write-ahead log
lets one writer and many readers work at once and survives a killed process, and a busy timeout
makes concurrent writers wait instead of failing. Rows are stored whole, as the journal's JSON line;
the history's work is per-series arithmetic on a few hundred rows, not analytics over millions.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from segbench.errors import UserError
from segbench.rows.files import full_row, load_rows, to_json_line
from segbench.rows.row import Row

#: The layout of the tables below; a store of a larger version is refused (written by a newer segbench).
STORE_VERSION = 1
STORE_NAME = "segbench.db"
#: Seconds a writer waits for another writer's lock before giving up with a clear error.
BUSY_TIMEOUT_S = 30.0

_TABLES = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rows (id INTEGER PRIMARY KEY, run_id TEXT, source TEXT NOT NULL, row TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS rows_run ON rows (run_id)",
    "CREATE INDEX IF NOT EXISTS rows_source ON rows (source)",
    "CREATE TABLE IF NOT EXISTS files "
    "(path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, run_ids TEXT NOT NULL)",
)


class Store:
    """One folder's store (see the module docstring). ``path=":memory:"`` keeps it in memory.

    :param path: the SQLite file.
    :param timeout: seconds to wait for another writer's lock.
    """

    def __init__(self, path: Path | str, timeout: float = BUSY_TIMEOUT_S) -> None:
        self.path = path
        self.timeout = timeout
        try:
            self.db = sqlite3.connect(path, timeout=timeout, isolation_level=None)
            if path != ":memory:":
                self.db.execute("PRAGMA journal_mode=WAL")
            with self._writing() as db:
                for statement in _TABLES:
                    db.execute(statement)
                found = self.db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
                if found is None:
                    self.db.execute("INSERT INTO meta VALUES ('version', ?)", (str(STORE_VERSION),))
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from None
        if found is not None and int(found[0]) > STORE_VERSION:
            self.db.close()
            raise UserError(
                f"store {path} has layout version {found[0]}, newer than this segbench's {STORE_VERSION}: "
                "upgrade segbench, or delete the store and run `segbench history --rebuild`"
            )

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """A transaction that takes the write lock at once (BEGIN IMMEDIATE), committed on success."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _error(self, exc: sqlite3.DatabaseError) -> UserError:
        if "locked" in str(exc) or "busy" in str(exc):
            return UserError(f"store {self.path} is locked by another writer (waited {self.timeout:g} s); try again")
        return UserError(f"cannot use store {self.path}: {exc} (delete it and run `segbench history --rebuild`)")

    def close(self) -> None:
        self.db.close()

    def add_row(self, row: Row, source: Path) -> None:
        """Add one finished row, journaled in ``source`` (the run's journal)."""
        try:
            with self._writing() as db:
                db.execute(
                    "INSERT INTO rows (run_id, source, row) VALUES (?, ?, ?)",
                    (row.get("run_id"), str(source.resolve()), to_json_line(row)),
                )
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from None

    def add_file(self, path: Path, rows: list[Row]) -> None:
        """The rows of one result file: they replace the store's rows of the same run ids."""
        source = path.resolve()
        stat = source.stat()
        run_ids = sorted({str(r.get("run_id")) for r in rows if r.get("run_id") is not None})
        try:
            with self._writing() as db:
                db.execute("DELETE FROM rows WHERE source = ?", (str(source),))
                db.executemany("DELETE FROM rows WHERE run_id = ?", [(r,) for r in run_ids])
                db.executemany(
                    "INSERT INTO rows (run_id, source, row) VALUES (?, ?, ?)",
                    [(r.get("run_id"), str(source), to_json_line(r)) for r in rows],
                )
                db.execute(
                    "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)",
                    (str(source), stat.st_size, stat.st_mtime_ns, json.dumps(run_ids)),
                )
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from None

    def sync(self, folder: Path) -> None:
        """Make the store hold exactly the rows of ``folder``'s result files (see the module docstring)."""
        present = {p.resolve(): p for p in result_files(folder)}
        try:
            with self._writing() as db:
                self._forget_gone(db, present)
            known = {Path(p): (size, mtime) for p, size, mtime, _ in self.db.execute("SELECT * FROM files")}
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from None
        for resolved, path in sorted(present.items()):
            try:
                stat = resolved.stat()
            except OSError:  # a journal removed as its run finished: the final files hold its rows
                continue
            if known.get(resolved) == (stat.st_size, stat.st_mtime_ns):
                continue
            rows = read_or_warn(path)
            if rows is not None:
                self.add_file(path, rows)

    @staticmethod
    def _forget_gone(db: sqlite3.Connection, present: dict[Path, Path]) -> None:
        """Drop the rows of files that are gone; files that held rows of the same runs are read again
        (a run's rows may be in several files: its final file and a merged report)."""
        sources = {s for (s,) in db.execute("SELECT DISTINCT source FROM rows")}
        sources |= {p for (p,) in db.execute("SELECT path FROM files")}
        gone = [s for s in sources if Path(s) not in present and not Path(s).exists()]
        if not gone:
            return
        marks = ",".join("?" * len(gone))
        lost = {r for (r,) in db.execute(f"SELECT DISTINCT run_id FROM rows WHERE source IN ({marks})", gone)}
        db.execute(f"DELETE FROM rows WHERE source IN ({marks})", gone)
        db.execute(f"DELETE FROM files WHERE path IN ({marks})", gone)
        for path, run_ids in db.execute("SELECT path, run_ids FROM files").fetchall():
            if lost & set(json.loads(run_ids)):
                db.execute("DELETE FROM files WHERE path = ?", (path,))

    def rebuild(self, folder: Path) -> None:
        """Forget every row and file, then `sync`: the store recreated from the result files."""
        try:
            with self._writing() as db:
                db.execute("DELETE FROM rows")
                db.execute("DELETE FROM files")
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from None
        self.sync(folder)

    def rows(self) -> list[Row]:
        """Every row held, each with every schema field (None where it had none)."""
        try:
            found = self.db.execute("SELECT row FROM rows ORDER BY id").fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from None
        return [full_row(json.loads(text), self.path) for (text,) in found]


def result_files(folder: Path) -> list[Path]:
    """The result files of a folder: every ``.json`` and ``.jsonl``, and a ``.csv`` only where no JSON of
    its run is there (the CSV lacks the per-call samples). Reports and other JSON are told apart on reading."""
    files = sorted(p for p in folder.glob("*.json*") if p.suffix in (".json", ".jsonl") and p.is_file())
    stems = {p.name.split(".", 1)[0] for p in files}
    return files + sorted(p for p in folder.glob("*.csv") if p.name.split(".", 1)[0] not in stems)


def read_or_warn(path: Path) -> list[Row] | None:
    """A file's rows, or None after a one-line warning on stderr when it is corrupt or no segbench file."""
    try:
        return load_rows([path])
    except UserError as exc:
        print(f"segbench: warning: skipped {path}: {exc}", file=sys.stderr)
        return None


def journal_row(folder: Path, row: Row, source: Path) -> None:
    """Add a just-journaled row to ``folder``'s store; a store that cannot take it costs a warning, not the run."""
    try:
        store = Store(folder / STORE_NAME)
    except UserError as exc:
        print(f"segbench: warning: row not added to the history store: {exc}", file=sys.stderr)
        return
    try:
        store.add_row(row, source)
    except UserError as exc:
        print(f"segbench: warning: row not added to the history store: {exc}", file=sys.stderr)
    finally:
        store.close()


def read_paths(paths: Iterable[Path], rebuild: bool = False) -> list[Row]:
    """The rows of folders (each through its synced store, rebuilt first with ``rebuild``) and of files.

    A folder that cannot be written (read-only) is read through a store in memory.
    """
    rows: list[Row] = []
    for path in paths:
        if path.is_dir():
            store = Store(path / STORE_NAME if os.access(path, os.W_OK) else ":memory:")
            try:
                (store.rebuild if rebuild else store.sync)(path)
                rows += store.rows()
            finally:
                store.close()
        elif path.is_file():
            rows += read_or_warn(path) or []
        else:
            raise UserError(f"no such result file or folder: {path}")
    return rows
