"""``segbench blocks``: the K^2 study, standard vs depthwise-separable conv block, MACs and latency."""

from __future__ import annotations

from typing import Annotated

import typer

from segbench.cli.app import command
from segbench.cli.options import Channels, Device, KernelSizes, Output, parse_int_list, parse_size
from segbench.runners.defaults import Timing

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
    *,
    timing: Timing,
    output: Output,
) -> None:
    """Standard KxK conv block vs depthwise-separable block: params, MACs, ratio 1/N + 1/K^2, latency.

    MACs are multiply-accumulates; FLOPs = 2 x MACs. Latency uses the timing code of `segbench latency`.
    """
    from segbench.cli.job import Job
    from segbench.rows.schema import MACS_NOTE, RATIO_NOTE
    from segbench.runners.blocks import BlocksConfig, blocks, default_specs
    from segbench.runners.defaults import describe_protocol

    job = Job("blocks", device, output)
    config = BlocksConfig(
        kernel_sizes=parse_int_list(kernel_sizes, "kernel size"),
        channels=parse_int_list(channels, "channel count"),
        size=parse_size(size) if size is not None else None,
        batch_size=batch_size,
        device=job.device,
        timing=timing,
    )
    specs = default_specs()
    rows = job.collect(blocks(specs, config, job.context))
    height, width = config.size or specs[0].default_size
    title = (
        f"Standard vs depthwise-separable blocks, C in = out, stride 1, input {batch_size}xCx{height}x{width}, "
        f"{device} ({MACS_NOTE})"
    )
    protocol = describe_protocol(config.protocol, config.timing.processes_on(config.device))
    job.emit(rows, COLUMNS, title, footnotes=[RATIO_NOTE, f"Timing: {protocol}."])
