"""``segbench train``: train each model briefly under one fixed budget and report mIoU next to its cost."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from segbench.cli.app import command
from segbench.cli.options import (
    ConvBackend,
    Dataset,
    DatasetClasses,
    Device,
    Evaluation,
    Init,
    Models,
    Output,
    Seed,
    Steps,
    TrainTime,
    parse_size,
)
from segbench.cli.output import note
from segbench.measure.recipe import AUX_WEIGHT, DEFAULT_LR, MOMENTUM, POLY_POWER, SCALE_RANGE, WEIGHT_DECAY
from segbench.runners.defaults import TRAIN

COLUMNS = (
    "model",
    "dataset",
    "init",
    "train_steps",
    "train_budget_seconds",
    "batch_size",
    "height",
    "width",
    "train_seconds",
    "train_conv_backend",
    "miou",
    "pixel_acc",
    "peak_mem_mb",
    "device",
    "precision",
)

Size = Annotated[
    str | None, typer.Option("--size", help="Training and evaluation HxW. Default: the dataset's (synthetic 128x128).")
]
BatchSize = Annotated[
    int | None,
    typer.Option(
        "--batch-size", "-b", help=f"Training batch size. Default: {TRAIN['cpu'][1]} CPU, {TRAIN['cuda'][1]} CUDA."
    ),
]
LearningRate = Annotated[
    float | None, typer.Option("--lr", help=f"Peak learning rate (SGD, poly decay). Default: {DEFAULT_LR:g}.")
]
Save = Annotated[str | None, typer.Option("--save", help="Write the trained state_dict here ({model} = model name).")]
Weights = Annotated[
    str | None, typer.Option("--weights", help="Start from this local state_dict ({model} = model name).")
]


@command("train")
def train_command(
    models: Models = None,
    dataset: Dataset = "synthetic",
    steps: Steps = None,
    train_time: TrainTime = None,
    size: Size = None,
    batch_size: BatchSize = None,
    lr: LearningRate = None,
    device: Device = "cpu",
    seed: Seed = 0,
    num_classes: DatasetClasses = None,
    save: Save = None,
    weights: Weights = None,
    init: Init = None,
    conv_backend: ConvBackend = "auto",
    *,
    evaluation: Evaluation,
    output: Output,
) -> None:
    """Train each model briefly on one dataset and report mIoU, pixel accuracy, time and peak memory.

    Every model gets the same recipe and budget (see the table's footnotes); the dataset's class count
    sets each model's output classes. Bad input fails before anything is trained or written.
    """
    from segbench.cli.job import Job
    from segbench.plugins import get_registry
    from segbench.runners.train import TrainConfig, train

    job = Job("train", device, output, data_parallel=True)
    config = TrainConfig(
        dataset=dataset,
        num_classes=num_classes,
        device=job.device,
        steps=steps,
        batch_size=batch_size,
        size=parse_size(size) if size else None,
        lr=lr,
        seed=seed,
        weights=weights,
        save=save,
        train_time=train_time,
        conv_backend=conv_backend,
        init=init,
        evaluation=evaluation.parsed(),
    )
    trained = train(get_registry().select(models, kind="model"), config, job.context)
    for line in trained.describe():
        note(line)
    rows = job.collect(trained, on_row=_summary)
    job.emit(rows, COLUMNS, "segbench train", footnotes=_footnotes(rows, lr))


def _summary(row: dict[str, Any]) -> str:
    if row.get("error"):
        return f"{row['model']}: error: {row['error']}"
    backend = f" (conv backend {row['train_conv_backend']})" if row.get("train_conv_backend") else ""
    return f"{row['model']}: mIoU {row['miou']:.4f} after {row['train_steps']} steps in {row['train_seconds']:.1f} s{backend}"


def _footnotes(rows: list[dict[str, Any]], lr: float | None) -> list[str]:
    cuda = any(str(r.get("device", "")).startswith("cuda") for r in rows)
    memory = (
        "peak_mem_mb: torch.cuda.max_memory_allocated while training"
        if cuda
        else "peak_mem_mb: weights and buffers + CPU allocator peak of the first training step (grads, momentum, activations)"
    )
    low, high = SCALE_RANGE
    return [
        f"Start: see init (scratch = random weights); SGD lr {lr or DEFAULT_LR:g} momentum {MOMENTUM:g} wd {WEIGHT_DECAY:g}, poly "
        f"{POLY_POWER:g}; cross-entropy ignoring 255, aux outputs x{AUX_WEIGHT:g}; scale {low:g}-{high:g}, crop, flip",
        "Eval: val images resized to HxW, logits back to mask size; mIoU leaves out classes absent from "
        "both prediction and ground truth",
        memory,
        "train_seconds: the training steps with their data loading; not the conv probe (conv_probe_seconds), "
        "the step timing under --train-time, or evaluation",
    ] + [
        f"Data parallel over {size} ranks (torchrun, DDP): batch_size is the global batch, {size} equal parts; "
        "BatchNorm synchronised over the ranks; loss over the batch's labelled pixels; peak_mem_mb is rank 0's"
        for size in sorted({r["world_size"] for r in rows if r.get("world_size")})
    ]
