"""Running code segbench does not own (plugins' builders, hooks, runtimes' checks): whatever it does to
the process, the run goes on as before.

Its prints go to stderr (``--format json`` on stdout must parse), and a change of the working directory
is undone when it returns (relative paths the user gave keep their meaning).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def foreign_code() -> Iterator[None]:
    """Run the block as plugin code: stdout to stderr, the working directory restored afterwards."""
    here = os.getcwd()
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        if os.getcwd() != here:
            os.chdir(here)


def one_line(exc: BaseException) -> str:
    """``Type: first line`` of what a plugin raised, for a warning or a table cell."""
    text = text_of(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


#: Control characters but newline and tab: in a message they could move the cursor, clear the screen or
#: recolour the terminal (``\x1b[2J``), or hide the text before a carriage return.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def text_of(exc: BaseException) -> str:
    """What an exception from outside says, safe to show: its ``str`` (or a note when even that raises),
    control characters written as escapes (``\\x1b``)."""
    try:
        text = str(exc)
    except Exception:  # an exception whose __str__ raises must still be reported
        text = f"<{type(exc).__name__} whose message cannot be shown>"
    return printable(text)


def printable(text: str) -> str:
    """``text`` with its control characters (but newline and tab) written as escapes: ``\\x1b[2J``."""
    return _CONTROL.sub(lambda m: repr(m[0])[1:-1], text)
