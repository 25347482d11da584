"""pytest-benchmark: what segbench's timing loop adds per call, on a model that does nothing.

Both benchmarks make ``CALLS`` calls of ``nn.Identity``; the difference of their times, divided by
``CALLS``, bounds the per-iteration overhead of the latency runner (its fixed costs: building the
model and its input, the fp32 eager reference and one profiled memory pass, are included and spread
over the calls).
"""

from __future__ import annotations

import time

import torch
from torch import nn

from segbench.registry import ModelSpec
from segbench.runners.latency import LatencyConfig, latency

CALLS = 1000


IDENTITY = ModelSpec(
    name="identity",
    family="test",
    builder=lambda **_: nn.Identity(),
    default_size=(8, 8),
    default_num_classes=None,
    description="does nothing",
    kind="block",
)


def _identity() -> tuple[nn.Module, torch.Tensor]:
    return nn.Identity(), torch.zeros(1, 3, 8, 8)


def _timed_row(warmup: int) -> dict:
    """The latency runner's row for ``IDENTITY``, 1x3x8x8, ``CALLS`` timed calls."""
    (row,) = latency([IDENTITY], LatencyConfig(warmup=warmup, iters=CALLS))
    return row


def test_bare_loop(benchmark) -> None:
    model, x = _identity()

    def bare() -> None:
        with torch.inference_mode():
            for _ in range(CALLS):
                model(x)

    benchmark.group = f"harness overhead ({CALLS} calls)"
    benchmark.pedantic(bare, rounds=5, warmup_rounds=1)


def test_latency_runner_loop(benchmark) -> None:
    benchmark.group = f"harness overhead ({CALLS} calls)"
    row = benchmark.pedantic(lambda: _timed_row(warmup=0), rounds=5, warmup_rounds=1)
    assert row["iters"] == CALLS


def test_timed_call_floor_is_microseconds() -> None:
    """The median segbench reports for a no-op: perf_counter and Python call cost, nothing else."""
    model, x = _identity()
    row = _timed_row(warmup=10)
    with torch.inference_mode():
        start = time.perf_counter()
        for _ in range(CALLS):
            model(x)
        bare_us = (time.perf_counter() - start) / CALLS * 1e6
    print(f"\nno-op call: segbench median {row['latency_ms_median'] * 1e3:.2f} us, bare loop {bare_us:.2f} us/call")
    assert row["latency_ms_median"] < 0.05  # well under the 50 us a tiny conv takes
