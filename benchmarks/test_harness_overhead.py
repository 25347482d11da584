"""What segbench's timing loop adds per call, on a model that does nothing.

``test_overhead_per_call_is_within_bound`` times ``CALLS`` calls of ``nn.Identity`` through
the latency runner and in a bare loop; their difference, divided by ``CALLS``, is the per-call wall
overhead of the harness (its fixed costs, one reference call and one profiled memory pass, spread over
the calls; mostly the check after every round of whether the median's interval met its target, which
sorts the samples: it grows with the count). The timed samples themselves exclude it
(``test_timed_call_floor_is_microseconds``). ``test_latency_runner_loop`` puts the loop in
pytest-benchmark's table.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from segbench.registry import ModelSpec
from segbench.runners.defaults import Timing
from segbench.runners.latency import LatencyConfig, latency

CALLS = 1000
ROUNDS = 5
#: The claimed bound on the per-call wall overhead at ``CALLS`` calls. Measured 2026-12-02 by this test
#: on a 2-core AMD EPYC (avx2, avx512f; load average 11, shared): 0.10 ms; 6.7 ms before the interval's
#: order statistic stopped summing big-integer binomial coefficients after every round.
OVERHEAD_BOUND_MS = 0.5


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
    (row,) = latency([IDENTITY], LatencyConfig(timing=Timing(warmup=warmup, iters=CALLS)))
    return row


def _fastest_seconds(run: Callable[[], object]) -> float:
    """The fastest of ``ROUNDS`` runs after one warm-up run: the least disturbed by other load."""
    run()
    times = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def test_overhead_per_call_is_within_bound() -> None:
    model, x = _identity()

    def bare() -> None:
        with torch.inference_mode():
            for _ in range(CALLS):
                model(x)

    harness_s = _fastest_seconds(lambda: _timed_row(warmup=0))
    bare_s = _fastest_seconds(bare)
    overhead_ms = (harness_s - bare_s) / CALLS * 1e3
    print(f"\n{CALLS} calls: latency runner {harness_s:.3f} s, bare loop {bare_s:.4f} s: {overhead_ms:.3f} ms/call")
    assert 0 < overhead_ms < OVERHEAD_BOUND_MS


def test_latency_runner_loop(benchmark) -> None:
    benchmark.group = f"harness overhead ({CALLS} calls)"
    row = benchmark.pedantic(lambda: _timed_row(warmup=0), rounds=ROUNDS, warmup_rounds=1)
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
