"""The load runner (``segbench load``): how a model in a runtime behaves under a deployment's load.

One cell per model x runtime x variant, at one input size (default: the model's own); the model is
called through its runtime's `Session`, so every runtime is loaded alike (`segbench.measure.load`).

- ``streams``: ``streams`` cameras at ``fps`` each; a frame misses when its result comes later than
  one period after it was taken (stale frames still waiting are dropped, and miss). ``workers``
  sessions serve them, with a dynamic batcher (``max_batch``, ``max_delay_ms``). One row, or with
  ``find_max`` one row per load tried: the largest stream count whose miss rate is within
  ``miss_budget``, confirmed by a last run (its row has ``search = "max"``).
- ``server``: Poisson arrivals at ``qps``; with ``latency_bound_ms``, a request misses when it takes
  longer, so ``find_max`` (a miss budget of 1 % is a p99 within the bound) finds the largest rate.
- ``offline``: all images at once, one batch after another: images/s and peak memory per batch size,
  doubling then bisecting to the largest batch within the memory limit (``memory_limit_mb``; default
  a share of RAM on CPU, the device's memory on CUDA, where an out-of-memory batch is the limit, and
  the memory is given back after it). Its row has ``search = "max"``; a batch over the limit
  ``search = "over"``. Peak memory (``peak_mem_mb``) is PyTorch's allocator peak, for sessions running
  in PyTorch. Other runtimes' arenas are invisible to it: on CPU the whole process's resident memory
  after a batch must stay within the limit instead (conservative; not recorded, since the process
  keeps freed memory while measuring and one runtime reuses what another freed); on CUDA they stop at
  out-of-memory or ``max_batch``.

A search is one cell: its rows come together when it ends, and torchrun shares out whole searches.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segbench.checks import check_device, check_positive, check_precisions, check_sizes
from segbench.errors import UserError
from segbench.measure.session import Variant
from segbench.rows.environment import device_name
from segbench.runners import defaults
from segbench.runners.cells import ALONE, Built, Cell, Context, Row, measure_cells, variant_key

if TYPE_CHECKING:
    import torch

    from segbench.registry import ModelSpec, RuntimeSpec

SCENARIOS = ("streams", "offline", "server")
#: Untimed calls of each session before a load starts.
WARMUP = 2
#: The share of RAM an offline sweep may use on CPU when no --max-memory is given.
CPU_MEMORY_SHARE = 0.25
#: The largest batch an offline sweep tries when no --max-batch is given.
OFFLINE_MAX_BATCH = 1024
#: Relative resolution of a search over requests/s (stream counts and batches are searched exactly).
QPS_RESOLUTION = 0.05


@dataclass(frozen=True)
class LoadConfig:
    """The scenario and its settings (see the module docstring); ``max_batch`` None means 1 for streams
    and server, `OFFLINE_MAX_BATCH` for offline, ``memory_limit_mb`` None the default limit."""

    scenario: str = "streams"
    device: str = "cpu"
    size: tuple[int, int] | None = None
    runtimes: Sequence[str] = ("torch",)
    variants: Sequence[Variant] = (Variant(),)
    num_classes: int | None = None
    threads: int | None = None
    streams: int = 1
    fps: float = 30.0
    jitter: float = 0.0
    workers: int = 1
    max_batch: int | None = None
    max_delay_ms: float = 0.0
    qps: float = 10.0
    duration_s: float = 10.0
    find_max: bool = False
    miss_budget: float = 0.01
    latency_bound_ms: float | None = None
    memory_limit_mb: float | None = None
    seed: int = defaults.SEED

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise UserError(f"bad scenario {self.scenario!r}: accepted {', '.join(SCENARIOS)}")
        check_device(self.device)
        check_sizes([self.size] if self.size else None)
        check_precisions([v.precision for v in self.variants])
        for value, what in ((self.streams, "stream count"), (self.workers, "worker count")):
            check_positive(value, what)
        check_positive(self.max_batch, "max batch")
        check_positive(self.threads, "threads")
        for amount, what in (
            (self.fps, "fps"),
            (self.qps, "qps"),
            (self.duration_s, "duration"),
            (self.latency_bound_ms, "latency bound"),
            (self.memory_limit_mb, "memory limit"),
        ):
            if amount is not None and not amount > 0:
                raise UserError(f"bad {what} {amount:g}: expected a number > 0")
        if not 0 < self.miss_budget < 1:
            raise UserError(f"bad miss budget {self.miss_budget:g}: expected a fraction between 0 and 1, e.g. 0.01")
        if not 0 <= self.jitter < 1:
            raise UserError(f"bad jitter {self.jitter:g}: expected a fraction of the frame period in [0, 1)")
        if self.max_delay_ms < 0:
            raise UserError(f"bad max delay {self.max_delay_ms:g} ms: expected >= 0")
        if self.scenario == "server" and self.find_max and self.latency_bound_ms is None:
            raise UserError("server --find-max needs --latency-bound-ms: the p99 it must stay within")
        if not self.combos():
            raise UserError(f"no runtime of {', '.join(self.runtimes)} runs {', '.join(v.tag for v in self.variants)}")

    def combos(self) -> list[tuple[RuntimeSpec, Variant]]:
        """Each runtime with each variant it supports, in the user's runtime order."""
        from segbench.plugins import get_registry

        runtimes = get_registry().runtime_list(",".join(self.runtimes))
        return [(r, v) for r in runtimes for v in self.variants if r.supports(v.precision, v.switches)]

    @property
    def batch(self) -> int:
        """The batch a streams or server session runs, or the largest an offline sweep tries."""
        if self.max_batch is not None:
            return self.max_batch
        return OFFLINE_MAX_BATCH if self.scenario == "offline" else 1

    @property
    def deadline_s(self) -> float | None:
        """When a frame or request misses: one frame period (streams), the latency bound (server)."""
        if self.scenario == "streams":
            return 1.0 / self.fps
        return None if self.latency_bound_ms is None else self.latency_bound_ms / 1e3

    def settings(self) -> Row:
        """The row fields that record the scenario's settings (the searched load left out)."""
        fields: Row = {"scenario": self.scenario, "duration_s": self.duration_s}
        if self.scenario == "offline":
            limit = self.memory_limit_mb
            if limit is None:
                limit = default_memory_limit_mb(defaults.device_type(self.device))
            return {**fields, "max_batch": self.batch, "memory_limit_mb": limit, "workers": 1}
        fields.update(workers=self.workers, max_batch=self.batch, max_delay_ms=self.max_delay_ms)
        fields["batch_size"] = self.batch
        if self.find_max:
            fields["miss_budget"] = self.miss_budget
        if self.scenario == "streams":
            fields.update(fps=self.fps, jitter=self.jitter)
            if not self.find_max:
                fields["streams"] = self.streams
        else:
            fields["latency_bound_ms"] = self.latency_bound_ms
            if not self.find_max:
                fields["qps"] = self.qps
        return fields


def load(specs: Sequence[ModelSpec], config: LoadConfig, context: Context = ALONE) -> Iterator[Row]:
    """The rows of each model x runtime x variant under the scenario, yielded as each cell ends."""
    return measure_cells(cells(specs, config, context), context)


def cells(specs: Sequence[ModelSpec], config: LoadConfig, context: Context = ALONE) -> Iterator[Cell]:
    """One cell per model x runtime x variant; each model is built once."""
    label = device_name(config.device)
    for spec in specs:
        classes = config.num_classes or spec.default_num_classes
        model = Built(spec, seed=config.seed, num_classes=classes)
        height, width = config.size or spec.default_size
        for runtime, variant in config.combos():
            key = variant_key(
                spec,
                config.device,
                label,
                runtime,
                variant,
                height=height,
                width=width,
                num_classes=classes,
                **config.settings(),
            )
            measure = partial(_measure, spec, model, runtime, variant, config, context, (height, width))
            yield Cell([key], measure, device=config.device)


def _measure(
    spec: ModelSpec,
    model: Built,
    runtime: RuntimeSpec,
    variant: Variant,
    config: LoadConfig,
    context: Context,
    size: tuple[int, int],
    keys: list[Row],
) -> list[Row]:
    import torch

    from segbench.measure.faults import VariantUnavailable
    from segbench.measure.settings import measurement_settings

    device = torch.device(config.device)
    missing = (
        runtime.why_unavailable(device.type)
        if device.type in runtime.devices
        else f"{runtime.name} does not run on {device.type}"
    )
    if missing:
        raise VariantUnavailable(missing)
    network = model.get().eval()
    with measurement_settings(device, config.threads) as threads, tempfile.TemporaryDirectory() as workdir:
        context.progress(spec.name, f"load {config.scenario} {runtime.name} {variant.tag}")

        def prepare(batch: int) -> Any:
            x = torch.randn(batch, spec.input_channels(), *size, generator=torch.Generator().manual_seed(config.seed))
            folder = Path(workdir) / f"batch-{batch}"  # an export is for one input shape
            folder.mkdir(exist_ok=True)
            with torch.inference_mode():
                return runtime.prepare(
                    network.to(device),
                    x.to(device),
                    device=device,
                    variant=variant,
                    threads=threads,
                    workdir=folder,
                    calibration=[x] if variant.precision == "int8" else [],
                )

        rows = _offline(prepare, device, config) if config.scenario == "offline" else _loaded(prepare, device, config)
    return [{**row, "threads": threads} for row in rows]


def _loaded(prepare: Callable[[int], Any], device: torch.device, config: LoadConfig) -> list[Row]:
    """Streams or server: one run at the configured load, or the runs of a search for the largest."""
    from segbench.measure.load import search_max, serving

    servers = []
    for _ in range(config.workers):
        serve = serving(prepare(config.batch).call, device)
        for _ in range(WARMUP):
            serve(config.batch)
        servers.append(serve)
    field = "streams" if config.scenario == "streams" else "qps"
    start = config.streams if config.scenario == "streams" else config.qps
    if not config.find_max:
        return [_run(servers, config, start)]
    rows: list[Row] = []
    search = search_max(start, integer=field == "streams", resolution=QPS_RESOLUTION)
    tried = next(search)
    while True:
        load, confirming = tried
        row = {**_run(servers, config, load), field: load}
        passed = row["deadline_miss_rate"] <= config.miss_budget
        row["search"] = ("max" if passed else "unconfirmed") if confirming else "probe"
        rows.append(row)
        try:
            tried = search.send(passed)
        except StopIteration:
            return rows


def _run(servers: Sequence[Callable[[int], None]], config: LoadConfig, load: float) -> Row:
    """One run of the scenario at ``load`` streams (streams) or requests/s (server)."""
    from segbench.measure.load import poisson_arrivals, replay, stream_arrivals

    if config.scenario == "streams":
        arrivals = stream_arrivals(int(load), config.fps, config.duration_s, config.jitter, config.seed)
    else:
        arrivals = poisson_arrivals(load, config.duration_s, config.seed)
    result = replay(
        arrivals,
        servers,
        duration_s=config.duration_s,
        max_batch=config.batch,
        max_delay_s=config.max_delay_ms / 1e3,
        deadline_s=config.deadline_s if config.scenario == "streams" else None,
    )
    return result.fields(config.deadline_s)


def _offline(prepare: Callable[[int], Any], device: torch.device, config: LoadConfig) -> list[Row]:
    """Images/s and peak memory per batch size, up to the largest batch within the memory limit."""
    import torch

    from segbench.measure.faults import OOM, error_reason, release_memory
    from segbench.measure.load import resident_mb, search_max, serving, time_calls
    from segbench.measure.memory import peak_memory
    from segbench.rows.latency import summarize

    limit = config.settings()["memory_limit_mb"]
    rows: list[Row] = []
    search = search_max(1, confirm=False, cap=config.batch)
    load, _ = next(search)
    batch = int(load)  # integer=True: whole batch sizes
    while True:
        row: Row = {"batch_size": batch}
        try:
            session = prepare(batch)
            serve = serving(session.call, device)
            serve(batch)
            with torch.inference_mode():
                row["peak_mem_mb"] = peak_memory(session, device)
            used = row["peak_mem_mb"]
            if used is None and device.type == "cpu":
                used = resident_mb()  # the whole process: conservative, and not a figure of the batch
            fits = limit is None or used is None or used <= limit
            if fits:
                row.update(summarize(time_calls(partial(serve, batch), config.duration_s), batch))
        except Exception as exc:
            if error_reason(exc) != OOM:
                raise
            fits = False
        finally:
            session = serve = None  # type: ignore[assignment]
            release_memory(device)
        row["search"] = None if fits else "over"
        rows.append(row)
        try:
            load, _ = search.send(fits)
            batch = int(load)
        except StopIteration as stop:
            for row in rows:
                if row["batch_size"] == stop.value:
                    row["search"] = "max"
            return rows


def default_memory_limit_mb(device_type: str) -> float | None:
    """`CPU_MEMORY_SHARE` of RAM on CPU; None on CUDA (the device's memory: out-of-memory is the limit)."""
    if device_type == "cuda":
        return None
    return CPU_MEMORY_SHARE * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
