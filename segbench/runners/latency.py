"""The latency runner (``segbench latency``, and a stage of ``run``): models x sizes x batches x variants.

One cell, and one row, per model x size (default: the model's own) x batch size x variant. A cell
that fails (CUDA out of memory, a dtype the device lacks, CUDA graphs on a CPU, a model that raises)
becomes a row with a one-line ``error``; memory is released and the sweep goes on. A model whose
builder fails gives every one of its cells that error.

Variant rule (`expand_variants`): the fp32 eager row always comes first; then one row for every
combination of a requested precision with each requested switch (``channels_last``, ``compile``,
``cuda_graph``) off and on. ``precisions=("fp32", "fp16"), channels_last=True`` gives fp32,
fp32+cl, fp16, fp16+cl.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

from segbench.checks import (
    check_all_positive,
    check_device,
    check_precisions,
    check_sizes,
    check_timing,
    check_writable,
)
from segbench.measure.latency import Variant
from segbench.rows.environment import device_name
from segbench.rows.schema import spec_fields
from segbench.runners import defaults
from segbench.runners.cells import Built, Cell, Row, RunnerOptions, measure_cells

if TYPE_CHECKING:
    from segbench.registry import ModelSpec


def expand_variants(
    precisions: Sequence[str] = ("fp32",),
    channels_last: bool = False,
    compile: bool = False,
    cuda_graph: bool = False,
) -> list[Variant]:
    """fp32 eager first, then each requested precision with each requested switch off and on."""
    check_precisions(precisions)
    switches = [(False, True) if on else (False,) for on in (channels_last, compile, cuda_graph)]
    combos = [Variant(p, *flags) for p in precisions for flags in itertools.product(*switches)]
    return list(dict.fromkeys([Variant(), *combos]))


@dataclass(frozen=True)
class LatencyConfig(RunnerOptions):
    """How to time: the cells (sizes, batches, variants) and the protocol (warm-up, calls, threads).

    ``warmup`` and ``iters`` None mean the device type's defaults (`segbench.runners.defaults`);
    ``num_classes`` None means each model's own.
    """

    device: str = "cpu"
    sizes: Sequence[tuple[int, int]] | None = None
    batch_sizes: Sequence[int] = (1,)
    variants: Sequence[Variant] = (Variant(),)
    num_classes: int | None = None
    warmup: int | None = None
    iters: int | None = None
    threads: int | None = None
    trace_dir: Path | None = None
    seed: int = defaults.SEED

    def __post_init__(self) -> None:
        check_device(self.device)
        check_sizes(self.sizes)
        check_all_positive(self.batch_sizes, "batch size")
        check_precisions([v.precision for v in self.variants])
        check_timing(self.warmup, self.iters, self.threads)
        if self.trace_dir is not None:
            check_writable(self.trace_dir, "trace folder", folder=True)

    @property
    def timing(self) -> tuple[int, int]:
        """(warmup, iters) in effect."""
        return defaults.timing(self.device, self.warmup, self.iters)


def latency(specs: Sequence["ModelSpec"], config: LatencyConfig) -> Iterator[Row]:
    """One full row per model x size x batch x variant, yielded as each is timed."""
    return measure_cells(cells(specs, config), config)


def cells(
    specs: Sequence["ModelSpec"], config: LatencyConfig, built: dict[str, Built] | None = None, stage: str | None = None
) -> Iterator[Cell]:
    """The sweep's cells, model by model; each model is built once (or taken from ``built``)."""
    label = device_name(config.device)
    for spec in specs:
        classes = (config.num_classes or spec.default_num_classes) if spec.kind == "model" else None
        model = (built or {}).get(spec.name) or Built(spec, seed=config.seed, **_classes(spec, classes))
        for (height, width), batch, variant in itertools.product(
            config.sizes or [spec.default_size], config.batch_sizes, config.variants
        ):
            key = spec_fields(
                spec, device=config.device, device_name=label, batch_size=batch, height=height, width=width,
                num_classes=classes, **variant.fields(),
            )  # fmt: skip
            cell = partial(_measure, spec, model, (batch, spec.input_channels(), height, width), variant, config)
            yield Cell([key], cell, device=config.device, stage=stage)


def _classes(spec: "ModelSpec", classes: int | None) -> dict[str, int]:
    return {"num_classes": classes} if spec.kind == "model" and classes is not None else {}


def _measure(
    spec: "ModelSpec", model: Built, shape: tuple[int, ...], variant: Variant, config: LatencyConfig
) -> list[Row]:
    import torch

    from segbench.measure.latency import measure_latency

    batch, _, height, width = shape
    config.progress(spec.name, f"latency {batch}x{height}x{width} {variant.tag}")
    example = torch.randn(*shape, generator=torch.Generator().manual_seed(config.seed))
    warmup, iters = config.timing
    network = model.get()
    fields = measure_latency(
        network, example, device=config.device, precision=variant.precision,
        channels_last=variant.channels_last, compile=variant.compile, cuda_graph=variant.cuda_graph,
        warmup=warmup, iters=iters, threads=config.threads, trace_dir=config.trace_dir,
        trace_name=f"{spec.name}-{batch}x{height}x{width}-{variant.tag}",
    )  # fmt: skip
    return [{**fields, "params": sum(p.numel() for p in network.parameters())}]
