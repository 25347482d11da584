"""The K^2 runner (``segbench blocks``, ``run --blocks``): standard vs depthwise-separable conv block.

For every kernel size K and channel count C (in = out = C = N, stride 1) the two block specs, by
default the built-in ``block_standard`` (KxK conv + BN + ReLU) and ``block_dsconv`` (KxK depthwise +
BN, 1x1 pointwise + BN + ReLU), give one row each, with params, MACs and latency. A pair is one cell;
its dsconv row carries the comparison (MobileNet, Howard et al. 2017, section 3.1; see
`segbench.rows.schema.pair_ratios`): ``mac_ratio`` (dsconv / standard MACs), ``mac_ratio_theory``
(1/N + 1/K^2, equal to it) and ``latency_speedup`` (standard / dsconv median latency, what the device
actually gives).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from segbench.checks import check_all_positive, check_device, check_kernel_sizes, check_positive, check_sizes
from segbench.errors import UserError
from segbench.rows.environment import device_name
from segbench.rows.schema import pair_ratios, spec_fields
from segbench.runners import defaults
from segbench.runners.cells import ALONE, Cell, Context, Row, measure_cells
from segbench.runners.defaults import Timing
from segbench.runners.processes import in_processes

if TYPE_CHECKING:
    import torch

    from segbench.measure.timer import Protocol
    from segbench.registry import ModelSpec

#: The pair the study compares: the baseline first.
PAIR = ("block_standard", "block_dsconv")


@dataclass(frozen=True)
class BlocksConfig:
    """The grid (kernel sizes x channel counts), the input (None: the blocks' own size) and timing."""

    kernel_sizes: Sequence[int] = (3, 5, 7)
    channels: Sequence[int] = (32, 64, 128, 256)
    size: tuple[int, int] | None = None
    batch_size: int = 1
    device: str = "cpu"
    timing: Timing = field(default_factory=Timing)

    def __post_init__(self) -> None:
        check_kernel_sizes(self.kernel_sizes)
        check_all_positive(self.channels, "channel count")
        check_sizes([self.size] if self.size else None)
        check_positive(self.batch_size, "batch size")
        check_device(self.device)

    @property
    def protocol(self) -> Protocol:
        """The timing protocol in effect (the device type's defaults where not set)."""
        return self.timing.protocol(self.device)


def default_specs() -> list[ModelSpec]:
    """The registered ``PAIR``."""
    from segbench.plugins import get_registry

    return [get_registry().model(name) for name in PAIR]


def block_options(kernel_size: int, channels: int) -> dict[str, int]:
    return {"kernel_size": kernel_size, "in_channels": channels, "out_channels": channels, "stride": 1}


def blocks(specs: Sequence[ModelSpec], config: BlocksConfig, context: Context = ALONE) -> Iterator[Row]:
    """The standard and the dsconv row of every (K, C) pair, K-major, yielded as each pair is done."""
    if len(specs) != 2 or any(s.kind != "block" for s in specs):
        raise UserError(f"the K^2 study compares two blocks, e.g. {', '.join(PAIR)}")
    return measure_cells(cells(specs, config, context), context)


def cells(specs: Sequence[ModelSpec], config: BlocksConfig, context: Context) -> Iterator[Cell]:
    """One cell per (K, C): the pair of ``specs`` (baseline first) at that geometry."""
    label = device_name(config.device)
    for k in config.kernel_sizes:
        for c in config.channels:
            options = block_options(k, c)
            keys = []
            for spec in specs:
                height, width = config.size or spec.default_size
                keys.append(
                    spec_fields(
                        spec,
                        options,
                        device=config.device,
                        device_name=label,
                        runtime="torch",
                        batch_size=config.batch_size,
                        height=height,
                        width=width,
                    )
                )
            yield Cell(keys, partial(_pair_cell, specs, keys, options, config, context), device=config.device)


def _pair_cell(
    specs: Sequence[ModelSpec],
    pair: list[Row],
    options: dict[str, int],
    config: BlocksConfig,
    context: Context,
    keys: list[Row],
) -> list[Row]:
    """The rows ``keys`` of one pair: measured here, or in ``--processes`` fresh workers and pooled."""
    context.progress("K^2 study", f"K={options['kernel_size']} C={options['in_channels']}")
    measure = partial(_measure_pair, specs, pair, options, config)
    processes = config.timing.processes_on(config.device)
    if processes == 1:
        return measure(keys)
    return in_processes(measure, processes, config.protocol.target, keys)


def _measure_pair(
    specs: Sequence[ModelSpec],
    pair: list[Row],
    options: dict[str, int],
    config: BlocksConfig,
    keys: list[Row],
) -> list[Row]:
    """Both blocks of the pair counted and timed alternately, call by call (the ratios need both);
    the rows of ``keys`` returned."""
    import torch

    from segbench.measure.macs import count_model
    from segbench.rows.latency import speedup_fields

    height, width = pair[0]["height"], pair[0]["width"]
    example = torch.randn(
        config.batch_size, options["in_channels"], height, width, generator=torch.Generator().manual_seed(defaults.SEED)
    )
    models = [spec.build(**options).eval() for spec in specs]
    measured = [count_model(model, example).fields for model in models]
    device_ms = _time_pair(models, example, measured, config)
    baseline, other = measured
    if baseline.get("roofline_ms") and other.get("roofline_ms"):
        other["speedup_roofline"] = baseline["roofline_ms"] / other["roofline_ms"]
    other.update(speedup_fields(device_ms[0], device_ms[1]))
    other.update(pair_ratios({**pair[0], **baseline}, {**pair[1], **other}))
    return [fields for key, fields in zip(pair, measured) if key in keys]


def _time_pair(
    models: list[torch.nn.Module], example: torch.Tensor, measured: list[dict[str, Any]], config: BlocksConfig
) -> list[list[float]]:
    """The two blocks timed alternately; each one's latency, memory and roofline fields added to its
    ``measured`` row; the per-call times of each returned (for the speed-up)."""
    import tempfile
    from pathlib import Path

    import torch

    from segbench.measure.memory import peak_memory
    from segbench.measure.session import Variant
    from segbench.measure.settings import measurement_settings
    from segbench.measure.timer import time_sessions
    from segbench.rows.latency import latency_fields
    from segbench.runners.profile import cached_ceilings_for, network_roofline
    from segbench.runtimes import torch_runtime

    device, protocol = torch.device(config.device), config.protocol
    with (
        measurement_settings(device, config.timing.threads) as threads,
        torch.inference_mode(),
        tempfile.TemporaryDirectory() as workdir,
    ):
        x = example.to(device)
        # on a GPU each conv of a block takes microseconds: eagerly, the pair's speed-up would count kernel
        # launches (4 against 2), so the blocks are timed as CUDA-graph replays there
        variant = Variant(cuda_graph=device.type == "cuda")
        sessions = [
            torch_runtime.prepare(
                m.to(device), x, device=device, variant=variant, threads=threads, workdir=Path(workdir)
            )
            for m in models
        ]
        timing = time_sessions(sessions, device, protocol)
        roofs = cached_ceilings_for(x, Variant(), threads)  # never measured here: `segbench profile` does
        for fields, session, device_ms, host_ms, model in zip(
            measured, sessions, timing.device_ms, timing.host_ms, models
        ):
            fields.update(
                latency_fields(device_ms, host_ms, config.batch_size, timing.target_met),
                peak_mem_mb=peak_memory(session, device),
                threads=threads,
                timing_protocol=defaults.protocol_label(protocol, paired=True),
                **variant.fields(),
            )
            fields.update(network_roofline(model, x, Variant(), roofs, fields["latency_ms_median"]))
    return timing.device_ms
