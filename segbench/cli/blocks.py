"""``segbench blocks``: the K^2 study, standard vs depthwise-separable conv block, MACs and latency."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from segbench.cli.app import command
from segbench.cli.options import (
    Budget,
    Channels,
    Device,
    Format,
    Iters,
    KernelSizes,
    NoSave,
    Out,
    Resume,
    Target,
    Threads,
    Warmup,
    check_format,
    parse_int_list,
    parse_size,
)
from segbench.cli.output import Progress, collect, emit, open_journal, resumed_rows

COLUMNS = (
    "block",
    "kernel_size",
    "in_channels",
    "params",
    "macs_analytic",
    "mac_ratio",
    "mac_ratio_theory",
    "latency_ms_median",
    "latency_speedup",
    "latency_speedup_ci_low",
    "latency_speedup_ci_high",
    "ci_target_met",
)

Size = Annotated[str | None, typer.Option("--size", help="HxW input size. Default: the blocks' own (64x64).")]
BatchSize = Annotated[int, typer.Option("--batch-size", "-b", help="Batch size.")]


@command("blocks")
def blocks_command(
    kernel_sizes: KernelSizes = "3,5,7",
    channels: Channels = "32,64,128,256",
    size: Size = None,
    batch_size: BatchSize = 1,
    device: Device = "cpu",
    warmup: Warmup = None,
    iters: Iters = None,
    budget: Budget = None,
    target: Target = None,
    threads: Threads = None,
    fmt: Format = "table",
    out: Out = Path("results"),
    no_save: NoSave = False,
    resume: Resume = None,
) -> None:
    """Standard KxK conv block vs depthwise-separable block: params, MACs, ratio 1/N + 1/K^2, latency.

    MACs are multiply-accumulates; FLOPs = 2 x MACs. Latency uses the timing code of `segbench latency`.
    """
    from segbench.rows.schema import MACS_NOTE, RATIO_NOTE
    from segbench.runners.blocks import BlocksConfig, blocks, default_specs
    from segbench.runners.distributed import join

    team = join(device)  # first: a rank's cores are pinned before torch starts its threads
    check_format(fmt)
    progress, previous = Progress(), resumed_rows(resume, "blocks")
    config = BlocksConfig(
        kernel_sizes=parse_int_list(kernel_sizes, "kernel size"),
        channels=parse_int_list(channels, "channel count"),
        size=parse_size(size) if size is not None else None,
        batch_size=batch_size,
        device=team.device if team else device,
        warmup=warmup,
        iters=iters,
        budget_s=budget,
        target=target,
        threads=threads,
        progress=progress,
        done=previous,
        shard=team and team.shard,
    )
    specs = default_specs()
    study = blocks(specs, config)
    journal = open_journal(None if no_save else out, "blocks", resume, previous, team)
    rows, stopped = collect(study, progress, journal, team=team)
    height, width = config.size or specs[0].default_size
    title = (
        f"Standard vs depthwise-separable blocks, C in = out, stride 1, input {batch_size}xCx{height}x{width}, "
        f"{device} ({MACS_NOTE})"
    )
    columns = COLUMNS + (("error",) if any(r.get("error") for r in rows) else ())
    emit(rows, fmt, journal, columns=columns, title=title, footnotes=[RATIO_NOTE], stopped=stopped)
