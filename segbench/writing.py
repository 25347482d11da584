"""The one way segbench writes a file: into a temporary file beside it, renamed over it when complete.

So a reader (``report``, ``compare``, ``--resume``, a team-mate's script) never sees half a file, a
failed or interrupted write (full disk, SIGTERM, a crash) leaves the old file as it was, and a failure
is one line naming the file and the reason (a `UserError`). Files are created as the user's umask
says (``tempfile.mkstemp`` would make every result file 0600, unreadable in a shared folder).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

from segbench.errors import UserError


class WriteError(UserError):
    """A file could not be written: the message names it and says why."""


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; renamed over ``path`` when the block ends without error.

    Any failure inside the block (OSError, a serializer's RuntimeError, Ctrl-C) removes the temporary
    file and leaves ``path`` untouched; an exception other than Ctrl-C/SIGTERM becomes a `WriteError`.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # mode: 0666 less the umask
        yield temporary
        with open(temporary, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except KeyboardInterrupt:
        temporary.unlink(missing_ok=True)
        raise
    except Exception as exc:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise WriteError(f"cannot write {path}: {reason(exc)}") from exc


def write_text(path: str | Path, text: str) -> None:
    """``path`` holds ``text`` (UTF-8), or is as it was (see `replacing`)."""
    write_with(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def write_with(path: str | Path, write: Callable[[Path], object]) -> None:
    """``write(temporary path)`` (``torch.save``, ``savefig``, a trace export), then renamed over ``path``."""
    with replacing(path) as temporary:
        write(temporary)


def reason(exc: BaseException) -> str:
    """Why a write failed, in words: the OS's (``No space left on device``) or the exception's first line."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
