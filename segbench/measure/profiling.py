"""torch.profiler without its native chatter.

Kineto writes ``USDT: ... profiler_start/stop`` lines straight to file descriptor 2 on every profiled
pass; in a sweep they drown segbench's own progress lines. Python-level redirection cannot catch a
C++ write, so the descriptor itself is pointed at /dev/null while the profiler starts and stops.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

from torch.profiler import profile


@contextlib.contextmanager
def _fd2_silenced() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@contextlib.contextmanager
def quiet_profile(**options: Any) -> Iterator[profile]:
    """``torch.profiler.profile(**options)`` whose start and stop print nothing to stderr."""
    prof = profile(**options)
    with _fd2_silenced():
        prof.__enter__()
    try:
        yield prof
    finally:
        with _fd2_silenced():
            prof.__exit__(*sys.exc_info())
