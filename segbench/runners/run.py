"""The run runner (``segbench run``): count, train and latency composed into one row per model x
runtime x variant.

Per model, one network is built for the dataset's class count from the seed: the count runner's cell
counts it (params, MACs), the train runner's cell trains it in place and measures mIoU on the val
split (blocks are not trained), then the latency runner's cell times the trained network in every
runtime x variant, each compared with PyTorch fp32 eager on the same input and, but for that
reference, evaluated on the val split through its own session (so an int8 row has its own mIoU next
to the fp32 one). All stages use one input size (the dataset's unless given), so a row's ``height``
and ``width`` hold for every number in it. The row's ``batch_size``, ``precision``, ``threads`` and
``peak_mem_mb`` describe inference; the training batch size and precision are in `Plan.describe`.
With ``blocks``, the K^2 runner's rows follow the models'.

A stage that fails writes ``stage: reason`` into the row's ``error`` and the next stage and model
still run (latency is then measured on the network as training left it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

from segbench.checks import check_positive
from segbench.measure.session import Variant
from segbench.runners import blocks as blocks_runner
from segbench.runners import count as count_runner
from segbench.runners import defaults
from segbench.runners import latency as latency_runner
from segbench.runners import train as train_runner
from segbench.runners.cells import Built, Row, RunnerOptions, measure_cells
from segbench.runners.defaults import describe_protocol

if TYPE_CHECKING:
    import torch

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
class RunConfig(RunnerOptions):
    """Everything that decides the numbers of a run; None means the dataset's or device type's default.

    ``blocks`` adds the K^2 study; its device, batch size, timing and threads are the run's.
    """

    device: str = "cpu"
    size: tuple[int, int] | None = None
    batch_size: int = 1
    runtimes: Sequence[str] = ("torch",)
    variants: Sequence[Variant] = (Variant(),)
    warmup: int | None = None
    iters: int | None = None
    budget_s: float | None = None
    target: float | None = None
    threads: int | None = None
    dataset: str = "synthetic"
    num_classes: int | None = None
    steps: int | None = None
    train_batch_size: int | None = None
    seed: int = defaults.SEED
    blocks: blocks_runner.BlocksConfig | None = None
    train_time: float | None = None
    conv_backend: str = train_runner.AUTO
    init: str | None = None

    def __post_init__(self) -> None:
        check_positive(self.batch_size, "batch size")


@dataclass(frozen=True)
class Plan:
    """A checked run: the stages' configs, resolved to the dataset, and the training files."""

    config: RunConfig
    specs: tuple[ModelSpec, ...]
    count: count_runner.CountConfig
    latency: latency_runner.LatencyConfig
    train: train_runner.Prepared
    blocks: blocks_runner.BlocksConfig | None

    def describe(self) -> list[str]:
        """The settings in words, for stderr at the start and the table footnotes."""
        config, (height, width) = self.config, self.train.size
        protocol = self.latency.protocol
        steps, train_batch = self.train.config.budget
        threads = f", {config.threads} threads" if config.threads else ""
        train_precision = "fp16 autocast" if config.device.startswith("cuda") else "fp32"
        rows = ", ".join(f"{r.name} {v.tag}" for r, v in self.latency.combos())
        budget = f"{steps} steps" if steps is not None else f"as many steps as fit in {config.train_time:g} s"
        start = "" if config.init is None else f", backbone from {config.init}"
        backend = ""
        if defaults.device_type(config.device) == "cpu":
            backend = f"; CPU conv backend {config.conv_backend} (train_conv_backend)"
        return [
            f"Input {height}x{width} for counting, training and latency; models built for the dataset's classes",
            f"Training: {budget} x batch {train_batch} ({train_precision}, seed {config.seed}{start}) "
            f"on {self.train.train_set.name} train, then mIoU on its val split{backend}",
            f"Latency of the trained network: batch {config.batch_size}, {describe_protocol(protocol)} "
            f"on {config.device}{threads}, per model: {rows}; peak_mem_mb is inference memory",
        ]


def plan(specs: Sequence[ModelSpec], config: RunConfig) -> Plan:
    """Check everything and open the dataset, before anything is measured (UserError on bad input)."""
    trained = [s for s in specs if s.kind == "model"]
    prepared = train_runner.prepare(
        trained,
        train_runner.TrainConfig(
            dataset=config.dataset,
            num_classes=config.num_classes,
            device=config.device,
            steps=config.steps,
            batch_size=config.train_batch_size,
            size=config.size,
            seed=config.seed,
            progress=config.progress,
            train_time=config.train_time,
            conv_backend=config.conv_backend,
            init=config.init,
        ),
    )
    classes, size = prepared.train_set.num_classes, prepared.size
    latency = latency_runner.LatencyConfig(
        device=config.device,
        sizes=[size],
        batch_sizes=[config.batch_size],
        runtimes=config.runtimes,
        variants=config.variants,
        num_classes=classes,
        warmup=config.warmup,
        iters=config.iters,
        budget_s=config.budget_s,
        target=config.target,
        threads=config.threads,
        dataset=config.dataset,
        seed=config.seed,
        progress=config.progress,
        done=config.done,
        evaluate=partial(_evaluate, prepared),
    )
    count = count_runner.CountConfig(
        size=size, num_classes=classes, batch_size=config.batch_size, progress=config.progress
    )
    blocks = config.blocks and replace(
        config.blocks,
        device=config.device,
        batch_size=config.batch_size,
        warmup=config.warmup,
        iters=config.iters,
        budget_s=config.budget_s,
        target=config.target,
        threads=config.threads,
        progress=config.progress,
        done=config.done,
        shard=config.shard and config.shard.after(len(specs)),
    )
    return Plan(config, tuple(specs), count, latency, prepared, blocks)


def run(specs: Sequence[ModelSpec], config: RunConfig) -> Iterator[Row]:
    """One merged row per model x runtime x variant, then the block rows; bad input raises first."""
    return rows(plan(specs, config))


def rows(checked: Plan) -> Iterator[Row]:
    """The rows of a `plan`: per model its stages' rows merged, as each model finishes.

    Under torchrun a model is the unit of the shard: its stages run on one rank, then the blocks' cells follow.
    """
    config = checked.config
    for index, spec in enumerate(checked.specs):
        if not config.owns(index):
            continue
        classes = checked.latency.num_classes if spec.kind == "model" else None
        built = {spec.name: Built(spec, seed=config.seed, **({"num_classes": classes} if classes else {}))}
        timing = list(latency_runner.cells([spec], checked.latency, built, stage="latency"))
        training = list(train_runner.cells(checked.train, [spec], built)) if spec.kind == "model" else []
        context = {f: c.keys[0][f] for c in training for f in train_runner.KEY_FIELDS if f in c.keys[0]}
        if config.is_done([{**key, **context} for cell in timing for key in cell.keys]):
            continue
        (counted,) = measure_cells(count_runner.cells([spec], checked.count, built))
        trained = next(measure_cells(training), None)
        for timed in measure_cells(timing, checked.latency):
            yield {**merge(timed, counted, trained), **config.shard_fields(index)}
        config.progress(spec.name, "done")
    if checked.blocks is not None:
        yield from blocks_runner.blocks(blocks_runner.default_specs(), checked.blocks)
        config.progress("K^2 study", "done")


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


def _evaluate(prepared: train_runner.Prepared, predict: Callable[[torch.Tensor], Any], batch_size: int) -> Row:
    """mIoU of a runtime session on the val split, as training measures it (`segbench.measure.training.evaluate`)."""
    from segbench.measure.training import evaluate

    accuracy = evaluate(
        predict,
        prepared.val_set,
        num_classes=prepared.train_set.num_classes,
        size=prepared.size,
        device=prepared.config.device,
        batch_size=batch_size,
    )
    return {"miou": accuracy.miou, "pixel_acc": accuracy.pixel_acc, "iou_per_class": accuracy.iou_per_class}
