"""Timing across worker processes (``--processes``): the interval method, pooling, dying workers, the
compare gate on such rows, and that one process is today's path."""

from __future__ import annotations

import math
import os
import random
import signal
import statistics
import time
from functools import partial

import pytest
from typer.testing import CliRunner

from segbench.cli import app
from segbench.errors import UserError
from segbench.measure.stats import across_processes, median_ci, ratios
from segbench.output.compare import REGRESSION, compare_rows
from segbench.rows.latency import latency_fields, pooled_fields, speedup_fields
from segbench.runners import processes as processes_module
from segbench.runners.blocks import BlocksConfig, blocks, default_specs
from segbench.runners.cells import Cell, measure_cells
from segbench.runners.defaults import PROCESSES, Timing
from segbench.runners.processes import WorkerFailed, in_processes, in_worker

#: Within-process noise: each call is its process's level times (1 + NOISE x Exp(1)), skewed like real timings.
NOISE = 0.02
TRUE = 1 + NOISE * math.log(2)  # the median of a process at level 1: the value the interval is for
TRIALS = 400


def synthetic(rng: random.Random, processes: int, between: float, calls: int = 30) -> list[list[float]]:
    """Per process, ``calls`` samples around a level drawn lognormally with sd ``between`` (log scale)."""
    levels = [math.exp(rng.gauss(0, between)) for _ in range(processes)]
    return [[level * (1 + NOISE * rng.expovariate(1)) for _ in range(calls)] for level in levels]


@pytest.mark.parametrize("processes", [2, 3, 5])
@pytest.mark.parametrize("between", [0.05, 0.0])
def test_interval_covers_the_true_median_at_its_nominal_rate(processes: int, between: float) -> None:
    """400 seeded trials: the 95 % interval holds the true value in 95 % of them, within 3 binomial
    standard errors (91.7 % to 98.3 %); with a between-process component the share says so."""
    rng = random.Random(processes * 1000 + int(between * 100))
    spreads = [across_processes(synthetic(rng, processes, between)) for _ in range(TRIALS)]
    coverage = sum(s.low <= TRUE <= s.high for s in spreads) / TRIALS
    margin = 3 * math.sqrt(0.95 * 0.05 / TRIALS)
    assert 0.95 - margin <= coverage <= 0.95 + margin
    share = statistics.fmean(s.between_share for s in spreads)
    assert share > 0.8 if between else share < 0.3


def test_one_process_is_todays_interval() -> None:
    """One process: the plain median and its order-statistic interval, no share."""
    samples = [1.0, 1.3, 0.9, 1.1, 1.05, 1.2, 0.95]
    spread = across_processes([samples])
    assert (spread.median, spread.low, spread.high) == (statistics.median(samples), *median_ci(samples))
    assert spread.between_share is None


def test_interval_is_the_t_interval_of_the_log_medians() -> None:
    """Cross-check against a hand computation: 3 processes, medians 1, 2, 4 (log mean = log 2)."""
    spread = across_processes([[1.0] * 7, [2.0] * 7, [4.0] * 7])
    se = math.sqrt(statistics.variance([0, math.log(2), math.log(4)]) / 3)
    assert spread.median == pytest.approx(2.0)
    assert spread.low == pytest.approx(2 * math.exp(-4.302653 * se))
    assert spread.high == pytest.approx(2 * math.exp(4.302653 * se))
    assert spread.between_share == 1.0  # no spread within a process


def _fields(device_ms: list[float], baseline_ms: list[float]) -> dict:
    return {**latency_fields(device_ms, device_ms, 2, True), **speedup_fields(baseline_ms, device_ms)}


def test_pooling_one_process_changes_no_number() -> None:
    """``--processes 1`` numbers are today's: pooling a single process's row keeps every value."""
    device_ms, baseline_ms = [2.0, 2.2, 1.9, 2.1, 2.05, 2.3], [4.0, 4.1, 4.4, 3.9, 4.2, 4.0]
    row = _fields(device_ms, baseline_ms)
    assert row["latency_ms_median"] == statistics.median(device_ms)
    assert row["latency_speedup"] == statistics.median(ratios(baseline_ms, device_ms))
    assert row["processes"] == 1
    pooled = pooled_fields([row], batch_size=2)
    assert {name: pooled[name] for name in row} == row
    assert (pooled["samples_per_process"], pooled["between_process_share"]) == ([6], None)


def test_pooled_row_takes_every_process() -> None:
    first, second = _fields([2.0] * 6, [4.0] * 6), _fields([3.0] * 6, [3.0] * 6)
    pooled = pooled_fields([first, second], batch_size=2)
    assert pooled["processes"] == 2 and pooled["samples_per_process"] == [6, 6]
    assert pooled["latency_samples_ms"] == [2.0] * 6 + [3.0] * 6 and pooled["iters"] == 12
    assert pooled["latency_ms_median"] == pytest.approx(math.sqrt(6))  # geometric mean of the process medians
    assert pooled["throughput_ips"] == pytest.approx(2e3 / math.sqrt(6))
    assert pooled["latency_speedup"] == pytest.approx(math.sqrt(2))
    assert pooled["latency_speedup_samples"] == [2.0] * 6 + [1.0] * 6
    assert pooled["latency_ms_ci_low"] < math.sqrt(6) < pooled["latency_ms_ci_high"]


def test_a_failed_process_fails_the_row() -> None:
    good = _fields([2.0] * 6, [4.0] * 6)
    assert pooled_fields([good, {**good, "error": "boom"}], 2)["error"] == "process 2 of 2: boom"
    assert pooled_fields([{"error": "no onnx"}, {"error": "no onnx"}], 2)["error"] == "no onnx"


def _die(keys: list[dict]) -> list[dict]:
    os.kill(os.getpid(), signal.SIGKILL)
    return []


def _hang(keys: list[dict]) -> list[dict]:
    time.sleep(600)
    return []


def _raise(keys: list[dict]) -> list[dict]:
    raise ValueError("bad cell")


def _constant(keys: list[dict]) -> list[dict]:
    return [_fields([2.0] * 6, [4.0] * 6) for _ in keys]


def test_a_killed_worker_is_reported_in_its_rows() -> None:
    cell = Cell([{"model": "a", "batch_size": 1}], partial(in_processes, _die, 3, 0.02))
    (row,) = measure_cells([cell])
    assert row["error"] == "WorkerFailed: worker process 1 of 3 died (exit code -9)"


def test_a_hung_worker_is_stopped() -> None:
    with pytest.raises(WorkerFailed, match="worker 1 gave no result within 3 s and was stopped"):
        in_worker(_hang, [{}], 3.0, "worker 1")


def test_a_raising_worker_gives_its_reason() -> None:
    with pytest.raises(WorkerFailed, match=r"^worker 1: ValueError: bad cell$"):
        in_worker(_raise, [{}], 60.0, "worker 1")


def test_agreeing_processes_stop_after_two() -> None:
    (row,) = in_processes(_constant, 3, 0.02, [{"batch_size": 1}])
    assert row["processes"] == 2 and row["latency_speedup"] == pytest.approx(2.0)


def test_blocks_in_two_processes_pool_their_samples() -> None:
    """End to end: each worker times its own pair; the row's speed-up is recomputed from the samples it keeps."""
    config = BlocksConfig(
        kernel_sizes=[3], channels=[8], size=(8, 8), timing=Timing(warmup=0, iters=6, threads=1, processes=2)
    )
    standard, dsconv = blocks(default_specs(), config)
    for row in (standard, dsconv):
        assert row["error"] is None and row["processes"] == 2 and row["samples_per_process"] == [6, 6]
        assert len(row["latency_samples_ms"]) == 12 and 0 <= row["between_process_share"] <= 1
    split = [dsconv["latency_speedup_samples"][:6], dsconv["latency_speedup_samples"][6:]]
    expected = math.exp(statistics.fmean(math.log(statistics.median(s)) for s in split))
    assert dsconv["latency_speedup"] == pytest.approx(expected)
    assert dsconv["latency_speedup_ci_low"] <= expected <= dsconv["latency_speedup_ci_high"]
    assert dsconv["mac_ratio"] == pytest.approx(1 / 8 + 1 / 9, rel=0.05)


def test_one_process_never_spawns(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--processes 1`` is today's path: measured in this process, no worker started."""
    monkeypatch.setattr(processes_module, "in_worker", lambda *a: pytest.fail("a worker was started"))
    config = BlocksConfig(
        kernel_sizes=[3], channels=[8], size=(8, 8), timing=Timing(warmup=0, iters=6, threads=1, processes=1)
    )
    _, dsconv = blocks(default_specs(), config)
    assert dsconv["processes"] == 1 and dsconv["samples_per_process"] is None
    assert dsconv["latency_speedup"] == statistics.median(dsconv["latency_speedup_samples"])


def test_defaults_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # the suite's one-process default (conftest.py)
    assert (Timing().processes_on("cpu"), Timing().processes_on("cuda:0")) == (3, 1) == tuple(PROCESSES.values())
    assert Timing(processes=5).processes_on("cuda") == 5
    with pytest.raises(UserError, match="bad processes 0"):
        Timing(processes=0)


def test_cli_rejects_zero_processes() -> None:
    result = CliRunner().invoke(app, ["blocks", "--processes", "0", "--no-save"])
    assert result.exit_code == 2 and "bad processes 0" in result.stderr


def _row(median: float, half: float, processes: int, spread: float = 0.001) -> dict:
    """A latency row timed in ``processes`` processes: tight per-call samples, a wide rerun interval."""
    return {
        "model": "m",
        "device_name": "cpu",
        "latency_ms_median": median,
        "latency_ms_ci_low": median / (1 + half),
        "latency_ms_ci_high": median * (1 + half),
        "latency_samples_ms": [median * (1 + spread * i) for i in range(12)],
        "processes": processes,
    }


def test_compare_reads_the_intervals_of_rows_timed_across_processes() -> None:
    """A rerun 12 % slower within +-10 % intervals is no regression (the rank test on the per-call
    samples alone would call it one); a real 20 % slowdown with +-5 % intervals still is."""
    (check,) = [c for c in compare_rows([_row(1.0, 0.10, 3)], [_row(1.12, 0.10, 3)]) if c.check == "latency_ms_median"]
    assert check.status != REGRESSION and "beyond the intervals across processes (+14.4%): no" in check.change
    (check,) = [c for c in compare_rows([_row(1.0, 0.05, 3)], [_row(1.2, 0.05, 3)]) if c.check == "latency_ms_median"]
    assert check.status == REGRESSION and ": yes" in check.change
    (check,) = [c for c in compare_rows([_row(1.0, 0.10, 1)], [_row(1.12, 0.10, 1)]) if c.check == "latency_ms_median"]
    assert check.status == REGRESSION and "rank test" in check.change  # one process: as before


def test_run_times_its_trained_networks_here() -> None:
    """``segbench run`` hands the latency cells the network it trained (``built``): those never go to
    workers, whatever ``--processes`` says; the same sweep without it does."""
    from segbench.plugins import get_registry
    from segbench.runners import latency as latency_runner
    from segbench.runners.cells import ALONE, Built

    spec = get_registry().model("block_dsconv")
    config = latency_runner.LatencyConfig(sizes=[(8, 8)], timing=Timing(processes=3))
    (trained,) = latency_runner.cells([spec], config, ALONE, built={spec.name: Built(spec)})
    (fresh,) = latency_runner.cells([spec], config, ALONE)
    assert trained.measure.func is latency_runner._measure
    assert fresh.measure.func is in_processes and fresh.measure.args[1:] == (3, 0.02)
