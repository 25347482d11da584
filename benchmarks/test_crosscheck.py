"""Cross-check: segbench's CPU median agrees with torch.utils.benchmark.Timer's within 15 %.

Same model, input size and thread count, in the same process (segbench: its latency runner). Each
tool measures ``REPEATS`` times, alternating, and the medians of the repeats are compared, so a burst
of load on a shared machine hits both; one untimed round of each comes first. Timer's median is the median of its
blocked_autorange blocks (mean time per call in a block); segbench's is the median of single calls.
"""

from __future__ import annotations

import statistics

import pytest
import torch
from conftest import model_input
from torch.utils.benchmark import Timer

from segbench.plugins import get_registry
from segbench.runners.defaults import Timing
from segbench.runners.latency import LatencyConfig, latency

REPEATS = 7
TOLERANCE = 0.15
CASES = [("block_dsconv", 1, 64, 64), ("fast_scnn", 1, 128, 256)]


@pytest.mark.parametrize(("name", "batch", "height", "width"), CASES, ids=[f"{c[0]}-{c[2]}x{c[3]}" for c in CASES])
def test_segbench_median_matches_torch_timer(
    bench_threads: int, name: str, batch: int, height: int, width: int
) -> None:
    model, x = model_input(name, batch, height, width)
    timer = Timer(
        stmt="with torch.inference_mode():\n    model(x)",
        globals={"model": model, "x": x, "torch": torch},
        num_threads=bench_threads,
        label=name,
    )
    ours, theirs = [], []

    def segbench_median(iters: int) -> float:
        config = LatencyConfig(
            sizes=[(height, width)], batch_sizes=[batch], timing=Timing(warmup=5, iters=iters, threads=bench_threads)
        )
        (row,) = latency([get_registry().model(name)], config)
        return row["latency_ms_median"]

    segbench_median(5)
    timer.blocked_autorange(min_run_time=0.2)
    for _ in range(REPEATS):
        ours.append(segbench_median(50))
        theirs.append(timer.blocked_autorange(min_run_time=0.3).median * 1e3)
    segbench_ms, timer_ms = statistics.median(ours), statistics.median(theirs)
    ratio = segbench_ms / timer_ms
    print(
        f"\n{name} {batch}x{height}x{width}, {bench_threads} thread(s): segbench median {segbench_ms:.3f} ms, "
        f"torch.utils.benchmark.Timer median {timer_ms:.3f} ms, ratio {ratio:.3f} "
        f"(repeats: segbench {[round(t, 3) for t in ours]}, Timer {[round(t, 3) for t in theirs]})"
    )
    assert abs(ratio - 1) <= TOLERANCE
