"""Process-wide torch settings a measurement depends on: set for its duration, restored after.

Threads (``torch.set_num_threads``; the runtime gets the same intra-op count), on CUDA the current
device and ``cudnn.benchmark``, on CPU the allocator (`segbench.measure.allocator`); TF32 off for
the fp32 reference (`strict_fp32`) and whether the timed fp32 rows use it (`tf32_in_use`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

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


#: The TF32 switches: (new-API leaf, its parents up to ``torch.backends``; legacy flag's module).
#: PyTorch >= 2.9 has per-backend ``fp32_precision`` strings ("tf32", "ieee", or "none": inherit from the
#: parent); once any of them is set, reading or entering the legacy ``allow_tf32`` flags raises.
_CONV, _MATMUL = "conv", "matmul"


def _chain(kind: str) -> list[Any]:
    """The objects whose ``fp32_precision`` decides ``kind``, leaf first (empty before PyTorch 2.9)."""
    backends = torch.backends
    leaf = getattr(backends.cudnn, "conv", None) if kind == _CONV else getattr(backends.cuda, "matmul", None)
    parent = backends.cudnn if kind == _CONV else backends.cuda
    chain = [obj for obj in (leaf, parent, backends) if obj is not None and hasattr(obj, "fp32_precision")]
    return chain if chain and chain[0] is leaf else []


def tf32_enabled(kind: str) -> bool:
    """Whether fp32 ``kind`` ("conv": cuDNN convolutions, "matmul": CUDA matmuls) may use TF32 now,
    read through the precision API in use: never the legacy flag where it would raise."""
    chain = _chain(kind)
    if chain:  # the first level not "none" decides; all "none" is IEEE fp32
        return next((obj.fp32_precision for obj in chain if obj.fp32_precision != "none"), "ieee") == "tf32"
    return bool(torch.backends.cudnn.allow_tf32 if kind == _CONV else torch.backends.cuda.matmul.allow_tf32)


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """TF32 off for cuDNN convolutions and CUDA matmuls: the fp32 reference every row is compared
    with is true fp32, whatever the timed rows use (their ``tf32`` fields say).

    Only those two switches change (never ``cudnn.flags()``, which resets benchmark and determinism
    too), through the API the process uses, and each is restored to exactly what it was."""
    saved: list[tuple[Any, str, Any]] = []
    for kind in (_CONV, _MATMUL):
        chain = _chain(kind)
        if chain:
            saved.append((chain[0], "fp32_precision", chain[0].fp32_precision))
            chain[0].fp32_precision = "ieee"
        else:
            owner: Any = torch.backends.cudnn if kind == _CONV else torch.backends.cuda.matmul
            saved.append((owner, "allow_tf32", owner.allow_tf32))
            owner.allow_tf32 = False
    try:
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


def tf32_in_use(device: torch.device, precision: str = "fp32") -> tuple[bool | None, bool | None]:
    """(conv, matmul): whether fp32 convolutions and matmuls on ``device`` run in TF32 (PyTorch's
    default on Ampere and later for convolutions); None off CUDA and for fp16/bf16 rows, where TF32
    means nothing."""
    if device.type != "cuda" or precision != "fp32":
        return None, None
    return tf32_enabled(_CONV), tf32_enabled(_MATMUL)
