"""The journal: each finished row appended to ``<command>-<run id>.jsonl`` the moment it is finished.

Every line is flushed and synced, so whatever ends a run (SIGKILL included) loses at most the cell
in progress. At the end the final ``.json``/``.csv``/``.md`` files are written atomically under the
same stem and the journal is removed; a run that was killed leaves its journal, which ``report``,
``compare`` and ``--resume`` read. The run id (UTC time plus random hex) names the files, and the
journal is created exclusively, so two runs started in the same second with the same ``--out``
never write the same files.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any, TextIO

from segbench.errors import UserError
from segbench.rows.files import load_rows, save_rows, to_json_line

Row = dict[str, Any]


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
    """

    def __init__(
        self, out_dir: Path, command: str, resume: Path | None = None, previous: list[Row] | None = None
    ) -> None:
        self.previous: list[Row] = [] if resume is None else previous if previous is not None else load_rows([resume])
        if resume is not None:
            self.stem = resume.with_suffix("")
            self.run_id = new_run_id()
            self._stream = self._open(self.stem.with_suffix(".jsonl"), "a")
            if self._stream.tell() == 0:  # resumed from final files: the journal starts with their rows
                for row in self.previous:
                    self._write(row)
            return
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create output folder {out_dir}: {exc.strerror}") from None
        while True:
            self.run_id = new_run_id()
            self.stem = out_dir / f"{command}-{self.run_id}"
            try:
                self._stream = self._open(self.stem.with_suffix(".jsonl"), "x")
                break
            except FileExistsError:
                continue

    @staticmethod
    def _open(path: Path, mode: str) -> TextIO:
        try:
            return path.open(mode)
        except FileExistsError:
            raise
        except OSError as exc:
            raise UserError(f"cannot write results to {path.parent}: {exc.strerror}") from None

    @property
    def path(self) -> Path:
        return self.stem.with_suffix(".jsonl")

    def append(self, row: Row) -> None:
        """Stamp the row with this run's id and write it to the journal, durably."""
        row["run_id"] = self.run_id
        self._write(row)

    def _write(self, row: Row) -> None:
        self._stream.write(to_json_line(row) + "\n")
        self._stream.flush()
        os.fsync(self._stream.fileno())

    def finish(self, rows: list[Row], markdown: str | None = None) -> list[Path]:
        """Write the final files of ``rows`` (a resumed run's earlier rows included), remove the journal."""
        self._stream.close()
        paths = save_rows(rows, self.stem, markdown)
        self.path.unlink(missing_ok=True)
        return paths

    def discard(self) -> None:
        """No row at all: leave no files behind."""
        self._stream.close()
        self.path.unlink(missing_ok=True)

