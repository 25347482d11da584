"""Load scenarios against models of known service time: what queueing predicts is what is measured.

The plugin models sleep a fixed S seconds per call (a batch costs S whatever its size), so with one
worker a stream of F fps is kept up with exactly while S < 1/F, N evenly phased streams while
N x F x S < 1, and a batch waits at most max_delay before its S. Sleep can only overshoot, never
undershoot, so the "every frame misses" predictions are exact; the "none misses" ones get the
slack between S and the deadline (tens of ms) against a loaded machine's scheduling delays.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections import Counter

import pytest
import torch
from typer.testing import CliRunner

from segbench.cli import app
from segbench.measure.load import poisson_arrivals, replay, search_max, stream_arrivals, time_calls
from segbench.runners.load import LoadConfig, load

SLEEPERS = """
import time

import torch
from torch import nn

import segbench
from segbench.registry import ModelSpec


class Sleeper(nn.Module):
    '''A 1x1 conv after a sleep of ``seconds``, allocating ``mib`` MiB per image of scratch; ``fail_at``:
    the call (counted from 1, the runtime's priming call included) that raises.'''

    def __init__(self, num_classes, seconds, mib=0, fail_at=0):
        super().__init__()
        self.conv = nn.Conv2d(3, num_classes, 1)
        self.seconds, self.mib, self.fail_at, self.calls = seconds, mib, fail_at, 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("the worker's model broke")
        time.sleep(self.seconds)
        if self.mib:
            scratch = torch.ones(x.shape[0], self.mib * 2**18, device=x.device)  # float32: mib MiB per image
            del scratch
        return self.conv(x)


@segbench.hookimpl
def register_models(register):
    for name, seconds, mib, fail_at in (
        ("sleep20_net", 0.02, 0, 0),
        ("sleep40_net", 0.04, 0, 0),
        ("sleep50_net", 0.05, 0, 0),
        ("megabyte_net", 0.002, 1, 0),
        ("breaking_net", 0.01, 0, 5),
        ("gigabytes_net", 0.0, 16 * 2**10, 0),
    ):
        register(
            ModelSpec(
                name=name,
                family="sleepers",
                builder=lambda num_classes, s=seconds, m=mib, f=fail_at: Sleeper(num_classes, s, m, f),
                default_size=(8, 8),
                default_num_classes=2,
                description=f"sleeps {seconds} s per call",
            )
        )
"""

cli = CliRunner()


@pytest.fixture
def sleepers(fake_plugins):
    fake_plugins("segbench-sleepers", SLEEPERS)


def sleeping(seconds: float, sizes: list[int] | None = None):
    def serve(size: int) -> None:
        if sizes is not None:
            sizes.append(size)
        time.sleep(seconds)

    return serve


def threads_now() -> set[threading.Thread]:
    """The live threads: a run may leave none of its own (``threads_now() <= before``), while a thread of
    an earlier test (rich's refresh thread, say) may end meanwhile."""
    return {t for t in threading.enumerate() if t.is_alive()}


# --- the engine ------------------------------------------------------------------------------------


def test_stream_arrivals_are_evenly_phased_and_jitter_stays_within_its_share() -> None:
    assert stream_arrivals(2, 10, 0.3) == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2, 0.25])
    jittered = stream_arrivals(2, 10, 0.3, jitter=0.2, seed=1)
    assert len(jittered) == 6
    assert all(abs(j - t) <= 0.02 + 1e-12 for j, t in zip(jittered, [0.0, 0.05, 0.1, 0.15, 0.2, 0.25]))


def test_poisson_arrivals_have_the_rate_asked_for() -> None:
    arrivals = poisson_arrivals(1000, 10, seed=3)
    assert len(arrivals) == pytest.approx(10_000, abs=4 * 100)  # Poisson: sd = sqrt(10 000)
    assert arrivals == sorted(arrivals) and arrivals[-1] < 10


def test_one_worker_keeps_up_exactly_while_the_service_time_is_below_the_period() -> None:
    """S = 20 ms < 1/F = 40 ms: no frame waits (D/D/1 below saturation), latency = S, no misses."""
    before = threads_now()
    result = replay(stream_arrivals(1, 25, 0.5), [sleeping(0.02)], duration_s=0.5, deadline_s=0.04)
    fields = result.fields(0.04)
    assert threads_now() <= before
    assert fields["offered_ips"] == 13 / 0.5  # frames at 0, 40, ..., 480 ms
    assert fields["dropped"] == 0 and fields["iters"] == 13
    assert fields["deadline_miss_rate"] <= 1 / 13  # one scheduling hiccup of > 20 ms allowed
    assert 20 <= fields["latency_ms_median"] < 30
    assert fields["throughput_ips"] == pytest.approx(26, rel=0.1)  # achieved = offered, the last result at ~0.5 s


def test_one_worker_misses_every_frame_once_the_service_time_exceeds_the_period() -> None:
    """S = 50 ms > 1/F = 40 ms: every result comes at least S after its frame, so every frame misses,
    and one worker serves at most one frame per S."""
    result = replay(stream_arrivals(1, 25, 0.5), [sleeping(0.05)], duration_s=0.5, deadline_s=0.04)
    fields = result.fields(0.04)
    assert fields["deadline_miss_rate"] == 1.0
    assert fields["latency_ms_median"] >= 50
    served_window = max(r.done for r in result.served) - result.start
    assert fields["iters"] <= served_window / 0.05 + 1e-9
    assert fields["iters"] + fields["dropped"] == 13


def test_n_streams_are_kept_up_with_while_the_utilisation_is_below_one() -> None:
    """N x F x S: 2 x 10 x 0.04 = 0.8 keeps up (no frame waits); 3 x 10 x 0.04 = 1.2 cannot: one worker
    serves one frame per 40 ms, so at most window / S of the 18 frames are served at all."""
    kept = replay(stream_arrivals(2, 10, 0.6), [sleeping(0.04)], duration_s=0.6, deadline_s=0.1).fields(0.1)
    assert kept["deadline_miss_rate"] <= 1 / 12 and kept["queue_ms_p99"] < 60
    over = replay(stream_arrivals(3, 10, 0.6), [sleeping(0.04)], duration_s=0.6, deadline_s=0.1)
    fields = over.fields(0.1)
    assert fields["iters"] <= (max(r.done for r in over.served) - over.start) / 0.04 + 1e-9
    # the queue grows by 40 - 33.3 ms per frame: waits pass the 60 ms slack after 9 frames, so about half miss
    assert fields["deadline_miss_rate"] >= 0.25
    assert fields["queue_ms_p99"] > 50


def test_the_batcher_waits_max_delay_then_serves_what_arrived() -> None:
    """4 streams at 10 fps arrive every 25 ms; a batch opened by a frame closes 40 ms later holding it and
    the next one, so batches are pairs and the first frame of each waits 40 ms: latency max = 40 + S."""
    sizes: list[int] = []
    result = replay(stream_arrivals(4, 10, 0.8), [sleeping(0.03, sizes)], duration_s=0.8, max_batch=4, max_delay_s=0.04)
    fields = result.fields(0.1)
    assert Counter(sizes).most_common(1)[0][0] == 2
    assert sum(sizes) == 32 == fields["iters"]
    assert fields["latency_ms_max"] >= 70
    assert fields["queue_ms_p99"] >= 40


def test_a_worker_that_raises_stops_the_run_and_leaves_no_thread() -> None:
    before = threads_now()
    calls = []

    def broken(size: int) -> None:
        calls.append(size)
        if len(calls) == 3:
            raise RuntimeError("broken")
        time.sleep(0.01)

    started = time.perf_counter()
    with pytest.raises(RuntimeError, match="broken"):
        replay(stream_arrivals(1, 20, 5.0), [broken, sleeping(0.01)], duration_s=5.0)
    assert time.perf_counter() - started < 2.5  # stopped, not played to the end
    assert threads_now() <= before


def test_ctrl_c_in_a_worker_reaches_the_caller_after_every_thread_ended() -> None:
    before = threads_now()

    def interrupted(size: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        replay(stream_arrivals(1, 20, 1.0), [interrupted, sleeping(0.01)], duration_s=1.0)
    assert threads_now() <= before


def test_offline_calls_are_timed_in_a_thread_of_their_own_that_ends() -> None:
    before = threads_now()
    callers: list[str] = []

    def call() -> None:
        callers.append(threading.current_thread().name)
        time.sleep(0.01)

    times = time_calls(call, 0.05)
    assert len(times) == len(callers) >= 3 and min(times) >= 10
    assert set(callers) == {"segbench-load-offline"}
    with pytest.raises(ZeroDivisionError):
        time_calls(lambda: 1 / 0, 1.0)
    assert threads_now() <= before


# --- the search ------------------------------------------------------------------------------------


def run_search(search, passes):
    """Drive a search with ``passes(load, confirming)``; return (the loads tried, the result)."""
    tried = []
    step = next(search)
    while True:
        tried.append(step)
        try:
            step = search.send(passes(*step))
        except StopIteration as stop:
            return tried, stop.value


def test_search_doubles_bisects_and_confirms_the_largest_passing_load() -> None:
    tried, found = run_search(search_max(1), lambda n, confirming: n <= 37)
    assert found == 37
    assert [n for n, _ in tried] == [1, 2, 4, 8, 16, 32, 64, 48, 40, 36, 38, 37, 37]
    assert [c for _, c in tried] == [False] * 12 + [True]


def test_search_below_the_first_load_tries_it_once() -> None:
    tried, found = run_search(search_max(4), lambda n, confirming: False)
    assert (tried, found) == ([(4, False)], None)


def test_search_steps_down_when_the_confirmation_fails_and_stops_at_the_cap() -> None:
    tried, found = run_search(search_max(1), lambda n, confirming: n <= 5 and not (confirming and n == 5))
    assert found == 4 and tried[-2:] == [(5, True), (4, True)]
    tried, found = run_search(search_max(1, cap=8), lambda n, confirming: True)
    assert found == 8 and [n for n, _ in tried] == [1, 2, 4, 8, 8]


def test_search_over_rates_stops_at_its_resolution() -> None:
    tried, found = run_search(search_max(10.0, integer=False, resolution=0.05), lambda q, c: q <= 33.0)
    assert 33.0 * 0.95 <= found <= 33.0
    assert len(tried) < 12


# --- the runner and the command ----------------------------------------------------------------------


def test_streams_rows_record_their_settings_and_match_queueing(sleepers) -> None:
    result = cli.invoke(
        app,
        [
            "load",
            "-m",
            "sleep20_net,sleep50_net",
            "--fps",
            "25",
            "--duration",
            "0.5",
            "--format",
            "json",
            "--no-save",
        ],
    )
    assert result.exit_code == 0, result.stderr
    rows = {r["model"]: r for r in json.loads(result.stdout)}
    for row in rows.values():
        assert row["scenario"] == "streams" and row["streams"] == 1 and row["fps"] == 25
        assert (row["workers"], row["max_batch"], row["max_delay_ms"], row["duration_s"]) == (1, 1, 0, 0.5)
        assert row["offered_ips"] == 26 and row["runtime"] == "torch" and row["error"] is None
    assert rows["sleep20_net"]["deadline_miss_rate"] <= 1 / 13
    assert rows["sleep50_net"]["deadline_miss_rate"] == 1.0
    assert rows["sleep50_net"]["latency_ms_p99"] >= 50


def test_find_max_finds_the_stream_count_queueing_predicts(sleepers) -> None:
    """S = 40 ms, F = 10: N x F x S < 1 holds up to N = 2 (0.8); from N = 3 (1.2) the queue grows 6.7 ms a
    frame, past the 60 ms slack after 9 frames: about half of 18 miss. A scheduling hiccup can only add
    misses, so on a loaded machine N = 2 may fail its run and the search end at 1: within one step."""
    before = threads_now()
    config = LoadConfig(fps=10, duration_s=0.6, find_max=True, miss_budget=0.2)
    rows = list(load([_spec("sleep40_net")], config))
    assert threads_now() <= before
    (found,) = [r["streams"] for r in rows if r["search"] == "max"]
    assert found in (1, 2)  # 2 exactly on a quiet machine
    assert (rows[0]["streams"], rows[0]["search"]) == (1, "probe")
    assert rows[-1]["search"] == "max" and {r["miss_budget"] for r in rows} == {0.2}
    assert all(r["deadline_miss_rate"] > 0.2 for r in rows if r["streams"] >= 3)
    assert len(rows) <= 7  # 1, 2, 4, 3 and the confirmation; a failed confirmation steps down once more


def test_find_max_whose_first_load_fails_says_so(sleepers) -> None:
    result = cli.invoke(
        app,
        [
            *("load", "-m", "sleep40_net", "--fps", "10", "--streams", "3", "--duration", "0.6"),
            *("--find-max", "--miss-budget", "0.2", "--no-save"),
        ],
    )
    assert result.exit_code == 0, result.stderr
    assert "below the lowest load tried (3 streams already misses too often)" in result.stdout


def test_server_rows_count_the_poisson_arrivals(sleepers) -> None:
    config = LoadConfig(scenario="server", qps=20, duration_s=0.5, latency_bound_ms=200)
    (row,) = load([_spec("sleep20_net")], config)
    assert row["offered_ips"] == len(poisson_arrivals(20, 0.5, seed=0)) / 0.5
    assert row["qps"] == 20 and row["latency_bound_ms"] == 200 and row["streams"] is None
    assert row["latency_ms_median"] >= 20 and row["dropped"] == 0


def test_server_find_max_stays_within_what_one_worker_can_serve(sleepers) -> None:
    """S = 20 ms, bound B = 100 ms, d = 1 s of arrivals: 99 % of the lambda x d requests served within B of
    arriving, the last arriving before d, is lambda x d x 0.99 x S <= d + B of work for one worker, so
    lambda <= (1 + B/d) / (0.99 S) = 55.6/s; at 10 requests/s (utilisation 0.2) p99 is well within B."""
    config = LoadConfig(scenario="server", qps=10, duration_s=1.0, find_max=True, latency_bound_ms=100)
    rows = list(load([_spec("sleep20_net")], config))
    assert rows[0]["qps"] == 10 and rows[0]["search"] == "probe"
    (found,) = [r for r in rows if r["search"] == "max"]
    assert 10 <= found["qps"] <= (1 + 0.1 / 1.0) / (0.99 * 0.02)
    assert found["deadline_miss_rate"] <= 0.01 and found["latency_bound_ms"] == 100
    assert len(rows) <= 14  # doubling, bisection to 5 %, confirmation


def test_offline_bisection_finds_the_memory_limit(sleepers) -> None:
    """1 MiB of scratch per image: within 10.5 MiB the largest batch is 10."""
    result = cli.invoke(
        app,
        [
            *("load", "--scenario", "offline", "-m", "megabyte_net", "--max-memory", "10.5MB"),
            *("--duration", "0.02", "--format", "json", "--no-save"),
        ],
    )
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["batch_size"], r["search"]) for r in rows] == [
        (1, None),
        (2, None),
        (4, None),
        (8, None),
        (16, "over"),
        (12, "over"),
        (10, "max"),
        (11, "over"),
    ]
    assert all(r["memory_limit_mb"] == 10.5 and r["scenario"] == "offline" for r in rows)
    assert rows[6]["peak_mem_mb"] == pytest.approx(10, abs=0.2)
    assert all(r["throughput_ips"] > 0 for r in rows if r["search"] != "over")


def test_offline_prepares_each_batch_afresh_for_runtimes_that_export(sleepers) -> None:
    """ONNX Runtime's session is an export for one input shape: batch 2 must not reuse batch 1's. Its
    arena is invisible to torch: the process's resident memory is checked against the limit instead."""
    from segbench.measure.load import resident_mb

    pytest.importorskip("onnxruntime")
    config = LoadConfig(scenario="offline", runtimes=("onnxruntime",), max_batch=2, duration_s=0.01)
    rows = list(load([_spec("sleep20_net")], config))
    assert [(r["batch_size"], r["search"], r["error"]) for r in rows] == [(1, None, None), (2, "max", None)]
    small = dataclasses.replace(config, memory_limit_mb=resident_mb() / 2)
    assert [(r["batch_size"], r["search"]) for r in load([_spec("sleep20_net")], small)] == [(1, "over")]
    assert all(r["peak_mem_mb"] is None and r["throughput_ips"] > 0 for r in rows)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="out of memory on a CUDA device")
def test_offline_on_cuda_bisects_on_out_of_memory_and_the_process_stays_healthy(sleepers) -> None:
    """16 GiB of scratch per image: the largest batch is the device's memory / 16 GiB, give or take one."""
    total_gib = torch.cuda.get_device_properties(0).total_memory / 2**30
    rows = list(load([_spec("gigabytes_net")], LoadConfig(scenario="offline", device="cuda", duration_s=0.01)))
    assert all(r["error"] is None for r in rows)
    (best,) = [r["batch_size"] for r in rows if r["search"] == "max"]
    assert total_gib / 16 - 2 <= best <= total_gib / 16
    assert all(r["search"] == "over" for r in rows if r["batch_size"] > best)
    assert torch.ones(1024, device="cuda").sum().item() == 1024  # healthy after the out-of-memory errors
    assert torch.cuda.memory_allocated() < 2**30


def test_offline_where_no_batch_fits_says_so_and_is_no_failure(sleepers) -> None:
    args = ["load", "--scenario", "offline", "-m", "megabyte_net", "--max-memory", "0.5MB", "--duration", "0.01"]
    result = cli.invoke(app, [*args, "--no-save"])
    assert result.exit_code == 0, result.stderr
    assert "megabyte_net torch fp32: not even batch 1 fits within the memory limit" in result.stdout
    assert "megabyte_net torch offline batch 1: over the memory limit, peak 1.0 MiB" in result.stderr


def test_resume_skips_the_finished_cells(sleepers, tmp_path) -> None:
    args = ["load", "--scenario", "offline", "-m", "megabyte_net", "--max-batch", "2", "--duration", "0.01"]
    first = cli.invoke(app, [*args, "--format", "json", "--out", str(tmp_path)])
    assert first.exit_code == 0, first.stderr
    (saved,) = tmp_path.glob("load-*.json")
    again = cli.invoke(app, [*args, "--format", "json", "--resume", str(saved)])
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout) == json.loads(first.stdout)
    assert "offline batch" not in again.stderr  # nothing measured again


def test_ctrl_c_keeps_the_finished_rows(sleepers, monkeypatch) -> None:
    import segbench.runners.load

    def interrupted(specs, config, context):
        yield from load(specs[:1], config, context)
        raise KeyboardInterrupt

    monkeypatch.setattr(segbench.runners.load, "load", interrupted)
    args = ["load", "-m", "sleep20_net,sleep40_net", "--fps", "10", "--duration", "0.2"]
    result = cli.invoke(app, [*args, "--format", "json", "--no-save"])
    assert result.exit_code == 130
    assert [r["model"] for r in json.loads(result.stdout)] == ["sleep20_net"]


def test_a_worker_that_raises_errors_its_row_and_ends_cleanly(sleepers) -> None:
    before = threads_now()
    (row,) = load([_spec("breaking_net")], LoadConfig(fps=20, duration_s=2.0))
    assert row["error"] == "RuntimeError: the worker's model broke"
    assert threads_now() <= before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--streams", "0"], "bad stream count 0"),
        (["--fps", "0"], "bad fps 0"),
        (["--qps", "-1"], "bad qps -1"),
        (["--duration", "0"], "bad duration 0"),
        (["--miss-budget", "0"], "bad miss budget 0"),
        (["--scenario", "offline", "--max-memory", "lots"], "bad memory size 'lots'"),
        (["--scenario", "server", "--find-max"], "server --find-max needs --latency-bound-ms"),
        (["--scenario", "batch"], "bad scenario 'batch'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = cli.invoke(app, ["load", "-m", "fast_scnn", *args])
    assert result.exit_code == 2 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert message in line


def test_the_miss_rate_plot_stars_the_found_maximum(tmp_path) -> None:
    from PIL import Image

    from segbench.output.plots import plot_load
    from segbench.rows.schema import make_row

    rows = [
        make_row(
            model="m",
            kind="model",
            runtime="torch",
            precision="fp32",
            scenario="streams",
            streams=n,
            fps=10,
            miss_budget=0.01,
            deadline_miss_rate=miss,
            search=search,
        )
        for n, miss, search in (
            (1, 0.0, "probe"),
            (2, 0.0, "probe"),
            (4, 0.5, "probe"),
            (3, 0.2, "probe"),
            (2, 0.0, "max"),
        )
    ]
    assert plot_load(rows, tmp_path / "load.png") is None
    with Image.open(tmp_path / "load.png") as image:
        assert image.format == "PNG" and len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 50
    assert plot_load([make_row(model="m", kind="model", scenario="offline")], tmp_path / "no.png") == (
        "no streams or server rows with deadline_miss_rate"
    )


def _spec(name: str):
    from segbench.plugins import get_registry

    return get_registry().model(name)
