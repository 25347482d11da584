"""A plugin for the history tests: ``paced_net``, a tiny model whose forward pass takes a set time.

The forward pass sleeps until ``PACE_MS`` x ``$PACE_SLOWDOWN`` milliseconds have passed since it
started, so a run made 30 % slower (``PACE_SLOWDOWN=1.3``) is 30 % slower in fact. It sleeps rather
than computes: on a loaded machine only the wake-up is late (a few ms at worst), hence the long
``PACE_MS``. The bisect test edits ``PACE_MS`` commit by commit.
"""

import os
import time

import torch
from torch import nn

import segbench
from segbench.registry import ModelSpec

PACE_MS = 40.0


class Paced(nn.Module):
    """A 1x1 convolution that returns no sooner than ``PACE_MS`` x ``$PACE_SLOWDOWN`` after it was called."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        end = time.perf_counter() + PACE_MS / 1e3 * float(os.environ.get("PACE_SLOWDOWN", "1"))
        out = self.conv(x)
        time.sleep(max(0.0, end - time.perf_counter()))
        return out


@segbench.hookimpl
def register_models(register):
    register(
        ModelSpec(
            name="paced_net",
            family="paced",
            builder=Paced,
            default_size=(8, 8),
            default_num_classes=3,
            description="a 1x1 conv that takes PACE_MS x $PACE_SLOWDOWN ms",
        )
    )
