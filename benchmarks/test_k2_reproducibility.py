"""The K^2 study's measured speed-ups reproduce: two back-to-back runs agree within 15 % per cell.

Kernel sizes 3, 5, 7; channels 32 and 128; 96x96; batch 1; ``BENCH_THREADS`` threads (default 1,
the least disturbed by other processes on a shared machine). Each run is the ``segbench blocks``
runner: the standard and the depthwise-separable block timed alternately, call by call, adaptively
(until the 95 % interval of the median per-call ratio is within +-2 % or the row budget is spent).

For the before/after table it also runs the method segbench used before: each block timed on its
own (3 warm-up + 10 calls) and the ratio of the two medians, twice back to back, in the same process.
"""

from __future__ import annotations

from segbench.measure.latency import measure_latency
from segbench.runners.blocks import BlocksConfig, block_options, blocks, default_specs
from segbench.runners.defaults import Timing

KERNELS, CHANNELS, SIZE = (3, 5, 7), (32, 128), (96, 96)
TOLERANCE = 0.15


def paired_run(threads: int) -> dict[tuple[int, int], float]:
    config = BlocksConfig(kernel_sizes=KERNELS, channels=CHANNELS, size=SIZE, timing=Timing(threads=threads))
    return {
        (r["kernel_size"], r["in_channels"]): r["latency_speedup"]
        for r in blocks(default_specs(), config)
        if r["block"] == "dsconv"
    }


def sequential_run(threads: int) -> dict[tuple[int, int], float]:
    """The old method: each block timed apart, ratio of medians."""
    import torch

    speedups = {}
    standard, dsconv = default_specs()
    for k in KERNELS:
        for c in CHANNELS:
            x = torch.randn(1, c, *SIZE)
            medians = [
                measure_latency(
                    spec.build(**block_options(k, c)), x, device="cpu", warmup=3, iters=10, threads=threads
                )["latency_ms_median"]
                for spec in (standard, dsconv)
            ]
            speedups[(k, c)] = medians[0] / medians[1]
    return speedups


def apart(first: float, second: float) -> float:
    return abs(first - second) / min(first, second)


def test_k2_speedups_agree_between_two_runs(bench_threads: int) -> None:
    old = [sequential_run(bench_threads) for _ in range(2)]
    new = [paired_run(bench_threads) for _ in range(2)]
    print(f"\nK^2 speed-up (standard / dsconv latency), {SIZE[0]}x{SIZE[1]}, {bench_threads} thread(s)")
    print("| K, C | sequential run 1 | run 2 | apart | paired run 1 | run 2 | apart |")
    print("|---|---|---|---|---|---|---|")
    for cell in new[0]:
        print(
            f"| {cell[0]}, {cell[1]} | {old[0][cell]:.2f} | {old[1][cell]:.2f} | {apart(old[0][cell], old[1][cell]):.0%} "
            f"| {new[0][cell]:.2f} | {new[1][cell]:.2f} | {apart(new[0][cell], new[1][cell]):.0%} |"
        )
    worst = max(apart(new[0][cell], new[1][cell]) for cell in new[0])
    print(
        f"worst cell: paired {worst:.0%} apart, sequential {max(apart(old[0][c], old[1][c]) for c in old[0]):.0%} apart"
    )
    assert worst <= TOLERANCE
