"""Every default a runner fills in, in one table (pure Python: the CLI's help texts read it too).

The defaults differ by device type, not by command: ``segbench train`` and ``segbench run`` train
with the same budget, and ``latency``, ``blocks`` and ``run`` time with the same protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict

from segbench.checks import check_positive, check_timing

if TYPE_CHECKING:
    from segbench.measure.timer import Protocol


class _TimingDefaults(TypedDict):
    warmup: int
    warmup_s: float
    min_samples: int
    min_seconds: float
    budget_s: float


#: The timing protocol per device type: warm-up calls, then (unless --iters fixes the count) at least
#: ``min_samples`` timed calls over ``min_seconds`` and more until the 95 % interval of each median
#: (and of each paired ratio) is within +-TARGET, or ``budget_s`` seconds per row are spent. A CPU call of FCN-8s at its
#: default size takes seconds, so the CPU minimum is the smallest that gives a 95 % interval (6) and
#: the budget bounds a row; CUDA calls take milliseconds, so more warm-up and samples are cheap.
#: On CUDA the default warm-up also lasts ``warmup_s`` (an idle GPU's clocks and power ramp up over
#: about a second); ``--warmup N`` means exactly N calls.
TIMING: dict[str, _TimingDefaults] = {
    "cpu": {"warmup": 3, "warmup_s": 0.0, "min_samples": 6, "min_seconds": 1.0, "budget_s": 10.0},
    "cuda": {"warmup": 10, "warmup_s": 1.0, "min_samples": 20, "min_seconds": 0.2, "budget_s": 2.0},
}
TARGET = 0.02
#: Worker processes per cell (``--processes``) per device type: each cell is timed in this many fresh
#: processes and its interval holds the spread between them (`segbench.measure.stats.across_processes`),
#: which is what a rerun moves by. On CPU a new process lands a K^2 speed-up up to 17 % away while one
#: process's interval is +-2 %; with 3 processes the K^2 intervals held a rerun's speed-up in 76 % of
#: pairs x cells instead of 56 %, at 4.9x the time, on a heavily loaded 2-core machine (docs/timing.md,
#: "Intervals that cover a rerun"). A third process is skipped when the first two agree within TARGET.
#: On CUDA 1: the spread between processes is reported small there (not measured here: no GPU).
#: ``segbench run`` times its trained networks in its own process (1) whatever the setting; its
#: ``--blocks`` rows use it.
PROCESSES = {"cpu": 3, "cuda": 1}
#: (optimiser steps, batch size) of brief training per device type: on CPU the smallest budget at
#: which both built-in models still learn the synthetic shapes, so the main job stays short; on CUDA
#: about the same wall time. docs/training.md gives the measured step times and mIoU behind them.
TRAIN = {"cpu": (120, 2), "cuda": (300, 8)}
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
    from segbench.measure.timer import Protocol

    default = TIMING[device_type(device)]
    return Protocol(
        warmup=int(default["warmup"]) if warmup is None else warmup,
        warmup_s=default["warmup_s"] if warmup is None else 0.0,
        iters=iters,
        min_samples=int(default["min_samples"]),
        min_seconds=default["min_seconds"],
        budget_s=default["budget_s"] if budget_s is None else budget_s,
        target=TARGET if target is None else target,
    )


@dataclass(frozen=True)
class Timing:
    """How to time, as the user asked: None means the device type's default (``iters`` None: adaptive
    timing; ``threads`` None: torch's own; ``processes`` None: `PROCESSES`). Checked once, here;
    `protocol` and `processes_on` fill in the defaults."""

    warmup: int | None = None
    iters: int | None = None
    budget_s: float | None = None
    target: float | None = None
    threads: int | None = None
    processes: int | None = None

    def __post_init__(self) -> None:
        check_timing(self.warmup, self.iters, self.threads, self.budget_s, self.target)
        check_positive(self.processes, "processes")

    def protocol(self, device: str) -> Protocol:
        """The timing protocol in effect on ``device``."""
        return timing(device, self.warmup, self.iters, self.budget_s, self.target)

    def processes_on(self, device: str) -> int:
        """The worker processes per cell in effect on ``device``."""
        return PROCESSES[device_type(device)] if self.processes is None else self.processes


def training(device: str, steps: int | None = None, batch_size: int | None = None) -> tuple[int, int]:
    """(steps, batch size): the user's where given, else the device type's defaults."""
    default_steps, default_batch = TRAIN[device_type(device)]
    return (default_steps if steps is None else steps, default_batch if batch_size is None else batch_size)


def describe_protocol(protocol: Protocol, processes: int = 1) -> str:
    """The timing protocol in words, for the notes under the tables."""
    spread = ""
    if processes > 1:
        skip = f" (the rest skipped when the first two agree within +-{protocol.target:.0%})" if processes > 2 else ""
        spread = f"; each cell in {processes} fresh processes{skip}, its intervals across them"
    if protocol.iters is not None:
        return f"{_warmup(protocol)} warm-up + {protocol.iters} timed calls per row{spread}"
    return (
        f"{_warmup(protocol)} warm-up, then at least {protocol.min_samples} timed calls per row until the 95% "
        f"interval of the median is within +-{protocol.target:.0%} or {protocol.budget_s:g} s are spent{spread}"
    )


def _warmup(protocol: Protocol) -> str:
    return f"{protocol.warmup}" + (f" (and >= {protocol.warmup_s:g} s)" if protocol.warmup_s else "")


def protocol_label(protocol: Protocol, paired: bool) -> str:
    """The timing protocol as one compact row field (``timing_protocol``): how the row's samples were taken.

    ``paired``: timed call by call alternately with another session (a speed-up baseline, the other
    block of a pair); ``single``: timed alone. Then ``fixed`` (``--iters``) or ``adaptive`` and the
    settings. Rows whose labels differ were timed differently, so ``segbench compare`` does not rank them.
    """
    method = "paired" if paired else "single"
    warmup = f"warmup={protocol.warmup}" + (f" warmup_s={protocol.warmup_s:g}" if protocol.warmup_s else "")
    if protocol.iters is not None:
        return f"{method} fixed {warmup} iters={protocol.iters}"
    return (
        f"{method} adaptive {warmup} min_samples={protocol.min_samples} "
        f"min_seconds={protocol.min_seconds:g} budget_s={protocol.budget_s:g} target={protocol.target:g}"
    )
