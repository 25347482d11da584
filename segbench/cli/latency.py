"""``segbench latency``: latency, throughput and peak memory per model x size x batch x variant."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from segbench.cli.app import command
from segbench.cli.options import (
    BatchSizes,
    Device,
    EndToEnd,
    Evaluation,
    Models,
    Output,
    Sizes,
    SourceSize,
    Variants,
    parse_int_list,
    parse_size,
    parse_sizes,
)
from segbench.cli.output import note
from segbench.rows.schema import VARIANT_FIELDS
from segbench.runners.defaults import Timing

COLUMNS = (
    "model",
    "batch_size",
    "height",
    "width",
    *(field for field in VARIANT_FIELDS if field != "device"),  # the device: one per run
    "latency_ms_median",
    "latency_speedup",
    "host_ms_median",
    "throughput_ips",
    "peak_mem_mb",
    "output_max_abs_diff",
    "output_argmax_agreement",
    "compile_seconds",
    "trace_file",
    "e2e_ms_median",
    "preprocess_ms_median",
    "model_ms_median",
    "postprocess_ms_median",
    "miou",
    "miou_delta",
    "error",
)

Images = Annotated[
    str | None,
    typer.Option(
        "--dataset",
        help="Dataset whose first val image (resized) is the timed input and whose train images calibrate int8; "
        "given, every row also gets mIoU on its val split and miou_delta (points) vs PyTorch fp32 eager. "
        "Default: synthetic, no mIoU.",
    ),
]
Weights = Annotated[
    str | None,
    typer.Option("--weights", help="Time this local state_dict ({model} = model name), not the seeded init."),
]
Trace = Annotated[Path | None, typer.Option("--trace", help="Write a torch.profiler Chrome trace per row here.")]


@command("latency")
def latency_command(
    models: Models = None,
    device: Device = "cpu",
    size: Sizes = None,
    batch_size: BatchSizes = "1",
    *,
    variants: Variants,
    dataset: Images = None,
    weights: Weights = None,
    end_to_end: EndToEnd = False,
    source_size: SourceSize = None,
    evaluation: Evaluation,
    timing: Timing,
    trace: Trace = None,
    output: Output,
) -> None:
    """Time forward passes: median/p90 latency, host time, throughput, peak memory, fast-variant agreement.

    Each runtime in --runtime gets one row per variant it supports: fp32 first, then each precision in
    --precision combined with every switch given (--channels-last, --compile, --cuda-graph, --fold-bn)
    off and on. Every row but PyTorch fp32 eager is compared with it on the same input.
    """
    from segbench.cli.job import Job
    from segbench.plugins import get_registry
    from segbench.runners.defaults import describe_protocol
    from segbench.runners.latency import LatencyConfig, latency

    job = Job("latency", device, output)
    config = LatencyConfig(
        device=job.device,
        sizes=parse_sizes(size),
        batch_sizes=parse_int_list(batch_size, "batch size"),
        variants=variants.parsed(),
        runtimes=variants.runtimes(),
        dataset=dataset or "synthetic",
        weights=weights,
        timing=timing,
        trace_dir=trace,
        evaluation=evaluation.parsed(),
        accuracy=dataset is not None,
        end_to_end=end_to_end,
        source_size=parse_size(source_size) if source_size else None,
    )
    specs = get_registry().select(models, kind="model")
    protocol = describe_protocol(config.protocol, config.timing.processes_on(config.device))
    rows_per_cell = ", ".join(f"{r.name} {v.tag}" for r, v in config.combos())
    note(f"{protocol} on {device}; per cell: {rows_per_cell}")
    rows = job.collect(latency(specs, config, job.context), on_row=_summary)
    job.emit(rows, _columns(rows, device), "segbench latency", footnotes=_footnotes(protocol, device, rows))


def _columns(rows: list[dict[str, Any]], device: str) -> list[str]:
    """COLUMNS less those that say nothing here: a switch nobody set, an empty field, CPU host time."""
    always = {"model", "batch_size", "height", "width", "precision", "latency_ms_median", "throughput_ips"}
    shown = []
    for column in COLUMNS:
        values = [r.get(column) for r in rows]
        if column == "host_ms_median" and not device.startswith("cuda"):
            continue  # the same clock as the latency on CPU
        if column == "runtime" and len(set(values)) < 2:
            continue  # one runtime: said in the footnotes
        if column in always or any(v not in (None, False) for v in values):
            shown.append(column)
    return shown


def _footnotes(protocol: str, device: str, rows: list[dict[str, Any]]) -> list[str]:
    if device.startswith("cuda"):
        clock = "CUDA events around each call, synchronised; cudnn.benchmark on; host_ms = time to launch"
        memory = "peak_mem_mb: torch.cuda.max_memory_allocated above the weights and input"
    else:
        threads = sorted({r["threads"] for r in rows if r.get("threads")})
        clock = f"time.perf_counter around each call; torch threads {', '.join(map(str, threads)) or '-'}"
        memory = "peak_mem_mb: peak tensor memory from the CPU allocator in one profiled forward pass"
    runtimes = ", ".join(dict.fromkeys(str(r.get("runtime")) for r in rows))
    return [
        f"Runtime {runtimes}; latency: {protocol}; {clock}; preparation (export, compile) apart in compile_seconds",
        "latency_speedup: median of fp32-eager / row per-call ratios, each row timed alternately with PyTorch fp32 "
        "eager; 95% intervals of the medians and speed-ups in the result files (*_ci_low, *_ci_high)",
        memory,
        "output_*: fast variant vs fp32 eager on the same input (max |logit diff|, argmax agreement)",
    ]


def _summary(row: dict[str, Any]) -> str:
    what = f"{row['model']} {row['batch_size']}x{row['height']}x{row['width']} {_tag(row)}"
    if row.get("error"):
        return f"{what}: error: {row['error']}"
    return f"{what}: {row['latency_ms_median']:.3f} ms median, {row['throughput_ips']:.1f} img/s"


def _tag(row: dict[str, Any]) -> str:
    from segbench.measure.session import Variant

    return f"{row['runtime']} {Variant.of_row(row).tag}"
