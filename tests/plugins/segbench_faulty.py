"""A misbehaving plugin for the survival tests (on PYTHONPATH only in their subprocesses).

It prints when imported and when its models run, and its models fail in the ways plugin code can:
``SystemExit``, segbench's own ``UserError``, a forward pass slow enough to be killed in, or a hard
crash of the whole process (``os._exit``, as a segfault or the OOM killer would) while
``SEGBENCH_FAULTY_CRASH`` is set (to the seconds it waits first).
"""

import os
import time

import torch
from torch import nn

import segbench
from segbench.errors import UserError
from segbench.registry import ModelSpec

print("segbench-faulty: imported")  # must not reach stdout: --format json stays parseable


class Faulty(nn.Module):
    """A 1x1 conv that prints, and misbehaves at batch size ``at``: ``how`` is sleep, exit, usererror or crash."""

    def __init__(self, num_classes: int, how: str = "", at: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, num_classes, 1)
        self.how, self.at = how, at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        print("segbench-faulty: forward")
        if x.shape[0] == self.at:
            if self.how == "sleep":
                time.sleep(float(os.environ.get("SEGBENCH_FAULTY_SLEEP", "60")))
            elif self.how == "exit":
                raise SystemExit(3)
            elif self.how == "usererror":
                raise UserError("a plugin raised segbench's own error type")
            elif self.how == "crash" and os.environ.get("SEGBENCH_FAULTY_CRASH"):
                time.sleep(float(os.environ["SEGBENCH_FAULTY_CRASH"]))  # let the other ranks finish first
                os._exit(9)
        return self.conv(x)


@segbench.hookimpl
def register_models(register):
    for name, how in (
        ("chatty_net", ""),
        ("sleepy_net", "sleep"),
        ("exiting_net", "exit"),
        ("usererror_net", "usererror"),
        ("crashing_net", "crash"),
    ):
        register(
            ModelSpec(
                name=name,
                family="faulty",
                builder=lambda num_classes, how=how: Faulty(num_classes, how, at=2),
                default_size=(8, 8),
                default_num_classes=3,
                description=f"misbehaves at batch 2: {how or 'prints'}",
                reference="tests",
            )
        )
