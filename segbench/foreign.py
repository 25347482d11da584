"""Running code segbench does not own (plugins' builders, hooks, runtimes' checks): whatever it does to
the process, the run goes on as before.

Its prints go to stderr (``--format json`` on stdout must parse), and a change of the working directory
is undone when it returns (relative paths the user gave keep their meaning).
"""

from __future__ import annotations

import contextlib
import os
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
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
