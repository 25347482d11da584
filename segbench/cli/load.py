"""``segbench load``: camera streams with deadlines, the best offline batch, the most a server sustains."""

from __future__ import annotations

import re
from typing import Annotated, Any

import typer

from segbench.cli.app import command
from segbench.cli.options import (
    ChannelsLast,
    Compile,
    CudaGraph,
    Device,
    FoldBN,
    Models,
    Output,
    Precisions,
    Runtimes,
    Threads,
    parse_names,
    parse_size,
    variants_of,
)
from segbench.cli.output import note
from segbench.errors import UserError

COLUMNS = (
    "model",
    "runtime",
    "precision",
    "height",
    "width",
    "streams",
    "fps",
    "qps",
    "workers",
    "batch_size",
    "offered_ips",
    "throughput_ips",
    "deadline_miss_rate",
    "latency_ms_median",
    "latency_ms_p99",
    "latency_ms_max",
    "queue_ms_p99",
    "dropped",
    "peak_mem_mb",
    "search",
    "error",
)
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
_UNIT_MB = {"": 1.0, "K": 2**-10, "M": 1.0, "G": 2**10, "T": 2**20}

Scenario = Annotated[str, typer.Option("--scenario", help="streams, offline or server.")]
Size = Annotated[str | None, typer.Option("--size", help="HxW of the frames the model runs (default: its own).")]
Streams = Annotated[int, typer.Option("--streams", help="streams: camera count (the first tried with --find-max).")]
Fps = Annotated[float, typer.Option("--fps", help="streams: frames per second of each camera; the deadline is 1/fps.")]
Jitter = Annotated[
    float, typer.Option("--jitter", help="streams: frame times moved by up to +-this share of a period.")
]
Workers = Annotated[int, typer.Option("--workers", help="Sessions serving the queue, one thread each.")]
MaxBatch = Annotated[
    int | None,
    typer.Option("--max-batch", help="Dynamic batcher's largest batch (default 1); offline: largest batch tried."),
]
MaxDelay = Annotated[
    float, typer.Option("--max-delay-ms", help="How long a batch waits to fill after its first request.")
]
Qps = Annotated[float, typer.Option("--qps", help="server: Poisson request rate (the first tried with --find-max).")]
Duration = Annotated[
    float, typer.Option("--duration", help="Seconds of arrivals per run (offline: of calls per batch).")
]
FindMax = Annotated[
    bool, typer.Option("--find-max", help="Search the most streams (or requests/s) within the budget; confirm it.")
]
MissBudget = Annotated[float, typer.Option("--miss-budget", help="Largest share of frames that may miss (0.01 = 1%).")]
LatencyBound = Annotated[
    float | None, typer.Option("--latency-bound-ms", help="server: a request taking longer misses (p99 bound).")
]
MaxMemory = Annotated[
    str | None,
    typer.Option(
        "--max-memory",
        help="offline: peak memory a batch may use, e.g. 2GB (binary units). Default: 1/4 of RAM on CPU.",
    ),
]


@command("load")
def load_command(
    scenario: Scenario = "streams",
    models: Models = None,
    device: Device = "cpu",
    size: Size = None,
    precision: Precisions = "fp32",
    channels_last: ChannelsLast = False,
    compile: Compile = False,
    cuda_graph: CudaGraph = False,
    fold_bn: FoldBN = False,
    runtime: Runtimes = "torch",
    threads: Threads = None,
    streams: Streams = 1,
    fps: Fps = 30.0,
    jitter: Jitter = 0.0,
    workers: Workers = 1,
    max_batch: MaxBatch = None,
    max_delay_ms: MaxDelay = 0.0,
    qps: Qps = 10.0,
    duration: Duration = 10.0,
    find_max: FindMax = False,
    miss_budget: MissBudget = 0.01,
    latency_bound_ms: LatencyBound = None,
    max_memory: MaxMemory = None,
    *,
    output: Output,
) -> None:
    """Load a model as a deployment would: camera streams with deadlines, offline batches, a Poisson server.

    streams: --streams cameras at --fps; a frame misses when its result comes later than 1/fps after it was
    taken. offline: images/s and peak memory per batch up to the memory limit; the best batch named.
    server: Poisson requests at --qps. --find-max searches the largest load within --miss-budget.
    """
    from segbench.cli.job import Job
    from segbench.plugins import get_registry
    from segbench.runners.load import LoadConfig, load

    job = Job("load", device, output)
    config = LoadConfig(
        scenario=scenario,
        device=job.device,
        size=parse_size(size) if size else None,
        runtimes=parse_names(runtime),
        variants=variants_of(precision, channels_last, compile, cuda_graph, fold_bn),
        threads=threads,
        streams=streams,
        fps=fps,
        jitter=jitter,
        workers=workers,
        max_batch=max_batch,
        max_delay_ms=max_delay_ms,
        qps=qps,
        duration_s=duration,
        find_max=find_max,
        miss_budget=miss_budget,
        latency_bound_ms=latency_bound_ms,
        memory_limit_mb=parse_memory(max_memory) if max_memory else None,
    )
    specs = get_registry().select(models, kind="model")
    note(f"load {scenario} on {device}, {duration:g} s per run")
    rows = job.collect(load(specs, config, job.context), on_row=_summary)
    columns = [c for c in COLUMNS if any(r.get(c) not in (None, False) for r in rows) or c == "model"]
    job.emit(rows, columns, f"segbench load {scenario}", footnotes=footnotes(rows))


def parse_memory(text: str) -> float:
    """``"2GB"`` -> 2048.0 (MiB): K, M, G, T with an optional B or iB, all binary; a bare number is MiB."""
    match = _MEMORY.match(text)
    if not match or float(match[1]) <= 0:
        raise UserError(f"bad memory size {text!r}: expected a positive size such as 512MB or 2GB")
    return float(match[1]) * _UNIT_MB[match[2].upper()]


def footnotes(rows: list[dict[str, Any]]) -> list[str]:
    """What each cell found: the largest load or batch, the best offline batch, or that none passed."""
    notes = ["latency: arrival to result; a frame misses when later than 1/fps (server: --latency-bound-ms)"]
    cells: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        if not row.get("error"):
            cells.setdefault((row["model"], row["runtime"], row["precision"], row["scenario"]), []).append(row)
    for (model, runtime, precision, scenario), part in cells.items():
        what = f"{model} {runtime} {precision}"
        if scenario == "offline":
            fitting = [r for r in part if r.get("throughput_ips")]
            if fitting:
                best = max(fitting, key=lambda r: r["throughput_ips"])
                notes.append(f"{what}: best batch {best['batch_size']} ({best['throughput_ips']:.1f} img/s)")
            else:
                notes.append(f"{what}: not even batch 1 fits within the memory limit")
            continue
        if not any(r.get("search") for r in part):
            continue
        found = [r for r in part if r.get("search") == "max"]
        unit = "streams" if scenario == "streams" else "qps"
        if found:
            notes.append(f"{what}: at most {found[0][unit]:g} {unit} within the budget (confirmed)")
        else:
            lowest = min(r[unit] for r in part)
            notes.append(f"{what}: below the lowest load tried ({lowest:g} {unit} already misses too often)")
    return notes


def _summary(row: dict[str, Any]) -> str:
    what = f"{row['model']} {row['runtime']} {row['scenario']}"
    if row.get("error"):
        return f"{what}: error: {row['error']}"
    peak = "" if row.get("peak_mem_mb") is None else f", peak {row['peak_mem_mb']:.1f} MiB"
    if row["scenario"] == "offline":
        speed = "over the memory limit" if row.get("search") == "over" else f"{row['throughput_ips']:.1f} img/s"
        return f"{what} batch {row['batch_size']}: {speed}{peak}"
    miss, p99 = row.get("deadline_miss_rate"), row.get("latency_ms_p99")
    load = f"{row['streams']} x {row['fps']:g} fps" if row["scenario"] == "streams" else f"{row['qps']:g} qps"
    missed = f"{miss:.1%} missed, " if miss is not None else ""
    search = f" ({row['search']})" if row.get("search") else ""
    return f"{what} {load}{search}: {missed}p99 " + ("-" if p99 is None else f"{p99:.1f} ms")
