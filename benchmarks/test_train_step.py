"""Training-step time of FCN-8s and Fast-SCNN with the probed conv backends next to both fixed ones.

One full step of the recipe (forward, loss, backward, fused SGD step, freed memory kept as in
training) at the CPU training defaults (128x128, the defaults table's batch, the synthetic set's 6
classes), the three configurations interleaved round by round in one process, so a change of machine
load hits all of them alike; at least ``STEP_ROUNDS`` rounds (default 3) and at least 2 s per
configuration, so a step of tens of milliseconds gets enough samples. The median per configuration is
printed with the probe's own cost and its plan.

Run: ``BENCH_THREADS=2 python -m pytest benchmarks/test_train_step.py -s``.
"""

from __future__ import annotations

import os
import statistics
import time

import pytest
import torch

import segbench
from segbench.measure.allocator import keep_freed_memory
from segbench.measure.convbackend import Plan, probe, use_plan
from segbench.measure.training import segmentation_loss
from segbench.runners import defaults

ROUNDS = int(os.environ.get("STEP_ROUNDS", "3"))
MIN_SECONDS = 2.0
SIZE, CLASSES = 128, 6


@pytest.mark.parametrize("name", ["fcn8s", "fast_scnn"])
def test_step_time_auto_vs_fixed_backends(name: str) -> None:
    _, batch = defaults.training("cpu")
    keep_freed_memory()
    torch.manual_seed(0)
    model = segbench.create_model(name, num_classes=CLASSES).train()
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, SIZE, SIZE, generator=generator)
    masks = torch.randint(0, CLASSES, (batch, SIZE, SIZE), generator=generator)
    optimiser = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, fused=True)
    found = probe(model, images.shape)
    plans = {"auto": found.plan, "onednn": Plan(), "native": Plan(everything=True)}

    def step(plan: Plan) -> float:
        start = time.perf_counter()
        with use_plan(model, plan):
            loss = segmentation_loss(model(images), masks)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        return time.perf_counter() - start

    for plan in plans.values():  # first calls: allocations, oneDNN primitives
        step(plan)
    times: dict[str, list[float]] = {key: [] for key in plans}
    r = 0
    while r < ROUNDS or min(sum(values) for values in times.values()) < MIN_SECONDS:
        keys = list(plans)[r % 3 :] + list(plans)[: r % 3]
        for key in keys:
            times[key].append(step(plans[key]))
        r += 1
    median = {key: statistics.median(values) for key, values in times.items()}
    print(
        f"\n{name}: step at batch {batch}, {SIZE}x{SIZE}, {torch.get_num_threads()} threads, {r} rounds; "
        f"probe {found.seconds:.1f} s -> {found.plan}"
    )
    for key, values in times.items():
        print(
            f"  {key:7s} median {median[key]:7.3f} s  ({median[key] / median['auto']:.2f} x auto)  "
            f"{[round(v, 3) for v in values[:8]]}{' ...' if len(values) > 8 else ''}"
        )
    assert median["auto"] <= 1.25 * min(median["onednn"], median["native"]), median
