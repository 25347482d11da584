"""Every default a runner fills in, in one table (pure Python: the CLI's help texts read it too).

The defaults differ by device type, not by command: ``segbench train`` and ``segbench run`` train
with the same budget, and ``latency``, ``blocks`` and ``run`` time with the same protocol.
"""

from __future__ import annotations

#: (warm-up calls, timed calls) per device type. A CPU call of FCN-8s at its default size takes
#: seconds, so the CPU default stays short; CUDA calls take milliseconds, so more samples are cheap.
TIMING = {"cpu": (3, 10), "cuda": (10, 50)}
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


def timing(device: str, warmup: int | None = None, iters: int | None = None) -> tuple[int, int]:
    """(warmup, iters): the user's where given, else the device type's defaults."""
    default_warmup, default_iters = TIMING[device_type(device)]
    return (default_warmup if warmup is None else warmup, default_iters if iters is None else iters)


def training(device: str, steps: int | None = None, batch_size: int | None = None) -> tuple[int, int]:
    """(steps, batch size): the user's where given, else the device type's defaults."""
    default_steps, default_batch = TRAIN[device_type(device)]
    return (default_steps if steps is None else steps, default_batch if batch_size is None else batch_size)
