"""torch.profiler without its native chatter.

Kineto writes ``USDT: ... profiler_start/stop`` lines straight to file descriptor 2 on every profiled
pass; in a sweep they drown segbench's own progress lines. Python-level redirection cannot catch a
C++ write, so the descriptor itself is pointed at /dev/null while the profiler starts and stops.

`write_trace` profiles a few more calls of a PyTorch session, after its timed loop (never during it),
into a Chrome trace.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

TRACE_ITERS = 3


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


def write_trace(call: Callable[[], Any], dev: torch.device, path: Path) -> Path:
    """Profile ``TRACE_ITERS`` calls with torch.profiler and write ``path`` (Chrome trace)."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    path.parent.mkdir(parents=True, exist_ok=True)
    with quiet_profile(activities=activities, record_shapes=True) as prof:
        for _ in range(TRACE_ITERS):
            call()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
    prof.export_chrome_trace(str(path))
    return path
