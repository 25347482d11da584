"""pytest-benchmark: what segbench's timing loop adds per call, on a model that does nothing.

Both benchmarks make ``CALLS`` calls of ``nn.Identity``; the difference of their times, divided by
``CALLS``, bounds the per-iteration overhead of ``measure_latency`` (its fixed costs, one reference
call and one profiled memory pass, are included and spread over the calls).
"""

from __future__ import annotations

import time

import torch
from torch import nn

from segbench.measure.latency import measure_latency

CALLS = 1000


def _identity() -> tuple[nn.Module, torch.Tensor]:
    return nn.Identity(), torch.zeros(1, 3, 8, 8)


def test_bare_loop(benchmark) -> None:
    model, x = _identity()

    def bare() -> None:
        with torch.inference_mode():
            for _ in range(CALLS):
                model(x)

    benchmark.group = f"harness overhead ({CALLS} calls)"
    benchmark.pedantic(bare, rounds=5, warmup_rounds=1)


def test_measure_latency_loop(benchmark) -> None:
    model, x = _identity()
    benchmark.group = f"harness overhead ({CALLS} calls)"
    row = benchmark.pedantic(
        lambda: measure_latency(model, x, device="cpu", warmup=0, iters=CALLS), rounds=5, warmup_rounds=1
    )
    assert row["iters"] == CALLS


def test_timed_call_floor_is_microseconds() -> None:
    """The median segbench reports for a no-op: perf_counter and Python call cost, nothing else."""
    model, x = _identity()
    row = measure_latency(model, x, device="cpu", warmup=10, iters=CALLS)
    with torch.inference_mode():
        start = time.perf_counter()
        for _ in range(CALLS):
            model(x)
        bare_us = (time.perf_counter() - start) / CALLS * 1e6
    print(f"\nno-op call: segbench median {row['latency_ms_median'] * 1e3:.2f} us, bare loop {bare_us:.2f} us/call")
    assert row["latency_ms_median"] < 0.05  # well under the 50 us a tiny conv takes
