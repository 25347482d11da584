"""``segbench run``: the whole comparison, one merged result row per model.

Per model, in this order, on one network built for the dataset's class count:

1. **count**: params and MACs (``segbench.measure.macs.count_model``: analytic, fvcore, thop);
2. **latency**: ``segbench.measure.latency.measure_latency`` on the same network and input;
3. **train**: ``segbench.train.train_spec`` (brief training from the same seed, then mIoU on the val
   split); blocks are not trained.

Counting, latency and training use one input size (``RunConfig.size``, default: the dataset's own),
so the row's ``height`` and ``width`` hold for every number in it. The row's ``batch_size``,
``precision``, ``threads`` and ``peak_mem_mb`` describe the inference measurement (counting and
latency); the training batch size and precision are in `RunConfig.describe` (printed and footnoted).

A stage that fails writes its reason into the row's ``error`` (``stage: reason``) and the next model
still runs; bad user input (UserError) stops the run.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from segbench.errors import UserError
from segbench.results import make_row, spec_fields

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from segbench.registry import ModelSpec

#: Training defaults per device type: (steps, batch size). On CPU, 120 steps x 4 images is a budget
#: in which both FCN-8s and Fast-SCNN learn the synthetic shapes (seed 0: mIoU about 0.64 and 0.78,
#: vs 0.12 for predicting background; at 60 steps FCN-8s is still near background) while
#: ``segbench run --models fcn8s,fast_scnn --device cpu`` takes about 3 minutes on 2 idle cores
#: (FCN-8s trains at about 1.2 s per step there), well under the 10-minute target.
TRAIN_DEFAULTS = {"cpu": (120, 4), "cuda": (300, 8)}
#: What a training result contributes to the merged row (its batch size, precision and peak memory
#: describe training, and the row's describe inference).
TRAIN_FIELDS = ("dataset", "train_steps", "train_seconds", "miou", "pixel_acc", "iou_per_class")

Progress = Callable[[str, str], None]  # (model name, what it is doing now)


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides the numbers of a run; None means the per-device default above."""

    device: str = "cpu"
    size: tuple[int, int] | None = None
    batch_size: int = 1
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    cuda_graph: bool = False
    warmup: int | None = None
    iters: int | None = None
    threads: int | None = None
    dataset: str = "synthetic"
    num_classes: int | None = None
    steps: int | None = None
    train_batch_size: int | None = None
    seed: int = 0

    def resolved(self, dataset_size: tuple[int, int]) -> "RunConfig":
        """The config with every default filled in (size from the dataset, the rest per device)."""
        from segbench.latency_sweep import default_iterations

        kind = "cuda" if self.device.startswith("cuda") else "cpu"
        steps, train_batch = TRAIN_DEFAULTS[kind]
        warmup, iters = default_iterations(self.device, self.warmup, self.iters)
        return replace(
            self,
            size=tuple(self.size or dataset_size),  # type: ignore[arg-type]
            steps=steps if self.steps is None else self.steps,
            train_batch_size=self.train_batch_size or train_batch,
            warmup=warmup,
            iters=iters,
        )

    def describe(self) -> list[str]:
        """The settings in words, for stderr at the start and the table footnotes."""
        height, width = self.size or ("dataset", "default")
        variant = "+".join(
            [self.precision] + [n for n, on in (("channels_last", self.channels_last), ("compile", self.compile),
                                                 ("cuda_graph", self.cuda_graph)) if on]
        )  # fmt: skip
        threads = f", {self.threads} threads" if self.threads else ""
        train_precision = "fp16 autocast" if self.device.startswith("cuda") else "fp32"
        return [
            f"Input {height}x{width} for counting, latency and training; models built for the dataset's classes",
            f"Counting + latency: batch {self.batch_size}, {variant}, {self.warmup} warm-up + {self.iters} "
            f"timed calls on {self.device}{threads}; peak_mem_mb is inference memory",
            f"Training: {self.steps} steps x batch {self.train_batch_size} ({train_precision}, seed {self.seed}) "
            f"on {self.dataset} train, then mIoU on its val split",
        ]


@dataclass
class RunResult:
    """What a run produced: finished rows, counting footnotes, and whether Ctrl-C stopped it."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    footnotes: list[str] = field(default_factory=list)
    interrupted: bool = False


def prepare(config: RunConfig) -> tuple[RunConfig, "Dataset", "Dataset"]:
    """Open the dataset's train and val splits and fill the config's defaults (bad input raises here)."""
    from segbench.data import open_datasets

    train_set, val_set = open_datasets(config.dataset, seed=config.seed, num_classes=config.num_classes)
    return config.resolved(getattr(train_set, "default_size", (256, 256))), train_set, val_set


def run_models(
    specs: Sequence["ModelSpec"],
    config: RunConfig,
    train_set: "Dataset",
    val_set: "Dataset",
    progress: Progress | None = None,
    result: RunResult | None = None,
) -> RunResult:
    """Measure every spec into one row each (see the module docstring) with a `prepare`d config.

    Rows are appended to ``result.rows`` as they finish, so a caller that catches KeyboardInterrupt
    keeps them.
    """
    from segbench.measure.macs import merge_footnotes

    result = result if result is not None else RunResult()
    counts = []
    for spec in specs:
        row, count = measure_model(spec, config, train_set, val_set, progress or (lambda _m, _s: None))
        result.rows.append(row)
        if count is not None:
            counts.append(count)
            result.footnotes = merge_footnotes(counts)
    return result


def run_blocks(
    kernel_sizes: list[int],
    channels: list[int],
    config: RunConfig,
    size: tuple[int, int] | None = None,
    progress: Progress | None = None,
    result: RunResult | None = None,
) -> RunResult:
    """The K^2 block table (`segbench.blocks_study.study_rows`) at the run's device, batch, timing and
    threads; ``size`` is the blocks' input (default: theirs). Rows are appended as they finish."""
    from segbench.blocks_study import study_rows

    result = result if result is not None else RunResult()
    report = progress or (lambda _m, _s: None)
    for row in study_rows(
        kernel_sizes, channels, size, config.batch_size, config.device, warmup=config.warmup or 0,
        iters=config.iters or 1, threads=config.threads, progress=lambda what: report("K^2 study", what),
    ):  # fmt: skip
        result.rows.append(row)
    report("K^2 study", "done")
    return result


def measure_model(
    spec: "ModelSpec", config: RunConfig, train_set: "Dataset", val_set: "Dataset", progress: Progress
) -> tuple[dict[str, Any], Any]:
    """One model's merged row (and its MacCount, for the footnotes); a failing stage sets ``error``."""
    import torch

    from segbench.measure.latency import measure_latency, release_memory
    from segbench.measure.macs import count_model
    from segbench.results import device_name
    from segbench.train import train_spec

    height, width = config.size  # type: ignore[misc]
    num_classes = train_set.num_classes if spec.kind == "model" else None
    fields: dict[str, Any] = spec_fields(
        spec, device=config.device, device_name=device_name(config.device), height=height, width=width,
        batch_size=config.batch_size, num_classes=num_classes,
    )  # fmt: skip
    if spec.kind == "block":
        options = spec.options()
        geometry = {k: options.get(k) for k in ("kernel_size", "in_channels", "out_channels", "stride")}
        fields.update(block=spec.name.removeprefix("block_"), **geometry)
    stages = _Stages(spec.name, config.device, progress)
    model = count = None
    with stages("build"):
        torch.manual_seed(config.seed)
        model = spec.build(num_classes=num_classes)
    if model is not None:
        generator = torch.Generator().manual_seed(config.seed)
        example = torch.randn(config.batch_size, spec.input_channels(), height, width, generator=generator)
        with stages("count"):
            count = count_model(model, example)
            fields.update(count.fields)
        with stages("latency"):
            fields.update(measure_latency(
                model, example, device=config.device, precision=config.precision,
                channels_last=config.channels_last, compile=config.compile, cuda_graph=config.cuda_graph,
                warmup=config.warmup, iters=config.iters, threads=config.threads,
            ))  # fmt: skip
        model = example = None
        release_memory(config.device)
        if spec.kind == "model":
            steps = config.steps or 0

            def on_step(step: int, loss: float) -> None:
                progress(spec.name, f"train step {step}/{steps}, loss {loss:.3f}" if step < steps else "evaluate")

            with stages("train"):
                trained = train_spec(
                    spec, train_set, val_set, seed=config.seed, steps=steps, batch_size=config.train_batch_size,
                    size=config.size, device=config.device, progress=False, on_step=on_step,
                )  # fmt: skip
                fields.update({k: trained[k] for k in TRAIN_FIELDS if k in trained})
                if trained.get("error"):
                    stages.errors.append(trained["error"])  # train_spec's reason already names the stage
    if stages.errors:
        fields["error"] = "; ".join(stages.errors)
    progress(spec.name, "done")
    return make_row(**fields), count


class _Stages:
    """``with stages("count"):`` reports the stage as progress and turns its failure into a row error."""

    def __init__(self, model: str, device: str, progress: Progress) -> None:
        self.model, self.device, self.progress = model, device, progress
        self.errors: list[str] = []

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        from segbench.measure.latency import error_reason, release_memory

        self.progress(self.model, name)
        try:
            yield
        except UserError:
            raise
        except Exception as exc:  # one failing stage must not stop the run: the row says why
            self.errors.append(f"{name}: {error_reason(exc)}")
            release_memory(self.device)
