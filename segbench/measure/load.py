"""Load in real time: requests arrive on a schedule, wait in one queue, and worker threads serve them
in batches; what each request went through is timed with ``time.perf_counter``.

- Arrivals: camera streams (`stream_arrivals`: each source produces a frame every 1/fps, the sources'
  phases spread evenly over one period, optionally jittered) or a Poisson process (`poisson_arrivals`).
  A request's arrival is its scheduled time, not the moment the producing thread woke up: a camera
  takes the frame on time, and a late hand-over is the pipeline's delay, not the camera's.
- Serving (`replay`): one worker thread per ``serve`` callable (each holds its own runtime session),
  fed by a dynamic batcher like Triton's: a worker takes the oldest waiting request, then more until it
  has ``max_batch`` or ``max_delay_s`` has passed since that first request arrived. With a
  ``deadline_s``, a request still waiting when its deadline has passed is dropped (a live pipeline
  skips stale frames rather than serve them late); it counts as a miss.
- The run ends when the last request has arrived and the queue is empty, or at most ``drain_s``
  later (what is still waiting then is dropped). A worker that raises stops the run, and the
  exception is raised to the caller once every worker thread has ended; so is Ctrl-C. No thread
  outlives `replay`.
- `search_max`: the largest load that passes, MLPerf-style: double from the start until a load
  fails, bisect between the last pass and the first fail to the resolution, then confirm the best
  with a last run (stepping down through the other passes if it fails). A first load that fails
  ends the search: the maximum is below the lowest load tried.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

#: The most a search doubles to (streams, batch size, requests/s): the maximum is "at least this" beyond.
SEARCH_CAP = 4096


@dataclass
class Request:
    """One frame or request: when it arrived, started being served, and its result was ready (seconds)."""

    arrived: float
    started: float | None = None
    done: float | None = None
    dropped: bool = False


def stream_arrivals(streams: int, fps: float, duration_s: float, jitter: float = 0.0, seed: int = 0) -> list[float]:
    """Arrival offsets (s) of ``streams`` sources at ``fps`` over ``duration_s``, phases spread over one
    period; ``jitter`` moves each frame by up to +-jitter periods (uniform, seeded)."""
    period = 1.0 / fps
    rng = random.Random(seed)
    times = []
    for source in range(streams):
        frame = 0
        while (scheduled := (frame + source / streams) * period) < duration_s:
            shift = rng.uniform(-jitter, jitter) * period if jitter else 0.0
            times.append(max(0.0, scheduled + shift))
            frame += 1
    return sorted(times)


def poisson_arrivals(qps: float, duration_s: float, seed: int = 0) -> list[float]:
    """Arrival offsets (s) of a Poisson process of rate ``qps`` over ``duration_s`` (seeded)."""
    rng = random.Random(seed)
    times, now = [], rng.expovariate(qps)
    while now < duration_s:
        times.append(now)
        now += rng.expovariate(qps)
    return times


@dataclass
class LoadResult:
    """The requests of one run, and the window over which they arrived (s)."""

    requests: list[Request]
    duration_s: float
    start: float = 0.0
    served: list[Request] = field(init=False)

    def __post_init__(self) -> None:
        self.served = [r for r in self.requests if r.done is not None]

    def fields(self, deadline_s: float | None) -> dict[str, Any]:
        """Row fields: offered and achieved rates, miss rate, latency and queue-wait percentiles, drops.

        Achieved = results delivered / time from the start to the last result (at least the arrival
        window, so a run that keeps up achieves what was offered). Latency is from arrival
        to result; a miss is a result later than ``deadline_s`` after arrival, or a dropped request.
        """
        latency = [(r.done - r.arrived) * 1e3 for r in self.served]  # type: ignore[operator]
        wait = [(r.started - r.arrived) * 1e3 for r in self.served]  # type: ignore[operator]
        dropped = len(self.requests) - len(self.served)
        last = max((r.done for r in self.served), default=None)  # type: ignore[type-var]
        missed = None
        if deadline_s is not None and self.requests:
            late = sum(ms > deadline_s * 1e3 for ms in latency)
            missed = (late + dropped) / len(self.requests)
        return {
            "offered_ips": len(self.requests) / self.duration_s,
            "throughput_ips": len(self.served) / max(self.duration_s, last - self.start) if last is not None else 0.0,
            "deadline_miss_rate": missed,
            "latency_ms_median": statistics.median(latency) if latency else None,
            "latency_ms_p90": percentile(latency, 90),
            "latency_ms_p99": percentile(latency, 99),
            "latency_ms_max": max(latency, default=None),
            "queue_ms_p99": percentile(wait, 99),
            "dropped": dropped,
            "iters": len(self.served),
        }


def percentile(values: Sequence[float], q: int) -> float | None:
    """The ``q``-th percentile, interpolated between order statistics (None for no values)."""
    if len(values) < 2:
        return values[0] if values else None
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


class _Batcher:
    """The queue the arrivals go into and the workers take batches from (see the module docstring)."""

    def __init__(self, max_batch: int, max_delay_s: float, deadline_s: float | None) -> None:
        self.max_batch, self.max_delay_s, self.deadline_s = max_batch, max_delay_s, deadline_s
        self.ready = threading.Condition()
        self.waiting: deque[Request] = deque()
        self.closed = False  # no more arrivals: serve what waits, then stop
        self.stopped = threading.Event()  # stop now: what waits is dropped

    def put(self, request: Request) -> None:
        with self.ready:
            self.waiting.append(request)
            self.ready.notify()

    def close(self) -> None:
        with self.ready:
            self.closed = True
            self.ready.notify_all()

    def stop(self) -> None:
        with self.ready:
            self.stopped.set()
            for request in self.waiting:
                request.dropped = True
            self.waiting.clear()
            self.ready.notify_all()

    def take(self) -> list[Request] | None:
        """The next batch, or None when the run is over."""
        with self.ready:
            while (first := self._fresh()) is None:
                if self.closed or self.stopped.is_set():
                    return None
                self.ready.wait()
            batch, until = [first], first.arrived + self.max_delay_s
            while len(batch) < self.max_batch and not self.stopped.is_set():
                request = self._fresh()
                if request is not None:
                    batch.append(request)
                    continue
                remaining = until - time.perf_counter()
                if remaining <= 0 or self.closed:
                    break
                self.ready.wait(remaining)
            return batch

    def _fresh(self) -> Request | None:
        """The oldest waiting request whose deadline has not passed; stale ones are dropped on the way."""
        now = time.perf_counter()
        while self.waiting:
            request = self.waiting.popleft()
            if self.deadline_s is not None and now - request.arrived > self.deadline_s:
                request.dropped = True
                continue
            return request
        return None


def replay(
    arrivals: Sequence[float],
    servers: Sequence[Callable[[int], Any]],
    *,
    duration_s: float,
    max_batch: int = 1,
    max_delay_s: float = 0.0,
    deadline_s: float | None = None,
    drain_s: float | None = None,
) -> LoadResult:
    """Play ``arrivals`` (offsets in s) in real time against one worker per ``servers`` callable, each
    called with the size of the batch it serves; see the module docstring."""
    batcher = _Batcher(max_batch, max_delay_s, deadline_s)
    failures: list[BaseException] = []

    def work(serve: Callable[[int], Any]) -> None:
        try:
            while (batch := batcher.take()) is not None:
                started = time.perf_counter()
                for request in batch:
                    request.started = started
                serve(len(batch))
                done = time.perf_counter()
                for request in batch:
                    request.done = done
        except BaseException as exc:  # reported by the caller's thread, after every worker ended
            failures.append(exc)
            batcher.stop()

    workers = [
        threading.Thread(target=work, args=(serve,), name=f"segbench-load-{i}", daemon=True)
        for i, serve in enumerate(servers)
    ]
    requests = [Request(0.0) for _ in arrivals]
    for worker in workers:
        worker.start()
    start = time.perf_counter()
    try:
        for request, offset in zip(requests, arrivals):
            if batcher.stopped.wait(max(0.0, start + offset - time.perf_counter())):
                break
            request.arrived = start + offset
            batcher.put(request)
        batcher.close()
        end = time.perf_counter() + (duration_s if drain_s is None else drain_s)
        for worker in workers:
            worker.join(max(0.0, end - time.perf_counter()))
    finally:
        batcher.stop()
        for worker in workers:
            worker.join()
    if failures:
        raise failures[0]
    for request in requests:
        if request.done is None:
            request.dropped = True
    return LoadResult(requests, duration_s, start)


def serving(call: Callable[[], Any], device: Any) -> Callable[[int], None]:
    """A worker's ``serve``: one ``call`` of its session under ``torch.inference_mode`` (thread-local,
    so entered in the worker), on CUDA on the worker's own stream and waited for: a result is ready
    when ``serve`` returns. The session runs its prepared batch whatever the batch's size (a partly
    filled batch is padded, as with a static-shape engine)."""
    import torch

    stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def serve(size: int) -> None:
        with torch.inference_mode():
            if stream is None:
                call()
                return
            with torch.cuda.stream(stream):
                call()
            stream.synchronize()

    return serve


def time_calls(call: Callable[[], Any], duration_s: float, min_calls: int = 3) -> list[float]:
    """Milliseconds of back-to-back calls for ``duration_s`` (at least ``min_calls``): offline throughput.

    The calls are made by a thread of their own, as `replay`'s workers make theirs, so offline and
    streams time a session alike; the thread has ended when this returns, Ctrl-C included.
    """
    times: list[float] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def loop() -> None:
        end = time.perf_counter() + duration_s
        try:
            while not stop.is_set() and (len(times) < min_calls or time.perf_counter() < end):
                started = time.perf_counter()
                call()
                times.append((time.perf_counter() - started) * 1e3)
        except BaseException as exc:  # raised in the caller's thread
            failures.append(exc)

    caller = threading.Thread(target=loop, name="segbench-load-offline", daemon=True)
    caller.start()
    try:
        caller.join()
    finally:
        stop.set()
        caller.join()
    if failures:
        raise failures[0]
    return times


def resident_mb() -> float:
    """The process's resident memory now (MiB, Linux ``/proc/self/statm``): what runtimes with arenas of
    their own (ONNX Runtime, OpenVINO) hold, where PyTorch's allocator cannot see it."""
    import os

    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def search_max(
    start: float, *, integer: bool = True, resolution: float = 0.05, confirm: bool = True, cap: float = SEARCH_CAP
) -> Generator[tuple[float, bool], bool, float | None]:
    """The loads to try, one at a time: yields ``(load, is_confirmation)`` and is sent whether that
    load passed; returns the largest confirmed load, or None when the first load fails (the maximum
    is below it) or no pass is confirmed.

    Integers stop bisecting when the last pass and the first fail are neighbours, other loads when
    they are within ``resolution`` (relative) of each other. Doubling stops at ``cap``.
    """
    passed: list[float] = []
    load, failed = start, None
    while True:
        if (yield load, False):
            passed.append(load)
            if load >= cap:
                break
            load = min(load * 2, cap)
        else:
            failed = load
            break
    if not passed:
        return None
    while failed is not None and not _close(passed[-1], failed, integer, resolution):
        load = (passed[-1] + failed) // 2 if integer else (passed[-1] + failed) / 2
        if (yield load, False):
            passed.append(load)
        else:
            failed = load
    if not confirm:
        return passed[-1]
    for best in sorted(passed, reverse=True):
        if (yield best, True):
            return best
    return None


def _close(low: float, high: float, integer: bool, resolution: float) -> bool:
    return high - low <= 1 if integer else high - low <= resolution * low
