"""``segbench run``: params, MACs, latency, memory and brief-training mIoU per model, in one table."""

from __future__ import annotations

from typing import Annotated

import typer

from segbench.cli.app import command
from segbench.cli.options import (
    Channels,
    ConvBackend,
    Dataset,
    DatasetClasses,
    Device,
    EndToEnd,
    Evaluation,
    Init,
    KernelSizes,
    Output,
    Seed,
    SourceSize,
    Steps,
    TrainTime,
    Variants,
    parse_int_list,
    parse_size,
)
from segbench.cli.output import note
from segbench.runners.defaults import TRAIN, Timing

Models = Annotated[
    str,
    typer.Option("--models", "-m", help="Comma list of names or globs (fcn*), or 'all'. Default: fcn8s,fast_scnn."),
]
Size = Annotated[
    str | None, typer.Option("--size", help="HxW for counting, latency and training. Default: the dataset's.")
]
BatchSize = Annotated[int, typer.Option("--batch-size", "-b", help="Batch size of counting and latency.")]
Blocks = Annotated[bool, typer.Option("--blocks", help="Add the K^2 block table (see segbench blocks).")]
BlockSize = Annotated[
    str | None, typer.Option("--block-size", help="HxW input of the block table. Default: the blocks' (64x64).")
]
TrainBatchSize = Annotated[
    int | None,
    typer.Option(
        "--train-batch-size", help=f"Training batch size. Default: {TRAIN['cpu'][1]} CPU, {TRAIN['cuda'][1]} CUDA."
    ),
]


@command("run")
def run_command(
    models: Models = "fcn8s,fast_scnn",
    device: Device = "cpu",
    size: Size = None,
    batch_size: BatchSize = 1,
    *,
    variants: Variants,
    end_to_end: EndToEnd = False,
    source_size: SourceSize = None,
    evaluation: Evaluation,
    timing: Timing,
    dataset: Dataset = "synthetic",
    num_classes: DatasetClasses = None,
    steps: Steps = None,
    train_time: TrainTime = None,
    train_batch_size: TrainBatchSize = None,
    seed: Seed = 0,
    init: Init = None,
    conv_backend: ConvBackend = "auto",
    blocks: Blocks = False,
    kernel_sizes: KernelSizes = "3,5,7",
    channels: Channels = "32,64,128,256",
    block_size: BlockSize = None,
    output: Output,
) -> None:
    """The whole comparison: per model params, MACs, brief training, mIoU, latency and memory.

    One network per model, built for the dataset's classes, is counted, trained, then timed in every
    --runtime x variant (as in `segbench latency`) at one input size, so every number of a row belongs
    to the same network and input; rows other than PyTorch fp32 eager get their own mIoU through their
    runtime. A model that fails gets its rows with `error` and the others still run (exit 1 at the
    end); Ctrl-C keeps the finished rows. --blocks adds the K^2 study of `segbench blocks` with the
    run's device, batch size, timing and threads. Writes run-<run id>.json/.csv/.md under --out.
    """
    from segbench.cli.job import Job
    from segbench.plugins import get_registry
    from segbench.rows.schema import mac_footnotes
    from segbench.runners.blocks import BlocksConfig
    from segbench.runners.latency import LatencyConfig
    from segbench.runners.run import RunConfig, run
    from segbench.runners.train import TrainConfig

    job = Job("run", device, output)
    block_study = BlocksConfig(
        kernel_sizes=parse_int_list(kernel_sizes, "kernel size"),
        channels=parse_int_list(channels, "channel count"),
        size=parse_size(block_size) if block_size else None,
        batch_size=batch_size,
        device=job.device,
        timing=timing,
    )
    train = TrainConfig(
        dataset=dataset,
        num_classes=num_classes,
        device=job.device,
        steps=steps,
        batch_size=train_batch_size,
        size=parse_size(size) if size else None,
        seed=seed,
        train_time=train_time,
        conv_backend=conv_backend,
        init=init,
        evaluation=evaluation.parsed(),
    )
    latency = LatencyConfig(
        device=job.device,
        batch_sizes=[batch_size],
        runtimes=variants.runtimes(),
        variants=variants.parsed(),
        timing=timing,
        dataset=dataset,
        seed=seed,
        evaluation=train.evaluation,
        accuracy=True,
        end_to_end=end_to_end,
        source_size=parse_size(source_size) if source_size else None,
    )
    config = RunConfig(train=train, latency=latency, blocks=block_study if blocks else None)
    measured = run(get_registry().select(models, kind="model"), config, job.context)
    settings = measured.describe()
    for line in settings:
        note(line)
    rows = job.collect(measured)
    job.emit_sections(rows, "segbench run", [*settings, *mac_footnotes(rows)])
