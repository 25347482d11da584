"""``segbench run``: params, MACs, latency, memory and brief-training mIoU per model, in one table."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from segbench.cli.app import command
from segbench.cli.options import (
    Channels,
    Dataset,
    DatasetClasses,
    Device,
    Format,
    Iters,
    KernelSizes,
    NoSave,
    Out,
    Seed,
    Threads,
    Warmup,
    check_device,
    check_format,
    check_nonnegative,
    check_positive,
    check_timing,
    parse_int_list,
    parse_size,
)
from segbench.cli.output import finish, note
from segbench.errors import UserError

if TYPE_CHECKING:
    from segbench.run import RunResult

Models = Annotated[
    str,
    typer.Option("--models", "-m", help="Comma list of names or globs (fcn*), or 'all'. Default: fcn8s,fast_scnn."),
]
Size = Annotated[
    Optional[str], typer.Option("--size", help="HxW for counting, latency and training. Default: the dataset's.")
]
BatchSize = Annotated[int, typer.Option("--batch-size", "-b", help="Batch size of counting and latency.")]
Precision = Annotated[str, typer.Option("--precision", help="Latency variant: fp32, fp16 or bf16.")]
ChannelsLast = Annotated[bool, typer.Option("--channels-last", help="Time the channels_last variant.")]
Compile = Annotated[bool, typer.Option("--compile", help="Time the torch.compile variant.")]
CudaGraph = Annotated[bool, typer.Option("--cuda-graph", help="Time the CUDA-graph variant (CUDA only).")]
Blocks = Annotated[bool, typer.Option("--blocks", help="Add the K^2 block table (see segbench blocks).")]
BlockSize = Annotated[
    Optional[str], typer.Option("--block-size", help="HxW input of the block table. Default: the blocks' (64x64).")
]
Steps = Annotated[Optional[int], typer.Option("--steps", help="Training steps. Default: 120 on CPU, 300 on CUDA.")]
TrainBatchSize = Annotated[
    Optional[int], typer.Option("--train-batch-size", help="Training batch size. Default: 4 on CPU, 8 on CUDA.")
]


@command("run")
def run(
    models: Models = "fcn8s,fast_scnn",
    device: Device = "cpu",
    size: Size = None,
    batch_size: BatchSize = 1,
    precision: Precision = "fp32",
    channels_last: ChannelsLast = False,
    compile: Compile = False,
    cuda_graph: CudaGraph = False,
    threads: Threads = None,
    warmup: Warmup = None,
    iters: Iters = None,
    dataset: Dataset = "synthetic",
    num_classes: DatasetClasses = None,
    steps: Steps = None,
    train_batch_size: TrainBatchSize = None,
    seed: Seed = 0,
    blocks: Blocks = False,
    kernel_sizes: KernelSizes = "3,5,7",
    channels: Channels = "32,64,128,256",
    block_size: BlockSize = None,
    fmt: Format = "table",
    out: Out = Path("results"),
    no_save: NoSave = False,
) -> None:
    """The whole comparison: per model params, MACs, latency, memory, brief training and mIoU.

    One network per model, built for the dataset's classes, is counted, timed and trained at one input
    size, so every number of a row belongs to the same network and input. A model that fails gets its
    row with `error` and the others still run (exit 1 at the end); Ctrl-C keeps the finished rows.
    --blocks adds the K^2 study of `segbench blocks` (standard vs depthwise-separable conv) with the
    run's device, batch size, timing and threads. Writes run-<timestamp>.json/.csv/.md under --out.
    """
    from segbench.blocks_study import check_kernel_sizes
    from segbench.latency_sweep import PRECISION_NAMES
    from segbench.plugins import get_registry
    from segbench.run import RunConfig, RunResult, prepare, run_blocks, run_models

    check_format(fmt)
    check_device(device)
    check_timing(warmup, iters, threads)
    for value, what in ((batch_size, "batch size"), (train_batch_size, "train batch size"),
                        (num_classes, "num classes")):  # fmt: skip
        check_positive(value, what)
    check_nonnegative(steps, "steps")
    if precision not in PRECISION_NAMES:
        raise UserError(f"bad precision {precision!r}: accepted {', '.join(PRECISION_NAMES)}")
    specs = get_registry().select(models, kind="model")
    block_grid = (
        (check_kernel_sizes(parse_int_list(kernel_sizes, "kernel size")), parse_int_list(channels, "channel count"))
        if blocks
        else None
    )
    block_hw = parse_size(block_size) if block_size else None
    config, train_set, val_set = prepare(
        RunConfig(
            device=device, size=parse_size(size) if size else None, batch_size=batch_size, precision=precision,
            channels_last=channels_last, compile=compile, cuda_graph=cuda_graph, warmup=warmup, iters=iters,
            threads=threads, dataset=dataset, num_classes=num_classes, steps=steps,
            train_batch_size=train_batch_size, seed=seed,
        )
    )  # fmt: skip
    settings = config.describe()
    for line in settings:
        note(line)
    result = RunResult()
    try:
        with RunProgress(len(specs) + blocks) as progress:
            run_models(specs, config, train_set, val_set, progress.update, result)
            if block_grid:
                run_blocks(*block_grid, config, block_hw, progress.update, result)
    except KeyboardInterrupt:
        result.interrupted = True
        note(f"interrupted: keeping the {len(result.rows)} finished row(s)")
    _finish(result, fmt, None if no_save else out, settings)


def _finish(result: "RunResult", fmt: str, out: Path | None, settings: list[str]) -> None:
    """Print the tables, save the files (Markdown with the sections and notes), set the exit code."""
    from segbench.report import render_sections, sections_markdown
    from segbench.results import save_rows

    rows = result.rows
    footnotes = [*settings, *result.footnotes]
    if rows:
        render_sections(rows, fmt, "segbench run", footnotes)
    if out is not None and rows:
        paths = save_rows(rows, out, "run")
        paths[2].write_text(sections_markdown(rows, "segbench run", footnotes) + "\n")
        note(f"wrote {', '.join(map(str, paths))}")
    finish(rows, result.interrupted)


class RunProgress:
    """A rich progress bar on stderr over the models, its text the model and stage now running."""

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=Console(stderr=True),
        )  # fmt: skip
        self.task = self.bar.add_task("starting", total=total)
        self.started: dict[str, float] = {}

    def __enter__(self) -> "RunProgress":
        self.bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.stop()

    def update(self, model: str, stage: str) -> None:
        """Show ``model: stage``; on ``done``, advance the bar and print how long the model took."""
        now = time.perf_counter()
        started = self.started.setdefault(model, now)
        if stage == "done":
            self.bar.advance(self.task)
            self.bar.console.print(f"segbench: {model}: done in {now - started:.1f} s")
        self.bar.update(self.task, description=f"{model}: {stage}")
