"""Keep freed memory in the process while measuring on CPU (glibc), so the allocator is not what is timed.

glibc hands out every block above its mmap threshold (128 KiB, raised at run time to at most 32 MiB) as
fresh pages from the kernel and gives them back on free. PyTorch's CPU allocator calls malloc per tensor,
so at 1024x2048 each of Fast-SCNN's 64 MiB activations is page-faulted in again on every call, and the
time depends on what the process ran before, because the threshold moves. ONNX Runtime and OpenVINO
keep their own arenas, so without this the comparison would time PyTorch's page faults (docs/memory.md
gives the measured effect). The price: the process keeps its peak memory until it
exits, and the heap may grow by a few blocks before freed ones line up for reuse (PyTorch asks for
aligned blocks, which a freed block of exactly the same size cannot serve when something small was
placed after it): the warm-up calls absorb that.
"""

from __future__ import annotations

import ctypes
import functools

#: mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1


def glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (whose mallopt this module speaks), else None."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
    except (OSError, AttributeError):
        return None
    return libc


@functools.cache
def keep_freed_memory() -> bool:
    """Serve large blocks from the heap and never trim it; applied once per process.

    :returns: whether the setting is in effect (False where the C library is not glibc).
    """
    libc = glibc()
    return libc is not None and bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _INT_MAX))
