"""``segbench blocks``: the K^2 study, standard vs depthwise-separable conv block, MACs and latency."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from segbench.cli.app import command
from segbench.cli.options import (
    Channels,
    Device,
    Format,
    Iters,
    KernelSizes,
    NoSave,
    Out,
    Threads,
    Warmup,
    check_device,
    check_format,
    check_positive,
    check_timing,
    parse_int_list,
    parse_size,
)
from segbench.cli.output import collect, emit, note

COLUMNS = (
    "block", "kernel_size", "in_channels", "params", "macs_analytic", "mac_ratio", "mac_ratio_theory",
    "latency_ms_median", "latency_speedup",
)  # fmt: skip
RATIO_NOTE = (
    "on each dsconv row: mac_ratio = dsconv / standard macs_analytic, mac_ratio_theory = 1/N + 1/K^2, "
    "latency_speedup = standard / dsconv median latency"
)

Size = Annotated[Optional[str], typer.Option("--size", help="HxW input size. Default: the blocks' own (64x64).")]
BatchSize = Annotated[int, typer.Option("--batch-size", "-b", help="Batch size.")]


@command("blocks")
def blocks(
    kernel_sizes: KernelSizes = "3,5,7",
    channels: Channels = "32,64,128,256",
    size: Size = None,
    batch_size: BatchSize = 1,
    device: Device = "cpu",
    warmup: Warmup = None,
    iters: Iters = None,
    threads: Threads = None,
    fmt: Format = "table",
    out: Out = Path("results"),
    no_save: NoSave = False,
) -> None:
    """Standard KxK conv block vs depthwise-separable block: params, MACs, ratio 1/N + 1/K^2, latency.

    MACs are multiply-accumulates; FLOPs = 2 x MACs. Latency uses the timing code of `segbench latency`.
    """
    from segbench.blocks_study import check_kernel_sizes, study_rows
    from segbench.latency_sweep import default_iterations
    from segbench.plugins import get_registry
    from segbench.results import MACS_NOTE

    check_format(fmt)
    ks = check_kernel_sizes(parse_int_list(kernel_sizes, "kernel size"))
    cs = parse_int_list(channels, "channel count")
    hw = parse_size(size) if size is not None else get_registry().model("block_standard").default_size
    check_positive(batch_size, "batch size")
    check_timing(warmup, iters, threads)
    check_device(device)
    warmup, iters = default_iterations(device, warmup, iters)
    rows, interrupted = collect(
        study_rows(
            ks, cs, hw, batch_size, device,
            warmup=warmup,
            iters=iters,
            threads=threads,
            progress=note,
        )
    )  # fmt: skip
    title = (
        f"Standard vs depthwise-separable blocks, C in = out, stride 1, input {batch_size}xCx{hw[0]}x{hw[1]}, "
        f"{device} ({MACS_NOTE})"
    )
    columns = COLUMNS + (("error",) if any(r.get("error") for r in rows) else ())
    emit(rows, fmt, "blocks", None if no_save else out, columns=columns, title=title, footnotes=[RATIO_NOTE],
         interrupted=interrupted)  # fmt: skip
