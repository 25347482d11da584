"""The journal: each finished row appended to ``<command>-<run id>.jsonl`` the moment it is finished.

Every line is flushed and synced, so whatever ends a run (SIGKILL included) loses at most the cell
in progress. Each row is then also added to the folder's history store
(`segbench.rows.store`), which the result files can always rebuild. At the end the final ``.json``/``.csv``/``.md`` files are written atomically under the
same stem and the journal is removed; a run that was killed leaves its journal, which ``report``,
``compare`` and ``--resume`` read. The run id (UTC time plus random hex) names the files, and the
journal is created exclusively, so two runs started in the same second with the same ``--out``
never write the same files.

Under torchrun every rank journals its own rows to ``<command>-<run id>.rank<k>.jsonl``, all ranks
sharing rank 0's run id. At the end rank 0 copies the other ranks' rows into its own journal, each of
them then removes its journal, and rank 0 writes the final files of all the rows and removes every
journal of the run it sees. A resumed run reads all the journals of its run.
"""

from __future__ import annotations

import fcntl
import glob
import os
import re
import secrets
import time
from pathlib import Path
from typing import IO, Any

from segbench.errors import UserError
from segbench.rows.files import load_rows, save_rows, to_json_line
from segbench.rows.row import Row
from segbench.rows.store import journal_row
from segbench.writing import WriteError


def new_run_id() -> str:
    """``20261125-171502-3f9a1c``: when (UTC) and 24 random bits."""
    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


class Journal:
    """Where one command's rows go as they finish (see the module docstring).

    :param out_dir: the folder of the result files (created if missing).
    :param command: the command's name, the first part of every file name.
    :param resume: an earlier result file of the same command (``--resume``): its rows are kept,
        the new ones are appended to its journal, and the final files replace its own.
    :param previous: that file's rows, when the caller has read them already.
    :param rank: under torchrun, this process's rank: its journal is ``<stem>.rank<k>.jsonl``.
    :param run_id: the run id to join (ranks other than 0 take rank 0's); a new one when None.
    """

    def __init__(
        self,
        out_dir: Path,
        command: str,
        resume: Path | None = None,
        previous: list[Row] | None = None,
        rank: int | None = None,
        run_id: str | None = None,
    ) -> None:
        self.previous: list[Row] = [] if resume is None else previous if previous is not None else load_rows([resume])
        self.failed = False
        self.suffix = ".jsonl" if rank is None else f".rank{rank}.jsonl"
        if resume is not None:
            self.stem = stem_of(resume)
            self.run_id = run_id or new_run_id()
            resumed_journals = journal_paths(self.stem)
            self.fresh = self.path not in resumed_journals
            self._stream = self._open(self.path, "a")
            _cut_unfinished_line(self._stream, self.path)
            if not resumed_journals:  # resumed from final files: the journal starts with their rows
                for row in self.previous:
                    self._write(row)
            return
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create output folder {out_dir}: {exc.strerror}") from None
        self.fresh = True
        while True:
            self.run_id = run_id or new_run_id()
            self.stem = out_dir / f"{command}-{self.run_id}"
            try:
                if self.stem.with_suffix(".json").exists():  # a finished run's id is taken too
                    raise FileExistsError(self.stem.with_suffix(".json"))
                self._stream = self._open(self.path, "x")
                break
            except FileExistsError:
                if run_id is not None:
                    raise UserError(f"cannot join run {run_id}: {self.path} exists already") from None

    @staticmethod
    def _open(path: Path, mode: str) -> IO[str]:
        """Open ``path`` and lock it for this run alone (`_lock`)."""
        try:
            stream = path.open(mode)
        except FileExistsError:
            raise
        except OSError as exc:
            raise UserError(f"cannot write results to {path.parent}: {exc.strerror}") from None
        _lock(stream, path)
        return stream

    @property
    def path(self) -> Path:
        return self.stem.with_name(self.stem.name + self.suffix)

    def append(self, row: Row) -> None:
        """Stamp the row with this run's id, write it to the journal, durably, then add it to the history store.

        A failed write (a full disk) raises `WriteError` once; the journal takes no more rows after it.
        """
        row["run_id"] = self.run_id
        if self.failed:
            return
        self._write(row)
        journal_row(self.stem.parent, row, self.path)

    def _write(self, row: Row) -> None:
        try:
            self._stream.write(to_json_line(row) + "\n")
            self._stream.flush()
            os.fsync(self._stream.fileno())
        except OSError as exc:
            self.failed = True
            raise WriteError(f"cannot write {self.path}: {exc.strerror}") from None

    def finish(self, rows: list[Row], markdown: str | None = None) -> list[Path]:
        """Write the final files of ``rows`` (a resumed run's earlier rows included), remove the journal."""
        self._stream.close()
        paths = save_rows(rows, self.stem, markdown)
        self._remove_journals()
        return paths

    def discard(self) -> None:
        """No row at all: leave no files behind."""
        self._stream.close()
        self._remove_journals()

    def extend(self, rows: list[Row]) -> None:
        """Add rows another rank measured in this run (rank 0, before the rank removes its own journal)."""
        for row in rows:
            self._write(row)

    def close(self, remove: bool = False) -> None:
        """Stop writing (a rank other than 0: rank 0 writes the final files).

        ``remove``: rank 0 has the rows, so the journal goes, unless it holds rows of the run it resumes
        (then rank 0 removes it after writing the final files).
        """
        self._stream.close()
        if remove and self.fresh:
            self.path.unlink(missing_ok=True)

    def others(self) -> list[Path]:
        """The journals of this run's other ranks (and of the run it resumes)."""
        return [path for path in journal_paths(self.stem) if path != self.path]

    def _remove_journals(self) -> None:
        for path in {self.path, *journal_paths(self.stem)}:
            path.unlink(missing_ok=True)


def _lock(stream: IO[Any], path: Path) -> None:
    """Hold an exclusive lock on a journal while this run writes it: a second run resuming the same
    file (or a run still writing) is refused with one line instead of both writing and the last one winning.

    The lock goes with the process (``flock``), so a killed run leaves none behind.
    """
    try:
        fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        stream.close()
        raise UserError(f"{path} is being written by another segbench run; wait for it to finish") from None
    except OSError:  # a file system without locks (some network mounts): write unlocked, as before
        return
    try:
        same = os.fstat(stream.fileno()).st_ino == path.stat().st_ino
    except OSError:
        same = False
    if not same:  # the run holding it finished (and removed it) while we waited for the lock
        stream.close()
        raise UserError(f"{path} was finished by another segbench run meanwhile; resume its final files")


def _cut_unfinished_line(stream: IO[str], path: Path) -> None:
    """Drop a last line that a killed run left unfinished (under the lock, before appending), so that
    new rows start on a line of their own instead of making the file unreadable."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        os.ftruncate(stream.fileno(), data.rfind(b"\n") + 1)


def stem_of(path: Path) -> Path:
    """The run's stem of any of its files: ``run-X.json``, ``run-X.jsonl``, ``run-X.rank1.jsonl`` -> ``run-X``."""
    return path.with_name(re.sub(r"(\.rank\d+)?\.(json|jsonl|csv|md)$", "", path.name))


def journal_paths(stem: Path) -> list[Path]:
    """Every journal of a run: one process's ``<stem>.jsonl`` and the ranks' ``<stem>.rank<k>.jsonl``, by rank."""
    pattern = re.compile(re.escape(stem.name) + r"\.rank(\d+)\.jsonl")
    ranks = sorted(
        (int(m[1]), path)
        for path in stem.parent.glob(f"{glob.escape(stem.name)}.rank*.jsonl")
        if (m := pattern.fullmatch(path.name))
    )
    plain = stem.with_name(stem.name + ".jsonl")
    return ([plain] if plain.is_file() else []) + [path for _, path in ranks]


def in_cell_order(rows: list[Row]) -> list[Row]:
    """Rows merged from several ranks in the order of the sweep's cells (rows without a cell first, as they came)."""
    return sorted(rows, key=lambda row: -1 if row.get("cell") is None else row["cell"])
