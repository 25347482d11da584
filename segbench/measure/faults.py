"""What every measurement does when a cell fails: one line for the row, and the memory given back."""

from __future__ import annotations

import gc

import torch

from segbench.foreign import text_of

OOM = "out of memory"


class CellError(RuntimeError):
    """A failure whose message is already the row's one-line reason."""


class VariantUnavailable(CellError):
    """The requested variant cannot run on this device (the row records the message)."""


class BuildError(CellError):
    """A spec's builder raised: every cell of that model reports it."""


def error_reason(exc: BaseException) -> str:
    """One line for a row's ``error``: ``out of memory`` for any OOM, else the exception's first line
    (safe to show: `segbench.foreign.text_of`)."""
    text = text_of(exc).strip()
    if isinstance(exc, CellError):
        return text
    if (
        isinstance(exc, torch.cuda.OutOfMemoryError)
        or "out of memory" in text.lower()
        or ("can't allocate memory" in text.lower())
    ):
        return OOM
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def release_memory(device: str | torch.device) -> None:
    """Free what a failed or finished cell left behind (after an OOM, before the next cell)."""
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def device_lost(device: str | torch.device) -> str | None:
    """Give back a failed cell's memory; None, or why the device cannot be used any more (a sticky
    CUDA error: an illegal address, a device-side assert, an ECC error fails every later CUDA call,
    ``empty_cache`` and ``synchronize`` included)."""
    try:
        release_memory(device)
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)
    except Exception as exc:
        return error_reason(exc)
    return None
