"""The train runner (``segbench train``, and the last stage of ``run``): brief training, then mIoU.

One cell per model: build it for the dataset's classes from the seed, train it under the recipe
and budget of `segbench.measure.training` (the same for every model), evaluate on the val split.
Everything that can be checked without training (the dataset's files, the ``--weights`` and
``--init`` files, pinned conv layers, block specs given to a trainer) is checked when the runner is
called, before the first cell.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence, Sized
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from segbench.checks import check_device, check_positive, check_sizes, check_writable
from segbench.data import train_size
from segbench.errors import UserError
from segbench.measure.protocols import WHOLE, EvalProtocol
from segbench.rows.environment import device_name
from segbench.rows.schema import spec_fields
from segbench.runners import defaults
from segbench.runners.cells import ALONE, Built, Cell, Context, Described, Row, measure_cells
from segbench.runners.weights import per_model

if TYPE_CHECKING:
    from segbench.measure.data_parallel import DataParallel
    from segbench.measure.training import TrainSettings
    from segbench.registry import ModelSpec, SegmentationDataset

#: The ``--init`` source kind: a VGG16 classifier checkpoint in torchvision's layout.
VGG16 = "vgg16"
#: The fields of a training row that say which training it was (``--resume`` matches on them).
KEY_FIELDS = ("dataset", "init", "train_steps", "train_budget_seconds")


@dataclass(frozen=True)
class TrainConfig:
    """The dataset, the budget (None: the device type's defaults) and the files of a training run.

    ``weights`` and ``save`` are paths in which ``{model}`` stands for the model's name (required
    when several models are trained). ``train_time`` (seconds per model) replaces ``steps``;
    ``conv_backend`` is ``auto`` or a row's ``train_conv_backend`` (CPU only); ``init`` is
    ``vgg16:PATH`` (FCN backbones from a VGG16 classifier checkpoint); ``evaluation`` is the mIoU's
    protocol (`segbench.measure.protocols`). Under data-parallel training
    (torchrun, `Context.parallel`) the batch size is the global batch, split over the ranks.
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
    train_time: float | None = None
    conv_backend: str = "auto"  # measure each layer's CPU backend (`segbench.measure.convbackend.AUTO`)
    init: str | None = None
    evaluation: EvalProtocol = WHOLE

    def __post_init__(self) -> None:
        from segbench.measure.convbackend import parse_plan

        check_device(self.device)
        check_positive(self.num_classes, "number of classes")
        check_sizes([self.size] if self.size else None)
        _ = self.settings  # steps, batch size, learning rate and time budget are checked there
        if self.train_time is not None and self.steps is not None:
            raise UserError("--steps and --train-time both set the training budget: give one")
        if parse_plan(self.conv_backend) is not None and defaults.device_type(self.device) != "cpu":
            raise UserError(f"--conv-backend {self.conv_backend} chooses CPU kernels; on {self.device} use auto")
        if self.init is not None and self.weights is not None:
            raise UserError("--init and --weights both set the starting weights: give one")
        init_source(self.init)

    @property
    def budget(self) -> tuple[int | None, int]:
        """(steps, batch size) in effect; steps is None under ``train_time``."""
        steps, batch = defaults.training(self.device, self.steps, self.batch_size)
        return (None if self.train_time is not None else steps), batch

    @property
    def settings(self) -> TrainSettings:
        """What `segbench.measure.training.train_and_evaluate` gets (size None: the dataset's)."""
        from segbench.measure.training import TrainSettings

        steps, batch = self.budget
        return TrainSettings(
            steps=steps,
            batch_size=batch,
            size=self.size,
            lr=self.lr,
            device=self.device,
            seed=self.seed,
            time_budget=self.train_time,
            conv_backend=self.conv_backend,
            protocol=self.evaluation,
        )

    def check_parallel(self, parallel: DataParallel | None) -> None:
        """This training fits data-parallel training over ``parallel``'s ranks (None: alone)."""
        if parallel is None:
            return
        if self.train_time is not None:  # each rank would time its own steps: they must agree
            raise UserError("--train-time under torchrun: give --steps, so every rank takes the same steps")
        parallel.local_batch(self.budget[1])


@dataclass(frozen=True)
class Prepared:
    """A checked training run: the models, the open splits and the per-model files."""

    config: TrainConfig
    specs: tuple[ModelSpec, ...]
    train_set: SegmentationDataset
    val_set: SegmentationDataset
    weights: dict[str, str | None]
    save: dict[str, str | None]

    @property
    def size(self) -> tuple[int, int]:
        return train_size(self.train_set, self.config.size)

    def init(self, name: str) -> str:
        """The row's ``init``: ``scratch``, ``vgg16:PATH`` or ``weights:PATH``."""
        if self.config.init is not None:
            return self.config.init
        return "scratch" if self.weights[name] is None else f"weights:{self.weights[name]}"


def init_source(init: str | None) -> str | None:
    """The checkpoint path of ``--init vgg16:PATH`` (None without ``--init``); UserError for other text."""
    if init is None:
        return None
    kind, _, path = init.partition(":")
    if kind != VGG16 or not path:
        raise UserError(
            f"bad --init {init!r}: accepted {VGG16}:PATH (a VGG16 classifier checkpoint, torchvision layout)"
        )
    return path


def train(specs: Sequence[ModelSpec], config: TrainConfig, context: Context = ALONE) -> Described:
    """One row per model, yielded as each is trained and evaluated (bad input raises first).

    The rows describe the data they were trained on.
    """
    prepared = prepare(specs, config, context)
    train_set, val_set = prepared.train_set, prepared.val_set
    data = f"{len(train_set)} train / {len(val_set)} val images from {train_set.name}, {train_set.num_classes} classes"
    return Described(measure_cells(cells(prepared, context), context), [data])


def prepare(specs: Sequence[ModelSpec], config: TrainConfig, context: Context = ALONE) -> Prepared:
    """Open the dataset's splits and check every model and file; UserError on bad input."""
    from segbench.data import open_datasets
    from segbench.measure.checkpoints import read_vgg16

    config.check_parallel(context.parallel)
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
    if config.budget[0] != 0 and not len(cast("Sized", train_set)):
        raise UserError(f"dataset {config.dataset}: the train split is empty")
    init = init_source(config.init)
    backbone = read_vgg16(init) if init is not None else None
    for spec in specs:
        _check_model(spec, train_set.num_classes, weights[spec.name], backbone, config.conv_backend)
    prepared = Prepared(config, tuple(specs), train_set, val_set, weights, save)
    config.evaluation.check_size(prepared.size)
    return prepared


def _check_model(spec: ModelSpec, num_classes: int, weights: str | None, backbone: Any, conv_backend: str) -> None:
    """The files and the pinned conv layers fit the model as it will be built (on ``meta``: no memory, no time)."""
    import torch

    from segbench.measure.checkpoints import check_fits, check_vgg16_target, read_state
    from segbench.measure.convbackend import parse_plan

    plan = parse_plan(conv_backend)
    if weights is None and backbone is None and plan is None:
        return
    try:
        with torch.device("meta"):
            model = spec.build(num_classes=num_classes)
    except Exception:  # a builder that fails here fails its training cell, whose row says why
        return
    what = f"{spec.name} with {num_classes} classes"
    if weights is not None:
        check_fits(model, read_state(weights), weights, what)
    if backbone is not None:
        check_vgg16_target(model, backbone, spec.name)
    if plan is not None:
        plan.layers(model)


def cells(
    prepared: Prepared,
    context: Context,
    specs: Sequence[ModelSpec] | None = None,
    built: dict[str, Built] | None = None,
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
            spec,
            device=config.device,
            device_name=device_name(config.device),
            dataset=prepared.train_set.name,
            num_classes=prepared.train_set.num_classes,
            batch_size=batch,
            height=height,
            width=width,
            init=prepared.init(spec.name),
            **config.evaluation.fields(),
            **({"train_steps": steps} if steps is not None else {"train_budget_seconds": config.train_time}),
        )
        model = (built or {}).get(spec.name) or Built(
            spec, seed=config.seed, num_classes=prepared.train_set.num_classes
        )
        yield Cell([key], partial(_measure, spec, model, prepared, context), device=config.device, stage="train")


def _measure(spec: ModelSpec, built: Built, prepared: Prepared, context: Context, keys: list[Row]) -> list[Row]:
    from segbench.measure.checkpoints import init_from_vgg16
    from segbench.measure.convbackend import AUTO
    from segbench.measure.training import train_and_evaluate

    config, parallel = prepared.config, context.parallel
    steps = config.budget[0]
    context.progress(spec.name, "build")
    model = built.get()
    init = init_source(config.init)
    if init is not None:
        init_from_vgg16(model, init)
    if config.conv_backend == AUTO and defaults.device_type(config.device) == "cpu":
        context.progress(spec.name, "conv backend probe")
    of = f"/{steps}" if steps is not None else f" of {config.train_time:g} s"

    def on_step(step: int, loss: float) -> None:
        context.progress(spec.name, f"train step {step}{of}, loss {loss:.3f}" if step != steps else "evaluate")

    fields: dict[str, Any] = train_and_evaluate(
        model,
        prepared.train_set,
        prepared.val_set,
        replace(config.settings, size=prepared.size),
        weights=prepared.weights[spec.name],
        save=prepared.save[spec.name],
        on_step=on_step,
        parallel=parallel,
    )
    if parallel is not None:
        fields["world_size"] = parallel.world_size
    return [fields]
