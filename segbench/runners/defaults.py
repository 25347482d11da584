"""Every default a runner fills in, in one table (pure Python: the CLI's help texts read it too).

The defaults differ by device type, not by command: ``segbench train`` and ``segbench run`` train
with the same budget, and ``latency``, ``blocks`` and ``run`` time with the same protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from segbench.checks import check_timing

if TYPE_CHECKING:
    from segbench.measure.latency import Protocol

#: The timing protocol per device type: warm-up calls, then (unless --iters fixes the count) at least
#: ``min_samples`` timed calls over ``min_seconds`` and more until the 95 % interval of each median
#: (and of each paired ratio) is within +-TARGET, or ``budget_s`` seconds per row are spent. A CPU call of FCN-8s at its
#: default size takes seconds, so the CPU minimum is the smallest that gives a 95 % interval (6) and
#: the budget bounds a row; CUDA calls take milliseconds, so more warm-up and samples are cheap.
TIMING = {
    "cpu": {"warmup": 3, "min_samples": 6, "min_seconds": 1.0, "budget_s": 10.0},
    "cuda": {"warmup": 10, "min_samples": 20, "min_seconds": 0.2, "budget_s": 2.0},
}
TARGET = 0.02
#: (optimiser steps, batch size) of brief training per device type. CPU: 120 steps x 2 images keeps
#: the README's main job under 5 minutes on 2 AVX2 cores, where an FCN-8s step is bounded by fc6's
#: native weight gradient (batch 4: about 2.9 s even with the per-layer conv backends, so 120 x 4
#: alone would take 6 minutes; batch 2: 1.6 s). Both models still learn the synthetic shapes (seed 0:
#: FCN-8s mIoU 0.58, Fast-SCNN 0.66, against 0.12 for predicting background; 120 x 4 gave 0.64 and
#: 0.78). On CUDA the same wall time buys 300 steps x 8.
TRAIN = {"cpu": (120, 2), "cuda": (300, 8)}
#: Training input when the dataset names none (the synthetic set's own size is 128x128).
TRAIN_SIZE = (256, 256)
#: Seed of the weights, data order, augmentation and the timed input.
SEED = 0


def device_type(device: str) -> str:
    """``cuda`` for cuda and cuda:N, else ``cpu``: the key of the tables above."""
    return "cuda" if device.startswith("cuda") else "cpu"


def timing(
    device: str,
    warmup: int | None = None,
    iters: int | None = None,
    budget_s: float | None = None,
    target: float | None = None,
) -> Protocol:
    """The timing protocol: the user's settings where given, else the device type's defaults."""
    from segbench.measure.latency import Protocol

    default = TIMING[device_type(device)]
    return Protocol(
        warmup=default["warmup"] if warmup is None else warmup,
        iters=iters,
        min_samples=default["min_samples"],
        min_seconds=default["min_seconds"],
        budget_s=default["budget_s"] if budget_s is None else budget_s,
        target=TARGET if target is None else target,
    )


@dataclass(frozen=True)
class Timing:
    """How to time, as the user asked: None means the device type's default (``iters`` None: adaptive
    timing; ``threads`` None: torch's own). Checked once, here; `protocol` fills in the defaults."""

    warmup: int | None = None
    iters: int | None = None
    budget_s: float | None = None
    target: float | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        check_timing(self.warmup, self.iters, self.threads, self.budget_s, self.target)

    def protocol(self, device: str) -> Protocol:
        """The timing protocol in effect on ``device``."""
        return timing(device, self.warmup, self.iters, self.budget_s, self.target)


def training(device: str, steps: int | None = None, batch_size: int | None = None) -> tuple[int, int]:
    """(steps, batch size): the user's where given, else the device type's defaults."""
    default_steps, default_batch = TRAIN[device_type(device)]
    return (default_steps if steps is None else steps, default_batch if batch_size is None else batch_size)


def describe_protocol(protocol: Protocol) -> str:
    """The timing protocol in words, for the notes under the tables."""
    if protocol.iters is not None:
        return f"{protocol.warmup} warm-up + {protocol.iters} timed calls per row"
    return (
        f"{protocol.warmup} warm-up, then at least {protocol.min_samples} timed calls per row until the 95% "
        f"interval of the median is within +-{protocol.target:.0%} or {protocol.budget_s:g} s are spent"
    )
