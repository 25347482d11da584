"""Cells timed in fresh worker processes (``--processes N``): the interval of a row then holds what
a rerun moves by, not only what one process's calls do.

A new process has a new memory layout, new kernel choices, maybe another core: on a CPU a K^2
speed-up lands up to 17 % away in a rerun while one process's interval is +-2 %. So a cell's
measurement (the runner's own, with its warm-up and paired samples) runs in up to N processes,
one after the other, each started fresh with the ``spawn`` method (not forked from this warm
process): it imports segbench and the plugins anew, and inherits this process's CPU affinity and
environment, and applies the same ``--threads``. Their rows are pooled (`segbench.rows.latency.pooled_fields`).
After two processes whose rows agree within the protocol's target the rest are skipped.

A worker that dies (a crash, a kill, out of memory) or does not answer within ``timeout_s`` fails
its cell with the reason (`segbench.runners.cells.isolated` writes it into the rows' ``error``);
it is never waited on beyond that.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import pickle
import sys
from collections.abc import Callable
from typing import Any

from segbench.runners.cells import Row

#: How long one worker process may take for one cell before it is killed (a cell's rows each stop at
#: their ``budget_s``; this bounds a hang, not a measurement).
WORKER_TIMEOUT_S = 1800.0

Measure = Callable[[list[Row]], list[Row]]


class WorkerFailed(RuntimeError):
    """A worker process died, timed out or could not measure its cell."""


def in_processes(
    measure: Measure, processes: int, target: float, keys: list[Row], timeout_s: float = WORKER_TIMEOUT_S
) -> list[Row]:
    """The rows ``keys`` of one cell, each measured by ``measure`` in up to ``processes`` fresh workers
    and pooled; after two processes that agree within ``target`` the rest are skipped.

    ``measure`` must pickle: specs the registry holds travel by name (a worker loads the same plugins).
    """
    from segbench.rows.latency import pooled_fields, processes_agree

    runs: list[list[Row]] = []
    for index in range(processes):
        runs.append(in_worker(measure, keys, timeout_s, f"worker process {index + 1} of {processes}"))
        if len(runs) == 2 and processes > 2 and processes_agree(runs, target):
            break
    return [pooled_fields(list(rows), key["batch_size"]) for key, rows in zip(keys, zip(*runs))]


def in_worker(measure: Measure, keys: list[Row], timeout_s: float, label: str) -> list[Row]:
    """``measure(keys)`` in a fresh ``spawn`` process; WorkerFailed if it dies, hangs or raises."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    worker = context.Process(target=_work, args=(_dumps((measure, keys)), send), name=f"segbench {label}")
    worker.start()
    send.close()  # this process's copy: the pipe reads end-of-file once the worker is gone
    try:
        if not receive.poll(timeout_s):
            raise WorkerFailed(f"{label} gave no result within {timeout_s:g} s and was stopped")
        try:
            ok, value = receive.recv()
        except EOFError:
            worker.join()
            raise WorkerFailed(f"{label} died (exit code {worker.exitcode})") from None
    finally:
        if worker.is_alive():
            worker.kill()
        worker.join()
        receive.close()
    if not ok:
        raise WorkerFailed(f"{label}: {value}")
    return value


def _work(payload: bytes, send: Any) -> None:
    """The worker: measure, send the rows (or the reason it could not) and exit. What the cell prints
    goes to stderr, as in `segbench.runners.cells.isolated`: stdout may be the parent's JSON."""
    from segbench.measure.faults import error_reason

    try:
        measure, keys = pickle.loads(payload)
        with contextlib.redirect_stdout(sys.stderr):
            result = (True, measure(keys))
    except Exception as exc:
        result = (False, error_reason(exc))
    send.send(result)
    send.close()


def _registered_model(name: str) -> Any:
    from segbench.plugins import get_registry

    return get_registry().model(name)


def _registered_runtime(name: str) -> Any:
    from segbench.plugins import get_registry

    return get_registry().runtimes[name]


class _Pickler(pickle.Pickler):
    """Pickles the registry's model and runtime specs by name: their builders are closures."""

    def reducer_override(self, obj: Any) -> Any:
        from segbench.plugins import get_registry
        from segbench.registry import ModelSpec, RuntimeSpec

        registry = get_registry()
        if isinstance(obj, ModelSpec) and registry.models.get(obj.name) is obj:
            return _registered_model, (obj.name,)
        if isinstance(obj, RuntimeSpec) and registry.runtimes.get(obj.name) is obj:
            return _registered_runtime, (obj.name,)
        return NotImplemented


def _dumps(value: Any) -> bytes:
    buffer = io.BytesIO()
    _Pickler(buffer).dump(value)
    return buffer.getvalue()
