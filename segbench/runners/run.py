"""The run runner (``segbench run``): count, train and latency composed into one row per model x
runtime x variant.

Per model, one network is built for the dataset's class count from the seed: the count runner's cell
counts it (params, MACs), the train runner's cell trains it in place and measures mIoU on the val
split (blocks are not trained), then the latency runner's cell times the trained network in every
runtime x variant, each compared with PyTorch fp32 eager on the same input and, but for that
reference, evaluated on the val split through its own session (so an int8 row has its own mIoU next
to the fp32 one). All stages use one input size (the dataset's unless given), so a row's ``height``
and ``width`` hold for every number in it. The row's ``batch_size``, ``precision``, ``threads`` and
``peak_mem_mb`` describe inference; the training batch size and precision are in `RunPlan.describe`.
With ``blocks``, the K^2 runner's rows follow the models'.

A stage that fails writes ``stage: reason`` into the row's ``error`` and the next stage and model
still run (latency is then measured on the network as training left it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any

from segbench.measure.session import Variant
from segbench.runners import blocks as blocks_runner
from segbench.runners import count as count_runner
from segbench.runners import defaults
from segbench.runners import latency as latency_runner
from segbench.runners import train as train_runner
from segbench.runners.cells import ALONE, Built, Context, Described, Row, measure_cells
from segbench.runners.defaults import describe_protocol

if TYPE_CHECKING:
    import torch

    from segbench.measure.protocols import EvalProtocol
    from segbench.registry import ModelSpec

#: What each stage contributes to the merged row (latency's row is the base: it names the variant).
COUNT_FIELDS = (
    "params",
    "params_trainable",
    "macs_fvcore",
    "macs_thop",
    "macs_analytic",
    "macs_other",
    "flops",
    "mac_notes",
)
#: A training row's batch size, precision and peak memory describe training; the merged row's, inference.
TRAIN_FIELDS = (
    "dataset",
    "init",
    "train_steps",
    "train_seconds",
    "train_budget_seconds",
    "train_conv_backend",
    "conv_probe_seconds",
    "deterministic",
)
ACCURACY_FIELDS = ("miou", "pixel_acc", "iou_per_class")


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides the numbers of a run: the configs of the runners it composes.

    ``latency``'s sizes and classes are filled in by `plan` (the dataset's); its device, dataset and
    seed must be ``train``'s, and it has one batch size. ``blocks`` (None: no K^2 study) is timed as
    given; ``segbench run`` gives it the run's device, batch size and timing.
    """

    train: train_runner.TrainConfig = field(default_factory=train_runner.TrainConfig)
    latency: latency_runner.LatencyConfig = field(default_factory=latency_runner.LatencyConfig)
    blocks: blocks_runner.BlocksConfig | None = None

    def __post_init__(self) -> None:
        latency, train = self.latency, self.train
        shared = ("device", "dataset", "seed")
        if [getattr(latency, f) for f in shared] + [latency.evaluation] != [getattr(train, f) for f in shared] + [
            train.evaluation
        ]:
            raise ValueError("a run's latency and training share the device, the dataset, the seed and the protocol")
        if len(latency.batch_sizes) != 1:
            raise ValueError("a run times one batch size")


@dataclass(frozen=True)
class RunPlan:
    """A checked run: the stages' configs, resolved to the dataset, and the training files."""

    config: RunConfig
    specs: tuple[ModelSpec, ...]
    count: count_runner.CountConfig
    latency: latency_runner.LatencyConfig
    train: train_runner.Prepared

    def describe(self) -> list[str]:
        """The settings in words, for stderr at the start and the table footnotes."""
        config, latency, (height, width) = self.config.train, self.latency, self.train.size
        steps, train_batch = config.budget
        threads = f", {latency.timing.threads} threads" if latency.timing.threads else ""
        train_precision = "fp16 autocast" if config.device.startswith("cuda") else "fp32"
        rows = ", ".join(f"{r.name} {v.tag}" for r, v in latency.combos())
        budget = f"{steps} steps" if steps is not None else f"as many steps as fit in {config.train_time:g} s"
        start = "" if config.init is None else f", backbone from {config.init}"
        backend = ""
        if defaults.device_type(config.device) == "cpu":
            backend = f"; CPU conv backend {config.conv_backend} (train_conv_backend)"
        return [
            f"Input {height}x{width} for counting, training and latency; models built for the dataset's classes",
            f"Training: {budget} x batch {train_batch} ({train_precision}, seed {config.seed}{start}) "
            f"on {self.train.train_set.name} train, then mIoU on its val split{backend}",
            f"Latency of the trained network: batch {latency.batch_sizes[0]}, {describe_protocol(latency.protocol)} "
            f"on {config.device}{threads}, in this process (where it was trained), per model: {rows}; "
            "peak_mem_mb is inference memory",
        ]


def plan(specs: Sequence[ModelSpec], config: RunConfig) -> RunPlan:
    """Check everything and open the dataset, before anything is measured (UserError on bad input)."""
    prepared = train_runner.prepare([s for s in specs if s.kind == "model"], config.train)
    classes, size = prepared.train_set.num_classes, prepared.size
    latency = replace(config.latency, sizes=[size], num_classes=classes, accuracy=True)
    count = count_runner.CountConfig(size=size, num_classes=classes, batch_size=latency.batch_sizes[0])
    return RunPlan(config, tuple(specs), count, latency, prepared)


def run(specs: Sequence[ModelSpec], config: RunConfig, context: Context = ALONE) -> Described:
    """One merged row per model x runtime x variant, then the block rows; bad input raises first.

    The rows describe the run's settings in words (`RunPlan.describe`).
    """
    checked = plan(specs, config)
    return Described(rows(checked, context), checked.describe())


def rows(checked: RunPlan, context: Context = ALONE) -> Iterator[Row]:
    """The rows of a `plan`: per model its stages' rows merged, as each model finishes.

    Under torchrun a model is the unit of the shard: its stages run on one rank, then the blocks' cells follow.
    """
    stages = Context(progress=context.progress)  # a model's stages: all of them, on this rank
    evaluate = partial(_evaluate, checked.train, checked.latency.evaluation)
    for index, spec in enumerate(checked.specs):
        if not context.owns(index):
            continue
        classes = checked.latency.num_classes if spec.kind == "model" else None
        seed = checked.config.train.seed
        built = {spec.name: Built(spec, seed=seed, num_classes=classes) if classes else Built(spec, seed=seed)}
        timing = list(latency_runner.cells([spec], checked.latency, stages, built, "latency", evaluate))
        training = list(train_runner.cells(checked.train, stages, [spec], built)) if spec.kind == "model" else []
        trained_key = {f: c.keys[0][f] for c in training for f in train_runner.KEY_FIELDS if f in c.keys[0]}
        if context.is_done([{**key, **trained_key} for cell in timing for key in cell.keys]):
            continue
        (counted,) = measure_cells(count_runner.cells([spec], checked.count, stages, built))
        trained = next(measure_cells(training), None)
        for timed in measure_cells(timing, replace(stages, done=context.done)):
            yield {**merge(timed, counted, trained), **context.shard_fields(index)}
        context.progress(spec.name, "done")
    if checked.config.blocks is not None:
        yield from blocks_runner.blocks(
            blocks_runner.default_specs(), checked.config.blocks, context.after(len(checked.specs))
        )
        context.progress("K^2 study", "done")


def merge(timed: Row, counted: Row, trained: Row | None = None) -> Row:
    """The latency row with the count's and the training's fields, and every stage's error (once each).

    Accuracy comes from the row's own session when it was evaluated there, else from training (the
    PyTorch fp32 eager network is the one training evaluated).
    """
    row = {**timed, **{f: counted.get(f) for f in COUNT_FIELDS}}
    if trained is not None:
        row.update({f: trained.get(f) for f in TRAIN_FIELDS})
        if timed.get("miou") is None and timed.get("runtime") == "torch" and Variant.of_row(timed) == Variant():
            row.update({f: trained.get(f) for f in ACCURACY_FIELDS})
    errors = [r["error"] for r in (counted, trained, timed) if r is not None and r.get("error")]
    row["error"] = "; ".join(dict.fromkeys(errors)) or None
    return row


def _evaluate(
    prepared: train_runner.Prepared, protocol: EvalProtocol, predict: Callable[[torch.Tensor], Any], batch_size: int
) -> Row:
    """mIoU of a runtime session on the val split at ``protocol``, as training measures it
    (`segbench.measure.training.evaluate`)."""
    from segbench.measure.training import evaluate

    accuracy = evaluate(
        predict,
        prepared.val_set,
        num_classes=prepared.train_set.num_classes,
        size=prepared.size,
        device=prepared.config.device,
        batch_size=batch_size,
        protocol=protocol,
    )
    return {"miou": accuracy.miou, "pixel_acc": accuracy.pixel_acc, "iou_per_class": accuracy.iou_per_class}
