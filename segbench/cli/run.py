"""``segbench run``: params, MACs, latency, memory and brief-training mIoU per model, in one table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from segbench.cli.app import command
from segbench.cli.options import (
    Budget,
    Channels,
    ChannelsLast,
    Compile,
    ConvBackend,
    CudaGraph,
    Dataset,
    DatasetClasses,
    Device,
    FoldBN,
    Format,
    Init,
    Iters,
    KernelSizes,
    NoSave,
    Out,
    Precisions,
    Resume,
    Runtimes,
    Seed,
    Steps,
    Target,
    Threads,
    TrainTime,
    Warmup,
    check_format,
    parse_int_list,
    parse_names,
    parse_size,
    variants_of,
)
from segbench.cli.output import Progress, collect, finish, note, open_journal, resumed_rows, save
from segbench.runners.defaults import TRAIN

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
    precision: Precisions = "fp32",
    channels_last: ChannelsLast = False,
    compile: Compile = False,
    cuda_graph: CudaGraph = False,
    fold_bn: FoldBN = False,
    runtime: Runtimes = "torch",
    threads: Threads = None,
    warmup: Warmup = None,
    iters: Iters = None,
    budget: Budget = None,
    target: Target = None,
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
    fmt: Format = "table",
    out: Out = Path("results"),
    no_save: NoSave = False,
    resume: Resume = None,
) -> None:
    """The whole comparison: per model params, MACs, brief training, mIoU, latency and memory.

    One network per model, built for the dataset's classes, is counted, trained, then timed in every
    --runtime x variant (as in `segbench latency`) at one input size, so every number of a row belongs
    to the same network and input; rows other than PyTorch fp32 eager get their own mIoU through their
    runtime. A model that fails gets its rows with `error` and the others still run (exit 1 at the
    end); Ctrl-C keeps the finished rows. --blocks adds the K^2 study of `segbench blocks` with the
    run's device, batch size, timing and threads. Writes run-<run id>.json/.csv/.md under --out.
    """
    from segbench.plugins import get_registry
    from segbench.runners.blocks import BlocksConfig
    from segbench.runners.distributed import join
    from segbench.runners.run import RunConfig, plan, rows

    team = join(device)  # first: a rank's cores are pinned before torch starts its threads
    check_format(fmt)
    progress, previous = Progress(), resumed_rows(resume, "run")
    block_study = BlocksConfig(
        kernel_sizes=parse_int_list(kernel_sizes, "kernel size"),
        channels=parse_int_list(channels, "channel count"),
        size=parse_size(block_size) if block_size else None,
    )
    config = RunConfig(
        device=team.device if team else device,
        size=parse_size(size) if size else None,
        batch_size=batch_size,
        runtimes=parse_names(runtime),
        variants=variants_of(precision, channels_last, compile, cuda_graph, fold_bn),
        warmup=warmup,
        iters=iters,
        budget_s=budget,
        target=target,
        threads=threads,
        dataset=dataset,
        num_classes=num_classes,
        steps=steps,
        train_batch_size=train_batch_size,
        seed=seed,
        blocks=block_study if blocks else None,
        progress=progress,
        done=previous,
        shard=team and team.shard,
        train_time=train_time,
        conv_backend=conv_backend,
        init=init,
    )
    checked = plan(get_registry().select(models, kind="model"), config)
    journal = open_journal(None if no_save else out, "run", resume, previous, team)
    settings = checked.describe()
    for line in settings:
        note(line)
    done, stopped = collect(rows(checked), progress, journal, team=team)
    _finish(done, stopped, fmt, journal, settings)


def _finish(rows: list[dict[str, Any]], stopped: int | None, fmt: str, journal: Any, settings: list[str]) -> None:
    """Print the tables, save the files (Markdown with the sections and notes), set the exit code."""
    from segbench.output.tables import render_sections, sections_markdown
    from segbench.rows.schema import mac_footnotes

    footnotes = [*settings, *mac_footnotes(rows)]
    if rows:
        render_sections(rows, fmt, "segbench run", footnotes)
    save(rows, journal, sections_markdown(rows, "segbench run", footnotes))
    finish(rows, stopped)
