"""The latency runner (``segbench latency``, and a stage of ``run``): models x sizes x batches x
runtimes x variants, one row each.

One cell per model x size (default: the model's own) x batch size: the PyTorch fp32 eager output is
computed first (the reference every other row is compared with, kept on the CPU), then each runtime
x variant is prepared and timed in turn, in a folder the cell's runtimes share (one ONNX export
serves ONNX Runtime and OpenVINO). A runtime x variant that fails (CUDA out of memory, a dtype the
device lacks, CUDA graphs on a CPU, a runtime not installed) gets its own row ``error``; the other
rows of the cell and the sweep go on. A model whose builder fails gives every one of its rows that error.

Variant rule (`segbench.measure.session.expand_variants`): fp32 first; then one variant for every
combination of a requested precision with each requested switch (``channels_last``, ``compile``,
``cuda_graph``, ``fold_bn``) off and on. Each runtime gets the variants it supports (PyTorch: fp16 and
bf16 and every switch; ONNX Runtime and OpenVINO: int8 and ``fold_bn``).
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segbench.checks import (
    check_all_positive,
    check_device,
    check_precisions,
    check_seed,
    check_sizes,
    check_writable,
)
from segbench.errors import UserError
from segbench.measure.protocols import WHOLE, EvalProtocol, Predict
from segbench.measure.session import Session, Variant, check_compile_modes
from segbench.rows.environment import device_name
from segbench.runners import defaults
from segbench.runners.application import Application, Prepare, shape_folder
from segbench.runners.cells import ALONE, Built, Cell, Context, Row, isolated, measure_cells, variant_key
from segbench.runners.defaults import Timing
from segbench.runners.processes import in_processes
from segbench.runners.weights import check_weights, per_model

if TYPE_CHECKING:
    import torch

    from segbench.measure.timer import Protocol
    from segbench.registry import ModelSpec, RuntimeSpec

#: Calibration batches of an int8 variant, from the train split of ``LatencyConfig.dataset``.
CALIBRATION_IMAGES = 16
#: ``evaluate(predict, batch size)``: accuracy fields of a session (``segbench run``: mIoU on the val split).
Evaluate = Callable[[Callable[["torch.Tensor"], Any], int], Row]


@dataclass(frozen=True)
class LatencyConfig:
    """How to time: the cells (sizes, batches), the rows of each (runtimes x variants) and the protocol.

    ``timing``: the protocol as the user set it (`segbench.runners.defaults.Timing`);
    ``num_classes`` None means each model's own. ``dataset`` gives the timed input (its first val
    image, resized: real logits make the agreement with fp32 eager meaningful; inputs with other
    than 3 channels are random) and the images that calibrate int8. ``weights`` is a ``state_dict``
    file to time (``{model}`` = model name), instead of the seeded initial weights.

    What the application sees (`segbench.runners.application`): ``accuracy`` gives every row ``miou`` on
    the dataset's val split (models built for its classes) and ``miou_delta`` against PyTorch fp32
    eager; ``end_to_end`` times frames of ``source_size`` (None: the cell's size) into masks;
    ``evaluation`` is the protocol of both (whole unless one of them is on).
    """

    device: str = "cpu"
    sizes: Sequence[tuple[int, int]] | None = None
    batch_sizes: Sequence[int] = (1,)
    runtimes: Sequence[str] = ("torch",)
    variants: Sequence[Variant] = (Variant(),)
    num_classes: int | None = None
    timing: Timing = field(default_factory=Timing)
    trace_dir: Path | None = None
    dataset: str = "synthetic"
    weights: str | None = None
    seed: int = defaults.SEED
    evaluation: EvalProtocol = WHOLE
    accuracy: bool = False
    end_to_end: bool = False
    source_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        check_device(self.device)
        check_sizes(self.sizes)
        check_seed(self.seed)
        self._check_application(self.sizes or [])
        check_all_positive(self.batch_sizes, "batch size")
        check_precisions([v.precision for v in self.variants])
        check_compile_modes(self.variants)
        if self.trace_dir is not None:
            check_writable(self.trace_dir, "trace folder", folder=True)
        for variant in self.variants:
            if not any(r.supports(variant.precision, variant.switches) for r in self.runtime_specs):
                raise UserError(
                    f"no runtime of {', '.join(self.runtimes)} runs {variant.tag}; supported: "
                    + "; ".join(
                        f"{r.name}: {', '.join(r.precisions)} with {', '.join(sorted(r.switches)) or 'no switches'}"
                        for r in self.runtime_specs
                    )
                )

    def _check_application(self, sizes: Sequence[tuple[int, int]]) -> None:
        """The protocol and end-to-end options, and the sizes they run at (UserError)."""
        if self.source_size is not None:
            if not self.end_to_end:
                raise UserError("--source-size goes with --end-to-end")
            check_sizes([self.source_size])
            self.evaluation.check_size(self.source_size, "--source-size")
        if self.evaluation != WHOLE and not (self.accuracy or self.end_to_end):
            raise UserError(
                f"--protocol {self.evaluation.name} applies to mIoU (--dataset) and --end-to-end latency: give one"
            )
        for size in sizes:
            self.evaluation.check_size(size)

    @cached_property
    def runtime_specs(self) -> list[RuntimeSpec]:
        """The runtimes, looked up in the registry once."""
        from segbench.plugins import get_registry

        return get_registry().runtime_list(",".join(self.runtimes))

    @property
    def protocol(self) -> Protocol:
        """The timing protocol in effect (the device type's defaults where not set)."""
        return self.timing.protocol(self.device)

    def combos(self) -> list[tuple[RuntimeSpec, Variant]]:
        """Each runtime with each variant it supports, in the user's runtime order."""
        return [(r, v) for r in self.runtime_specs for v in self.variants if r.supports(v.precision, v.switches)]


def latency(specs: Sequence[ModelSpec], config: LatencyConfig, context: Context = ALONE) -> Iterator[Row]:
    """One full row per model x size x batch x runtime x variant, yielded as each cell is timed.

    The ``--weights`` files are checked against their models first (UserError on bad input).
    """
    weights = per_model(config.weights, "--weights", [s.name for s in specs])
    if config.accuracy:
        config = replace(config, num_classes=_dataset_classes(config))
    for spec in specs:
        if config.sizes is None:
            config._check_application([spec.default_size])
        if config.end_to_end and spec.input_channels() != 3:
            raise UserError(f"--end-to-end feeds RGB frames, but {spec.name} takes {spec.input_channels()} channels")
        path = weights[spec.name]
        if path is not None:
            check_weights(spec, path, config.num_classes or spec.default_num_classes)
    images = _Images(config)
    if any(spec.input_channels() == 3 for spec in specs):  # their cells read it: opened and checked now
        images.splits()
    return measure_cells(cells(specs, config, context, images=images), context)


def _dataset_classes(config: LatencyConfig) -> int:
    """The class count mIoU is measured with: the dataset's (a different --num-classes is refused)."""
    from segbench.data import open_datasets

    classes = open_datasets(config.dataset, seed=config.seed, num_classes=config.num_classes)[1].num_classes
    if config.num_classes is not None and config.num_classes != classes:
        raise UserError(f"--num-classes {config.num_classes}: mIoU on {config.dataset} needs its {classes} classes")
    return classes


@dataclass(frozen=True)
class _Sweep:
    """What every cell of a sweep shares: its config, context, inputs, stage name and ``evaluate``."""

    config: LatencyConfig
    context: Context
    images: _Images
    stage: str | None
    evaluate: Evaluate | None


def cells(
    specs: Sequence[ModelSpec],
    config: LatencyConfig,
    context: Context,
    built: dict[str, Built] | None = None,
    stage: str | None = None,
    evaluate: Evaluate | None = None,
    images: _Images | None = None,
) -> Iterator[Cell]:
    """The sweep's cells, model by model; each model is built once (or taken from ``built``).

    ``evaluate``, when given, measures the accuracy of every row but the reference through its session.
    """
    label = device_name(config.device)
    combos = config.combos()
    sweep = _Sweep(config, context, images or _Images(config), stage, evaluate)
    weights = per_model(config.weights, "--weights", [s.name for s in specs])
    # A network built (or trained) here, or an evaluation bound to this process's data, stays here.
    processes = config.timing.processes_on(config.device) if built is None and evaluate is None else 1
    for spec in specs:
        classes = (config.num_classes or spec.default_num_classes) if spec.kind == "model" else None
        model = (built or {}).get(spec.name) or Built(
            spec, seed=config.seed, weights=weights[spec.name], **_classes(spec, classes)
        )
        for (height, width), batch in itertools.product(config.sizes or [spec.default_size], config.batch_sizes):
            keys = [
                variant_key(
                    spec,
                    config.device,
                    label,
                    runtime,
                    variant,
                    batch_size=batch,
                    height=height,
                    width=width,
                    num_classes=classes,
                    **(
                        config.evaluation.fields()
                        if spec.kind == "model" and (config.accuracy or config.end_to_end)
                        else {}
                    ),
                )
                for runtime, variant in combos
            ]
            shape = (batch, spec.input_channels(), height, width)
            measure = partial(_measure, spec, model, shape, sweep)
            if processes > 1:
                context.progress(spec.name, f"latency {'x'.join(map(str, shape))} in {processes} processes")
                worker = partial(_measure, spec, model, shape, replace(sweep, context=ALONE))
                measure = partial(in_processes, worker, processes, config.protocol.target)
            yield Cell(keys, measure, device=config.device, stage=stage)


def _classes(spec: ModelSpec, classes: int | None) -> dict[str, int]:
    return {"num_classes": classes} if spec.kind == "model" and classes is not None else {}


def _measure(
    spec: ModelSpec,
    model: Built,
    shape: tuple[int, ...],
    sweep: _Sweep,
    keys: list[Row],
) -> list[Row]:
    """The rows ``keys`` of one cell: the PyTorch fp32 eager reference first, then each runtime x variant."""
    import torch

    from segbench.measure.settings import measurement_settings
    from segbench.runtimes import torch_runtime

    config, images = sweep.config, sweep.images
    device = torch.device(config.device)
    example = images.example(shape)
    network = model.get().eval()
    params = sum(p.numel() for p in network.parameters())
    runtimes = {r.name: r for r in config.runtime_specs}
    rows = []
    with (
        measurement_settings(device, config.timing.threads) as threads,
        torch.inference_mode(),
        tempfile.TemporaryDirectory() as workdir,
    ):
        x = example.to(device)
        eager = isolated(partial(_eager, network, x, device, threads, Path(workdir)))
        application = _application(sweep, spec, shape)
        reference = None
        if eager.value is not None and application.evaluate is not None:
            prepare = _preparer(torch_runtime.prepare, network, Variant(), device, threads, Path(workdir), images)
            reference = isolated(partial(application.reference, eager.value[0], shape, prepare)).value
        for key in keys:
            runtime, variant = runtimes[key["runtime"]], Variant.of_row(key)
            sweep.context.progress(spec.name, f"latency {'x'.join(map(str, shape))} {runtime.name} {variant.tag}")
            timed = isolated(
                partial(
                    _measure_variant,
                    spec,
                    network,
                    x,
                    runtime,
                    variant,
                    sweep,
                    threads,
                    Path(workdir),
                    images.calibration(shape, variant),
                    eager.value,
                    application,
                    reference,
                ),
                sweep.stage,
                config.device,
            )
            rows.append({**(timed.value or {"error": timed.error}), "params": params})
    return rows


def _eager(
    network: torch.nn.Module, x: torch.Tensor, device: torch.device, threads: int, workdir: Path
) -> tuple[Session, torch.Tensor]:
    """The PyTorch fp32 eager session every other row is timed against, and its logits (on the CPU)."""
    from segbench.measure.outputs import main_output
    from segbench.measure.settings import strict_fp32
    from segbench.runtimes import torch_runtime

    session = torch_runtime.prepare(
        network.to(device), x, device=device, variant=Variant(), threads=threads, workdir=workdir
    )
    with strict_fp32():
        reference = main_output(session.predict(x)).float().cpu()  # on the CPU: no device memory held
    return session, reference


def _check_available(runtime: RuntimeSpec, device: torch.device) -> None:
    """VariantUnavailable when ``runtime`` cannot run on ``device`` here."""
    from segbench.measure.faults import VariantUnavailable

    missing = (
        runtime.why_unavailable(device.type)
        if device.type in runtime.devices
        else (f"{runtime.name} does not run on {device.type}")
    )
    if missing:
        raise VariantUnavailable(missing)


def _measure_variant(
    spec: ModelSpec,
    network: torch.nn.Module,
    x: torch.Tensor,
    runtime: RuntimeSpec,
    variant: Variant,
    sweep: _Sweep,
    threads: int,
    workdir: Path,
    calibration: list[torch.Tensor],
    eager: tuple[Session, torch.Tensor] | None,
    application: Application,
    reference_accuracy: Row | None,
) -> Row:
    """One runtime x variant: prepare it, then time it alternately with fp32 eager (alone if the two do not
    fit in memory together), measure and compare it; then what the application sees (mIoU, end to end)."""

    from segbench.runners.profile import cached_ceilings_for, network_roofline

    config, device = sweep.config, x.device
    _check_available(runtime, device)
    reference_row = runtime.name == "torch" and variant == Variant()
    baseline, reference = (None, None) if eager is None else eager
    if reference_row:
        session, baseline, reference = baseline, None, None
    if not reference_row or session is None:
        session = runtime.prepare(
            network.to(device),
            x,
            device=device,
            variant=variant,
            threads=threads,
            workdir=workdir,
            calibration=calibration,
        )
    trace = None
    if config.trace_dir is not None:
        batch, _, height, width = x.shape
        trace = config.trace_dir / f"{spec.name}-{batch}x{height}x{width}-{runtime.name}-{variant.tag}.json"
    fields = _timed(session, x, reference, baseline, config.protocol, trace)
    prepare = _preparer(runtime.prepare, network, variant, device, threads, workdir, sweep.images)
    fields.update(application.fields(session, variant, x, prepare, reference_accuracy, own=reference_row))
    roofs = cached_ceilings_for(x, variant, threads)  # never measured here: `segbench profile` does
    fields["roofline_efficiency"] = network_roofline(network, x, variant, roofs, fields["latency_ms_median"]).get(
        "roofline_efficiency"
    )
    return fields


def _timed(
    session: Session,
    x: torch.Tensor,
    reference: torch.Tensor | None,
    baseline: Session | None,
    protocol: Protocol,
    trace: Path | None,
) -> Row:
    """The session's latency fields, timed alternately with ``baseline`` (fp32 eager) when there is one.

    Paired, the fp32 network's calls share the device with this variant's: a variant that fits alone
    (fp16, where fp32 barely fits) must not be reported as out of memory, so after an OOM it is timed
    alone, without a speed-up (its agreement still comes from the reference, already on the CPU).
    """
    from segbench.measure.faults import OOM, error_reason, release_memory
    from segbench.measure.latency import measure_session
    from segbench.rows.latency import measurement_fields

    device = x.device
    fields: Row | None = None
    try:
        fields = dict(
            measurement_fields(
                measure_session(session, x, reference, device=device, protocol=protocol, baseline=baseline, trace=trace)
            )
        )
    except Exception as exc:
        if baseline is None or error_reason(exc) != OOM:
            raise
    if fields is None:  # retried here, outside the except: its traceback holds the failed call's tensors
        release_memory(device)
        baseline = None
        fields = dict(
            measurement_fields(measure_session(session, x, reference, device=device, protocol=protocol, trace=trace))
        )
    fields["timing_protocol"] = defaults.protocol_label(protocol, paired=baseline is not None)
    return fields


def _application(sweep: _Sweep, spec: ModelSpec, shape: tuple[int, ...]) -> Application:
    """What a cell measures beyond model-only time: mIoU through ``sweep.evaluate`` (``segbench run``'s)
    or on the dataset's val split, and end-to-end frames of the source size; for models only (a block
    has no classes, and takes no frames)."""
    config = sweep.config
    if spec.kind != "model":
        return Application(config.evaluation, None, None, config.protocol)
    evaluate = sweep.evaluate
    if evaluate is None and config.accuracy:
        evaluate = partial(sweep.images.accuracy, (shape[2], shape[3]), config.evaluation)
    frames = None
    if config.end_to_end:
        frames = sweep.images.frames(config.source_size or (shape[2], shape[3]), shape[0])
    return Application(config.evaluation, evaluate, frames, config.protocol)


def _preparer(
    prepare: Callable[..., Session],
    network: torch.nn.Module,
    variant: Variant,
    device: torch.device,
    threads: int,
    workdir: Path,
    images: _Images,
) -> Prepare:
    """``prepare(shape)``: a session of one runtime and variant for inputs of another shape, made as the
    row's own was (the cell's image at that size, its int8 calibration too)."""

    def at(shape: tuple[int, ...]) -> Session:
        return prepare(
            network.to(device),
            images.example(shape).to(device),
            device=device,
            variant=variant,
            threads=threads,
            workdir=shape_folder(workdir, shape),
            calibration=images.calibration(shape, variant),
        )

    return at


class _Images:
    """The timed input and the int8 calibration inputs, from the config's dataset (opened on first use)."""

    def __init__(self, config: LatencyConfig) -> None:
        self.config = config
        self._splits: tuple[Any, Any] | None = None

    def example(self, shape: tuple[int, ...]) -> torch.Tensor:
        """The first val image resized to the cell's size, repeated to its batch (random for C != 3)."""
        import torch

        if shape[1] != 3:
            return torch.randn(*shape, generator=torch.Generator().manual_seed(self.config.seed))
        image = self._resized([self.splits()[1][0][0]], shape)[0]
        return image.expand(shape[0], *image.shape[1:]).contiguous()

    def calibration(self, shape: tuple[int, ...], variant: Variant) -> list[torch.Tensor]:
        """``CALIBRATION_IMAGES`` batches of train images for int8 (none for other variants or C != 3)."""
        import torch

        if variant.precision != "int8" or shape[1] != 3:
            return []
        train_set = self.splits()[0]
        count = min(len(train_set), CALIBRATION_IMAGES * shape[0])
        resized = self._resized([train_set[i][0] for i in range(count)], shape)
        batch = shape[0]
        return [torch.cat(resized[i : i + batch]) for i in range(0, len(resized) - batch + 1, batch)]

    def frames(self, source: tuple[int, int], batch: int) -> torch.Tensor:
        """The first val image as ``batch`` uint8 frames of the ``source`` size (end-to-end input)."""
        from segbench.measure.endtoend import frames_of

        frame = frames_of(self.splits()[1][0][0][None], source)
        return frame.expand(batch, *frame.shape[1:]).contiguous()

    def accuracy(self, size: tuple[int, int], protocol: EvalProtocol, predict: Predict, batch: int) -> Row:
        """mIoU etc. of ``predict`` on the val split at ``size`` under ``protocol``."""
        from segbench.measure.training import evaluate

        val_set = self.splits()[1]
        accuracy = evaluate(
            predict,
            val_set,
            num_classes=val_set.num_classes,
            size=size,
            device=self.config.device,
            batch_size=batch,
            protocol=protocol,
        )
        return {"miou": accuracy.miou, "pixel_acc": accuracy.pixel_acc, "iou_per_class": accuracy.iou_per_class}

    def splits(self) -> tuple[Any, Any]:
        """The dataset's (train, val) splits, opened on first use (`segbench.data.open_datasets`)."""
        if self._splits is None:
            from segbench.data import open_datasets

            classes = self.config.num_classes if self.config.accuracy else None
            self._splits = open_datasets(self.config.dataset, seed=self.config.seed, num_classes=classes)
        return self._splits

    @staticmethod
    def _resized(images: list[torch.Tensor], shape: tuple[int, ...]) -> list[torch.Tensor]:
        import torch.nn.functional as F

        return [F.interpolate(x[None], size=shape[2:], mode="bilinear", align_corners=False) for x in images]
