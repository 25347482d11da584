"""``segbench train``: train each model briefly under one fixed budget and report mIoU next to its cost."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from segbench.cli.app import command
from segbench.cli.options import (
    Dataset,
    DatasetClasses,
    Device,
    Format,
    Models,
    NoSave,
    Out,
    Seed,
    check_device,
    check_format,
    check_nonnegative,
    check_positive,
    parse_size,
)
from segbench.cli.output import collect, emit, note
from segbench.errors import UserError

COLUMNS = (
    "model", "dataset", "train_steps", "batch_size", "height", "width", "train_seconds", "miou",
    "pixel_acc", "peak_mem_mb", "device", "precision",
)  # fmt: skip
MODEL_FIELD = "{model}"

# the defaults are segbench.train's (not imported here: that would import torch for --help); a test
# checks that these texts match them
Steps = Annotated[
    Optional[int], typer.Option("--steps", help="Optimiser steps; 0 only evaluates --weights. Default: 150.")
]
Size = Annotated[
    Optional[str], typer.Option("--size", help="Training and evaluation HxW. Default: the dataset's (synthetic 128x128).")
]
BatchSize = Annotated[Optional[int], typer.Option("--batch-size", "-b", help="Training batch size. Default: 8.")]
LearningRate = Annotated[
    Optional[float], typer.Option("--lr", help="Peak learning rate (SGD, poly decay). Default: 0.02.")
]
Save = Annotated[
    Optional[str], typer.Option("--save", help="Write the trained state_dict here ({model} = model name).")
]
Weights = Annotated[
    Optional[str], typer.Option("--weights", help="Start from this local state_dict ({model} = model name).")
]


@command("train")
def train(
    models: Models = None,
    dataset: Dataset = "synthetic",
    steps: Steps = None,
    size: Size = None,
    batch_size: BatchSize = None,
    lr: LearningRate = None,
    device: Device = "cpu",
    seed: Seed = 0,
    num_classes: DatasetClasses = None,
    save: Save = None,
    weights: Weights = None,
    fmt: Format = "table",
    out: Out = Path("results"),
    no_save: NoSave = False,
) -> None:
    """Train each model briefly on one dataset and report mIoU, pixel accuracy, time and peak memory.

    Every model gets the same recipe and budget (see the table's footnotes); the dataset's class count
    sets each model's output classes. Bad input fails before anything is trained or written.
    """
    from segbench.data import open_datasets
    from segbench.plugins import get_registry
    from segbench.train import DEFAULT_BATCH_SIZE, DEFAULT_STEPS

    check_format(fmt)
    check_device(device)
    check_nonnegative(steps, "steps")
    check_positive(batch_size, "batch size")
    check_positive(num_classes, "number of classes")
    if lr is not None and not lr > 0:
        raise UserError(f"bad learning rate {lr}: expected a number > 0")
    train_size = parse_size(size) if size else None
    specs = get_registry().select(models, kind="model")
    for spec in specs:
        if spec.kind != "model":
            raise UserError(f"{spec.name} is a {spec.kind}, not a segmentation model; train takes models")
    save_paths = _per_model(save, "--save", [s.name for s in specs])
    weight_paths = _per_model(weights, "--weights", [s.name for s in specs])
    for path in weight_paths.values():
        if path is not None and not Path(path).is_file():
            raise UserError(f"{path}: weights file not found; expected a local state_dict checkpoint (.pt)")
    train_set, val_set = open_datasets(dataset, seed=seed, num_classes=num_classes)

    options = {
        "steps": DEFAULT_STEPS if steps is None else steps,
        "batch_size": batch_size or DEFAULT_BATCH_SIZE,
        "size": train_size,
        "lr": lr,
        "device": device,
        "progress": True,
    }
    rows, interrupted = _train_all(specs, train_set, val_set, seed, options, save_paths, weight_paths)
    columns = COLUMNS + (("error",) if any(r.get("error") for r in rows) else ())
    emit(rows, fmt, "train", None if no_save else out, columns=columns, title="segbench train",
         footnotes=_footnotes(rows, lr), interrupted=interrupted)  # fmt: skip


def _per_model(template: str | None, option: str, names: list[str]) -> dict[str, str | None]:
    """One path per model: ``{model}`` in the path is replaced by its name (required for several)."""
    if template is not None and len(names) > 1 and MODEL_FIELD not in template:
        raise UserError(f"{option} {template!r} with {len(names)} models: put {MODEL_FIELD} in the path")
    return {n: None if template is None else template.replace(MODEL_FIELD, n) for n in names}


def _train_all(
    specs: list[Any],
    train_set: Any,
    val_set: Any,
    seed: int,
    options: dict[str, Any],
    save_paths: dict[str, str | None],
    weight_paths: dict[str, str | None],
) -> tuple[list[dict[str, Any]], bool]:
    """Train the specs in turn; Ctrl-C keeps the rows already finished."""
    from segbench.results import make_row
    from segbench.train import train_spec

    note(f"{len(train_set)} train / {len(val_set)} val images from {train_set.name}, {train_set.num_classes} classes")
    rows = (
        make_row(**train_spec(spec, train_set, val_set, seed=seed, save=save_paths[spec.name],
                              weights=weight_paths[spec.name], **options))
        for spec in specs
    )  # fmt: skip
    return collect(rows, on_row=lambda row: note(_summary(row)))


def _summary(row: dict[str, Any]) -> str:
    if row.get("error"):
        return f"{row['model']}: error: {row['error']}"
    return f"{row['model']}: mIoU {row['miou']:.4f} after {row['train_steps']} steps in {row['train_seconds']:.1f} s"


def _footnotes(rows: list[dict[str, Any]], lr: float | None) -> list[str]:
    from segbench import train as recipe

    cuda = any(str(r.get("device", "")).startswith("cuda") for r in rows)
    memory = (
        "peak_mem_mb: torch.cuda.max_memory_allocated while training"
        if cuda
        else "peak_mem_mb: weights and buffers + CPU allocator peak of the first training step (grads, momentum, activations)"
    )
    low, high = recipe.SCALE_RANGE
    return [
        f"From scratch: SGD lr {lr or recipe.DEFAULT_LR:g} momentum {recipe.MOMENTUM:g} wd {recipe.WEIGHT_DECAY:g}, poly "
        f"{recipe.POLY_POWER:g}; cross-entropy ignoring 255, aux outputs x{recipe.AUX_WEIGHT:g}; "
        f"scale {low:g}-{high:g}, crop, flip",
        "Eval: val images resized to HxW, logits back to mask size; mIoU leaves out classes absent from "
        "both prediction and ground truth",
        memory,
    ]
