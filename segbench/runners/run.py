"""The run runner (``segbench run``): count, latency and train composed into one row per model.

Per model, on one network built for the dataset's class count from the seed: the count runner's
cell (params, MACs), the latency runner's cell (one variant) and the train runner's cell (brief
training from the same seed, then mIoU on the val split; blocks are not trained), merged into one
row. All three use one input size (the dataset's unless given), so the row's ``height`` and
``width`` hold for every number in it. The row's ``batch_size``, ``precision``, ``threads`` and
``peak_mem_mb`` describe inference (counting and latency); the training batch size and precision are
in `RunConfig.describe`. With ``blocks``, the K^2 runner's rows follow the models'.

A stage that fails writes ``stage: reason`` into the row's ``error`` and the next stage and model
still run.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Iterator, Sequence

from segbench.checks import check_positive, check_precisions
from segbench.measure.latency import Variant
from segbench.runners import blocks as blocks_runner
from segbench.runners import count as count_runner
from segbench.runners import defaults
from segbench.runners import latency as latency_runner
from segbench.runners import train as train_runner
from segbench.runners.cells import Built, Row, RunnerOptions, measure_cells

if TYPE_CHECKING:
    from segbench.registry import ModelSpec

#: What each stage contributes to the merged row (latency's row is the base: it names the variant).
COUNT_FIELDS = ("params", "params_trainable", "macs_fvcore", "macs_thop", "macs_analytic", "macs_other", "flops",
                "mac_notes")  # fmt: skip
#: A training row's batch size, precision and peak memory describe training; the merged row's, inference.
TRAIN_FIELDS = ("dataset", "init", "train_steps", "train_seconds", "train_budget_seconds", "train_conv_backend",
                "conv_probe_seconds", "miou", "pixel_acc", "iou_per_class")  # fmt: skip


@dataclass(frozen=True)
class RunConfig(RunnerOptions):
    """Everything that decides the numbers of a run; None means the dataset's or device type's default.

    ``blocks`` adds the K^2 study; its device, batch size, timing and threads are the run's.
    """

    device: str = "cpu"
    size: tuple[int, int] | None = None
    batch_size: int = 1
    variant: Variant = Variant()
    warmup: int | None = None
    iters: int | None = None
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
        check_precisions([self.variant.precision])


@dataclass(frozen=True)
class Plan:
    """A checked run: the stages' configs, resolved to the dataset, and the training files."""

    config: RunConfig
    specs: tuple["ModelSpec", ...]
    count: count_runner.CountConfig
    latency: latency_runner.LatencyConfig
    train: train_runner.Prepared
    blocks: blocks_runner.BlocksConfig | None

    def describe(self) -> list[str]:
        """The settings in words, for stderr at the start and the table footnotes."""
        config, (height, width) = self.config, self.train.size
        warmup, iters = self.latency.timing
        steps, train_batch = self.train.config.budget
        threads = f", {config.threads} threads" if config.threads else ""
        train_precision = "fp16 autocast" if config.device.startswith("cuda") else "fp32"
        budget = f"{steps} steps" if steps is not None else f"as many steps as fit in {config.train_time:g} s"
        start = "" if config.init is None else f", backbone from {config.init}"
        backend = ""
        if defaults.device_type(config.device) == "cpu":
            backend = f"; CPU conv backend {config.conv_backend} (train_conv_backend)"
        variant = config.variant.tag.replace("+cl", "+channels_last").replace("+graph", "+cuda_graph")
        return [
            f"Input {height}x{width} for counting, latency and training; models built for the dataset's classes",
            f"Counting + latency: batch {config.batch_size}, {variant}, {warmup} warm-up + {iters} "
            f"timed calls on {config.device}{threads}; peak_mem_mb is inference memory",
            f"Training: {budget} x batch {train_batch} ({train_precision}, seed {config.seed}{start}) "
            f"on {self.train.train_set.name} train, then mIoU on its val split{backend}",
        ]


def plan(specs: Sequence["ModelSpec"], config: RunConfig) -> Plan:
    """Check everything and open the dataset, before anything is measured (UserError on bad input)."""
    trained = [s for s in specs if s.kind == "model"]
    prepared = train_runner.prepare(trained, train_runner.TrainConfig(
        dataset=config.dataset, num_classes=config.num_classes, device=config.device, steps=config.steps,
        batch_size=config.train_batch_size, size=config.size, seed=config.seed, progress=config.progress,
        train_time=config.train_time, conv_backend=config.conv_backend, init=config.init,
    ))  # fmt: skip
    classes = prepared.train_set.num_classes
    size = prepared.size
    latency = latency_runner.LatencyConfig(
        device=config.device, sizes=[size], batch_sizes=[config.batch_size], variants=[config.variant],
        num_classes=classes, warmup=config.warmup, iters=config.iters, threads=config.threads, seed=config.seed,
        progress=config.progress,
    )  # fmt: skip
    count = count_runner.CountConfig(size=size, num_classes=classes, batch_size=config.batch_size,
                                     progress=config.progress)  # fmt: skip
    blocks = config.blocks and replace(
        config.blocks, device=config.device, batch_size=config.batch_size, warmup=config.warmup,
        iters=config.iters, threads=config.threads, progress=config.progress, done=config.done,
    )  # fmt: skip
    return Plan(config, tuple(specs), count, latency, prepared, blocks)


def run(specs: Sequence["ModelSpec"], config: RunConfig) -> Iterator[Row]:
    """One merged row per model, then the block rows; bad input raises before the first is measured."""
    return rows(plan(specs, config))


def rows(checked: Plan) -> Iterator[Row]:
    """The rows of a `plan`: per model its stages' rows merged, as each model finishes."""
    config = checked.config
    for spec in checked.specs:
        classes = checked.latency.num_classes if spec.kind == "model" else None
        built = {spec.name: Built(spec, seed=config.seed, **({"num_classes": classes} if classes else {}))}
        (timing,) = latency_runner.cells([spec], checked.latency, built, stage="latency")
        training = list(train_runner.cells(checked.train, [spec])) if spec.kind == "model" else []
        key = {**timing.keys[0], **{f: c.keys[0][f] for c in training for f in train_runner.KEY_FIELDS if f in c.keys[0]}}
        if config.is_done([key]):
            continue
        (counted,) = measure_cells(count_runner.cells([spec], checked.count, built))
        (timed,) = measure_cells([timing])
        built.clear()  # the trainer builds its own network from the same seed
        yield merge(timed, counted, *measure_cells(training))
        config.progress(spec.name, "done")
    if checked.blocks is not None:
        yield from blocks_runner.blocks(blocks_runner.default_specs(), checked.blocks)
        config.progress("K^2 study", "done")


def merge(timed: Row, counted: Row, trained: Row | None = None) -> Row:
    """The latency row with the count's and the training's fields, and every stage's error (once each)."""
    row = {**timed, **{f: counted.get(f) for f in COUNT_FIELDS}}
    if trained is not None:
        row.update({f: trained.get(f) for f in TRAIN_FIELDS})
    errors = [r["error"] for r in (counted, timed, trained) if r is not None and r.get("error")]
    row["error"] = "; ".join(dict.fromkeys(errors)) or None
    return row
