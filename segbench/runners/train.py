"""The train runner (``segbench train``, and the last stage of ``run``): brief training, then mIoU.

One cell per model: build it for the dataset's classes from the seed, train it under the recipe
and budget of `segbench.measure.training` (the same for every model), evaluate on the val split.
Everything that can be checked without training (the dataset's files, the ``--weights`` files,
block specs given to a trainer) is checked when the runner is called, before the first cell.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from segbench.checks import check_device, check_nonnegative, check_positive, check_sizes, check_writable
from segbench.errors import UserError
from segbench.rows.environment import device_name
from segbench.rows.schema import spec_fields
from segbench.runners import defaults
from segbench.runners.cells import Built, Cell, Row, RunnerOptions, measure_cells
from segbench.runners.weights import check_weights, per_model

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from segbench.measure.data_parallel import DataParallel
    from segbench.registry import ModelSpec

@dataclass(frozen=True)
class TrainConfig(RunnerOptions):
    """The dataset, the budget (None: the device type's defaults) and the files of a training run.

    ``weights`` and ``save`` are paths in which ``{model}`` stands for the model's name (required
    when several models are trained). ``parallel``: train as one rank of a data-parallel job (torchrun);
    the batch size is then the global batch, split over the ranks.
    """

    dataset: str = "synthetic"
    num_classes: int | None = None
    device: str = "cpu"
    steps: int | None = None
    batch_size: int | None = None
    size: tuple[int, int] | None = None
    lr: float | None = None
    seed: int = defaults.SEED
    weights: str | None = None
    save: str | None = None
    parallel: "DataParallel | None" = field(default=None, compare=False)

    def __post_init__(self) -> None:
        check_device(self.device)
        check_nonnegative(self.steps, "steps")
        check_positive(self.batch_size, "batch size")
        check_positive(self.num_classes, "number of classes")
        check_sizes([self.size] if self.size else None)
        if self.lr is not None and not self.lr > 0:
            raise UserError(f"bad learning rate {self.lr}: expected a number > 0")
        if self.parallel is not None:
            self.parallel.local_batch(self.budget[1])

    @property
    def budget(self) -> tuple[int, int]:
        """(steps, batch size) in effect."""
        return defaults.training(self.device, self.steps, self.batch_size)


@dataclass(frozen=True)
class Prepared:
    """A checked training run: the models, the open splits and the per-model files."""

    config: TrainConfig
    specs: tuple["ModelSpec", ...]
    train_set: "Dataset"
    val_set: "Dataset"
    weights: dict[str, str | None]
    save: dict[str, str | None]

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.config.size or getattr(self.train_set, "default_size", defaults.TRAIN_SIZE))  # type: ignore


def train(specs: Sequence["ModelSpec"], config: TrainConfig) -> Iterator[Row]:
    """One row per model, yielded as each is trained and evaluated (bad input raises first)."""
    return measure_cells(cells(prepare(specs, config)), config)


def prepare(specs: Sequence["ModelSpec"], config: TrainConfig) -> Prepared:
    """Open the dataset's splits and check every model and file; UserError on bad input."""
    from segbench.data import open_datasets

    for spec in specs:
        if spec.kind != "model":
            raise UserError(f"{spec.name} is a {spec.kind}, not a segmentation model; train takes models")
    names = [s.name for s in specs]
    weights = per_model(config.weights, "--weights", names)
    save = per_model(config.save, "--save", names)
    for path in save.values():
        if path is not None:
            check_writable(Path(path), "--save file", folder=False)
    train_set, val_set = open_datasets(config.dataset, seed=config.seed, num_classes=config.num_classes)
    for spec in specs:
        if weights[spec.name] is not None:
            check_weights(spec, weights[spec.name], train_set.num_classes)
    return Prepared(config, tuple(specs), train_set, val_set, weights, save)


def cells(
    prepared: Prepared, specs: Sequence["ModelSpec"] | None = None, built: dict[str, Built] | None = None
) -> Iterator[Cell]:
    """One cell per model of ``specs`` (all the prepared ones when None).

    ``built`` (spec name -> `Built`, from the seed) is trained in place, so a later stage measures
    the trained network; without it each cell builds its own.
    """
    config = prepared.config
    steps, batch = config.budget
    height, width = prepared.size
    for spec in prepared.specs if specs is None else specs:
        key = spec_fields(
            spec, device=config.device, device_name=device_name(config.device), dataset=prepared.train_set.name,
            num_classes=prepared.train_set.num_classes, train_steps=steps, batch_size=batch, height=height,
            width=width,
        )  # fmt: skip
        model = (built or {}).get(spec.name) or Built(spec, seed=config.seed, num_classes=prepared.train_set.num_classes)
        yield Cell([key], partial(_measure, spec, model, prepared), device=config.device, stage="train")


def _measure(spec: "ModelSpec", model: Built, prepared: Prepared, keys: list[Row]) -> list[Row]:
    from segbench.measure.training import train_and_evaluate

    config = prepared.config
    steps, batch = config.budget
    config.progress(spec.name, "build")
    network = model.get()

    def on_step(step: int, loss: float) -> None:
        config.progress(spec.name, f"train step {step}/{steps}, loss {loss:.3f}" if step < steps else "evaluate")

    fields: dict[str, Any] = train_and_evaluate(
        network, prepared.train_set, prepared.val_set, steps=steps, batch_size=batch, size=prepared.size,
        lr=config.lr, device=config.device, seed=config.seed, weights=prepared.weights[spec.name],
        save=prepared.save[spec.name], on_step=on_step, parallel=config.parallel,
    )  # fmt: skip
    if config.parallel is not None:
        fields["world_size"] = config.parallel.world_size
    return [fields]
