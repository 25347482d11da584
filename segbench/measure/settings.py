"""Process-wide torch settings a measurement depends on: set for its duration, restored after.

Threads (``torch.set_num_threads``; the runtime gets the same intra-op count), on CUDA the current
device and ``cudnn.benchmark``, on CPU the allocator (`segbench.measure.allocator`); TF32 off for
the fp32 reference (`strict_fp32`) and whether the timed fp32 rows use it (`tf32_in_use`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from segbench.measure.allocator import keep_freed_memory


@contextlib.contextmanager
def measurement_settings(dev: torch.device, threads: int | None) -> Iterator[int]:
    """Set the thread count (and on CUDA the current device and cudnn.benchmark) for one
    measurement; restore all three after. On CPU freed memory is kept in the process from now on
    (`segbench.measure.allocator`)."""
    previous_threads = torch.get_num_threads()
    previous_benchmark = torch.backends.cudnn.benchmark
    previous_device = torch.cuda.current_device() if dev.type == "cuda" else None
    if threads is not None:
        torch.set_num_threads(threads)
    if dev.type == "cuda":
        if dev.index is not None:
            torch.cuda.set_device(dev)
        torch.backends.cudnn.benchmark = True
    else:
        keep_freed_memory()
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous_threads)
        torch.backends.cudnn.benchmark = previous_benchmark
        if previous_device is not None:
            torch.cuda.set_device(previous_device)


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """TF32 off for cuDNN convolutions and CUDA matmuls: the fp32 reference every row is compared
    with is true fp32, whatever the timed rows use (their ``tf32`` field says)."""
    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


def tf32_in_use(device: torch.device) -> bool | None:
    """Whether fp32 convolutions on ``device`` run in TF32 (PyTorch's default on Ampere and later)."""
    return bool(torch.backends.cudnn.allow_tf32) if device.type == "cuda" else None
