"""Do the K^2 study's intervals cover a rerun? Four separate invocations of

    segbench blocks --kernel-sizes 3,5,7 --channels 32,128 --size 96x96 --threads BENCH_THREADS

with ``--processes 1`` (before: one process's interval) and with the default (after: each cell in
several fresh processes, `segbench.runners.defaults.PROCESSES`), alternating so both see the same
load. For every ordered pair of invocations (i, j) of one setting and every cell: does i's 95 %
interval of the speed-up hold j's speed-up? Coverage over all pairs and cells, and the worst
run-to-run difference of a speed-up, per setting. Prints a Markdown table (docs/timing.md,
"Intervals that cover a rerun"); asserts nothing about the machine's speed, only that every
invocation gave a row per cell.

Run: ``python -m pytest benchmarks/test_k2_intervals.py -s`` (minutes; ``K2_INVOCATIONS`` changes the 4).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time

KERNELS, CHANNELS, SIZE = "3,5,7", "32,128", "96x96"
INVOCATIONS = int(os.environ.get("K2_INVOCATIONS", "4"))
#: The done-when targets of the study (issue 24): every speed-up of two invocations within 10 %, and
#: the first's interval holding the second's speed-up in at least 90 % of pairs and cells.
WITHIN, COVERAGE = 0.10, 0.90

Cells = dict[tuple[int, int], tuple[float, float, float]]


def invocation(threads: int, processes: int | None) -> tuple[Cells, float]:
    """One ``segbench blocks`` process: per (K, C), the dsconv row's (speed-up, low, high); and its seconds."""
    command = [sys.executable, "-m", "segbench", "blocks", "--kernel-sizes", KERNELS, "--channels", CHANNELS]
    command += ["--size", SIZE, "--threads", str(threads), "--format", "json", "--no-save"]
    command += [] if processes is None else ["--processes", str(processes)]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    rows = [r for r in json.loads(result.stdout) if r["block"] == "dsconv"]
    assert all(r["error"] is None for r in rows), [r["error"] for r in rows]
    cells = {
        (r["kernel_size"], r["in_channels"]): (
            r["latency_speedup"],
            r["latency_speedup_ci_low"],
            r["latency_speedup_ci_high"],
        )
        for r in rows
    }
    return cells, seconds


def apart(first: float, second: float) -> float:
    return abs(first - second) / min(first, second)


def summary(runs: list[Cells]) -> tuple[int, int, float, float]:
    """(pairs and cells covered, checked, worst difference of two speed-ups, share of pairs within WITHIN)."""
    covered = checked = within = 0
    worst = 0.0
    for first, second in itertools.permutations(runs, 2):
        for cell, (_, low, high) in first.items():
            value = second[cell][0]
            covered += low <= value <= high
            checked += 1
            worst = max(worst, apart(first[cell][0], value))
            within += apart(first[cell][0], value) <= WITHIN
    return covered, checked, worst, within / checked


def test_k2_intervals_cover_a_rerun(bench_threads: int) -> None:
    settings = {"before (--processes 1)": 1, "after (default)": None}
    runs: dict[str, list[Cells]] = {name: [] for name in settings}
    seconds: dict[str, list[float]] = {name: [] for name in settings}
    for _ in range(INVOCATIONS):
        for name, processes in settings.items():
            cells, spent = invocation(bench_threads, processes)
            runs[name].append(cells)
            seconds[name].append(spent)
    cells = sorted(runs["after (default)"][0])
    print(f"\nK^2 speed-up (standard / dsconv), {SIZE}, {bench_threads} thread(s), {INVOCATIONS} invocations each")
    print("| setting | K, C | speed-up per invocation [95% interval] | widest interval | worst apart |")
    print("|---|---|---|---|---|")
    for name, invocations in runs.items():
        for cell in cells:
            values = [run[cell] for run in invocations]
            shown = ", ".join(f"{v:.2f} [{lo:.2f}, {hi:.2f}]" for v, lo, hi in values)
            widest = max(max(hi / v - 1, 1 - lo / v) for v, lo, hi in values)
            worst = max(apart(a[0], b[0]) for a, b in itertools.combinations(values, 2))
            print(f"| {name} | {cell[0]}, {cell[1]} | {shown} | +-{widest:.0%} | {worst:.0%} |")
    print(
        "\n| setting | coverage (pairs x cells) | worst run-to-run difference | pairs within 10% | s per invocation |"
    )
    print("|---|---|---|---|---|")
    for name, invocations in runs.items():
        covered, checked, worst, within = summary(invocations)
        mean_s = sum(seconds[name]) / len(seconds[name])
        print(f"| {name} | {covered}/{checked} = {covered / checked:.0%} | {worst:.0%} | {within:.0%} | {mean_s:.0f} |")
    covered, checked, worst, _ = summary(runs["after (default)"])
    met = worst <= WITHIN and covered / checked >= COVERAGE
    print(
        f"done-when (within {WITHIN:.0%}, coverage >= {COVERAGE:.0%}) with the default: {'met' if met else 'NOT met'}"
    )
    assert all(len(run) == len(cells) for invocations in runs.values() for run in invocations)
