"""The timer: prepared sessions timed call by call, alternately, under one `Protocol`.

- Each timed call of a PyTorch session on CUDA is bracketed by two CUDA events on the current stream
  and synchronised before the next call; the latency is the event time. ``host_ms`` is the wall time
  the host spends in the call (launching kernels, without the wait for the GPU): when it is close to
  the event time the GPU is waiting for the CPU, i.e. the model is launch-bound.
- A runtime whose call blocks until its result is on the host (ONNX Runtime), and every call on a
  CPU, is timed by ``time.perf_counter``; latency and host time are then the same clock.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from segbench.measure.session import Session
from segbench.measure.stats import ratios, relative_half_width


@dataclass(frozen=True)
class Protocol:
    """How many calls are timed: ``iters`` exactly, or (``iters`` None) adaptively: at least
    ``min_samples`` calls over at least ``min_seconds`` (a short burst of load then cannot be the
    whole sample), then until the 95 % interval of every median (and of every paired ratio) is
    within +-``target`` of it, or ``budget_s`` seconds of timed calls are spent. The warm-up is at
    least ``warmup`` rounds and at least ``warmup_s`` seconds (a GPU's clocks and power ramp up over
    about a second; a count of calls of a fast model is over in milliseconds)."""

    warmup: int
    iters: int | None = None
    min_samples: int = 6
    min_seconds: float = 1.0
    budget_s: float = 10.0
    target: float = 0.02
    warmup_s: float = 0.0


@dataclass
class Samples:
    """Per session, the device and host milliseconds of each timed call, and whether the target was met."""

    device_ms: list[list[float]]
    host_ms: list[list[float]]
    target_met: bool


def time_sessions(sessions: Sequence[Session], device: torch.device, protocol: Protocol) -> Samples:
    """Time the sessions alternately, call by call, in a shuffled order each round.

    Interleaving is what makes ratios trustworthy on a shared machine: a burst of load, or the
    clock drifting, hits every session of a round alike, and each per-round ratio cancels it.
    """
    rounds, start = 0, time.perf_counter()
    while rounds < protocol.warmup or time.perf_counter() - start < protocol.warmup_s:
        for session in sessions:
            session.call()
        if device.type == "cuda":  # the time is the GPU's, not that of launches queued ahead
            torch.cuda.synchronize(device)
        rounds += 1
    order = random.Random(0)
    device_ms: list[list[float]] = [[] for _ in sessions]
    host_ms: list[list[float]] = [[] for _ in sessions]
    start = time.perf_counter()
    while True:
        for i in order.sample(range(len(sessions)), len(sessions)):
            timed, host = _time_call(sessions[i], device)
            device_ms[i].append(timed)
            host_ms[i].append(host)
        done = len(device_ms[0])
        met = done >= 2 and _within_target(device_ms, protocol.target)
        if protocol.iters is not None:
            if done >= protocol.iters:
                return Samples(device_ms, host_ms, met)
        else:
            spent = time.perf_counter() - start
            if done >= protocol.min_samples and ((met and spent >= protocol.min_seconds) or spent >= protocol.budget_s):
                return Samples(device_ms, host_ms, met)


def _within_target(samples: list[list[float]], target: float) -> bool:
    widths = [relative_half_width(s) for s in samples]
    widths += [relative_half_width(ratios(samples[0], s)) for s in samples[1:]]
    return max(widths) <= target


def _time_call(session: Session, device: torch.device) -> tuple[float, float]:
    """(device ms, host ms) of one call: CUDA events around a PyTorch call on a GPU, else the host clock."""
    if device.type == "cuda" and not session.blocking:
        start_event, end_event = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        begin = time.perf_counter()
        start_event.record()
        session.call()
        end_event.record()
        host = (time.perf_counter() - begin) * 1e3
        end_event.synchronize()
        return start_event.elapsed_time(end_event), host
    begin = time.perf_counter()
    session.call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = (time.perf_counter() - begin) * 1e3
    return elapsed, elapsed
