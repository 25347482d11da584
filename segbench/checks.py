"""Checks of option values, each defined once: the runners' configs and the primitives call them.

Each raises UserError naming what was wrong and what is accepted; the CLI turns it into exit code 2.
Parsing text (``"512x1024"``, ``"1,8"``) is the CLI's job, which checks only that the text parses;
these check the parsed values, once, when a config is built.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from segbench.errors import UserError

PRECISION_NAMES = ("fp32", "fp16", "bf16", "int8")


def check_positive(value: int | None, what: str) -> int | None:
    """None (the default) or an integer >= 1."""
    if value is not None and value < 1:
        raise UserError(f"bad {what} {value}: expected an integer >= 1")
    return value


def check_nonnegative(value: int | None, what: str) -> int | None:
    """None (the default) or an integer >= 0."""
    if value is not None and value < 0:
        raise UserError(f"bad {what} {value}: expected an integer >= 0")
    return value


def check_all_positive(values: Iterable[int], what: str) -> list[int]:
    """A non-empty list of integers >= 1 (batch sizes, channel counts)."""
    values = list(values)
    if not values:
        raise UserError(f"no {what} given: expected integers >= 1, e.g. 1,8")
    for value in values:
        if value < 1:
            raise UserError(f"bad {what} '{value}': expected integers >= 1, e.g. 1,8")
    return values


#: The largest side of an input accepted: 16384 (one 3 x 16384 x 16384 fp32 image is 3 GiB already).
MAX_SIDE = 16384
#: Seeds: what every generator segbench seeds (torch, numpy, random) accepts.
SEED_RANGE = (0, 2**32 - 1)
#: Learning rates: above this, SGD with momentum diverges for any network here.
MAX_LR = 10.0


def check_sizes(sizes: Sequence[tuple[int, int]] | None) -> list[tuple[int, int]] | None:
    """Input sizes (H, W) with sides from 1 to `MAX_SIDE`; None means each model's own."""
    if sizes is None:
        return None
    for size in sizes:
        if len(size) != 2 or min(size) < 1 or max(size) > MAX_SIDE:
            raise UserError(
                f"bad size '{'x'.join(map(str, size))}': expected HxW with integers from 1 to {MAX_SIDE}, e.g. 512x1024"
            )
    return [(height, width) for height, width in sizes]


def check_seed(seed: int) -> int:
    """A seed every generator takes: an integer in `SEED_RANGE`."""
    low, high = SEED_RANGE
    if isinstance(seed, bool) or not isinstance(seed, int) or not low <= seed <= high:
        raise UserError(f"bad seed {seed}: expected an integer from {low} to {high}")
    return seed


def check_lr(lr: float | None) -> float | None:
    """None (the recipe's) or a finite learning rate in (0, `MAX_LR`]: inf or 1e30 trains nothing."""
    if lr is not None and not (isinstance(lr, (int, float)) and 0 < lr <= MAX_LR):
        raise UserError(f"bad learning rate {lr}: expected a number > 0 and at most {MAX_LR:g}, e.g. 0.02")
    return lr


def check_precisions(precisions: Sequence[str]) -> list[str]:
    """A non-empty list of fp32, fp16, bf16, int8."""
    bad = [p for p in precisions if p not in PRECISION_NAMES]
    if bad or not precisions:
        raise UserError(f"bad precision {','.join(bad) or repr('')}: accepted {', '.join(PRECISION_NAMES)}")
    return list(precisions)


def check_timing(
    warmup: int | None,
    iters: int | None,
    threads: int | None,
    budget_s: float | None = None,
    target: float | None = None,
) -> None:
    """The timing options: warmup >= 0, iters and threads >= 1, budget > 0, 0 < target < 1 (None: defaults)."""
    check_nonnegative(warmup, "warmup")
    check_positive(iters, "iters")
    check_positive(threads, "threads")
    if budget_s is not None and not 0 < budget_s < math.inf:
        raise UserError(f"bad budget {budget_s}: expected seconds > 0 (finite)")
    if target is not None and not 0 < target < 1:
        raise UserError(f"bad target {target}: expected a relative half-width between 0 and 1, e.g. 0.02")


def check_kernel_sizes(kernel_sizes: Sequence[int]) -> list[int]:
    """Odd K >= 1 only: the blocks pad (K - 1) / 2 to keep the size, which needs an odd kernel."""
    if not kernel_sizes:
        raise UserError("no kernel size given: accepted odd integers >= 1, e.g. 3,5,7")
    for k in kernel_sizes:
        if k < 1 or k % 2 == 0:
            raise UserError(f"bad kernel size {k}: accepted odd integers >= 1, e.g. 3,5,7")
    return list(kernel_sizes)


def check_writable(path: Path, what: str, folder: bool) -> Path:
    """A folder or file segbench may create or overwrite later: checked now, without writing anything.

    The nearest existing ancestor must be a writable folder; an existing ``path`` must be a folder
    (``folder=True``) or a file.
    """
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        raise UserError(f"cannot write {what} {path}: it is a {'file' if folder else 'folder'}")
    ancestor = path if folder and path.exists() else path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {what} {path}: {ancestor} is not a writable folder")
    return path


def check_device(device: str) -> str:
    """Accept cpu, cuda, cuda:N, and refuse CUDA where there is none."""
    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise UserError(f"bad device {device!r}: accepted cpu, cuda, cuda:N")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"device {device!r} requested but CUDA is not available here; use --device cpu")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise UserError(f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s)")
    return device
