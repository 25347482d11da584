"""The profile runner (``segbench profile``): per layer, where the time goes and how far it is from
this machine's roofline.

One cell per model x runtime x variant: the model is timed by the ordinary timer
(`segbench.measure.timer.time_sessions`, ``latency_ms_median``) one call at a time, so that load
on a shared machine hits the timed and the profiled calls alike. PyTorch: each timed call of the
plain model is followed by one call under its profiler (`segbench.measure.layers`). ONNX Runtime
and OpenVINO: the timed calls are those of a session with the runtime's profiling on (per-node
timestamps cost about a microsecond a node), prepared as the runtime prepares its own sessions; a
second session beside it would change the first one's speed (each pins its worker threads). Each
layer gets a ``kind = "layer"`` row with its roofline fields (`segbench.measure.roofline`) and the cell ends with a ``kind = "model"``
summary row: the network's floor (``roofline_ms``, the sum over its layers with BN, activations and
adds fused into the op before them, the same floor for every runtime: `network_roofline`), ``efficiency`` and
``profile_coverage`` (the layer times of a call summed, median over the profiled calls, / latency
median: whole calls against whole calls, so that the preemptions of a loaded machine, rare per layer
but many per call, count alike in both; ``unattributed_ms`` is the rest: framework overhead between
layers). The ceilings (`segbench.measure.ceilings`) are measured once per machine,
thread count and precision and cached; every row records the ones it used.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segbench.checks import check_device, check_positive, check_precisions, check_sizes
from segbench.errors import UserError
from segbench.measure.session import Variant
from segbench.rows.environment import cpu_name, device_name, fingerprint
from segbench.runners import defaults
from segbench.runners.cells import ALONE, Built, Cell, Context, Row, measure_cells, variant_key
from segbench.runners.defaults import Timing

if TYPE_CHECKING:
    import torch

    from segbench.measure.ceilings import Calibration, Ceilings
    from segbench.measure.layers import Layer
    from segbench.measure.timer import Protocol
    from segbench.registry import ModelSpec, RuntimeSpec

#: Runtimes with a per-layer profiler segbench reads: the precisions and switches it profiles there.
PROFILED = {
    "torch": (("fp32", "fp16", "bf16"), {"channels_last"}),
    "onnxruntime": (("fp32",), set()),
    "openvino": (("fp32",), set()),
}
#: A side below this gives feature maps of a pixel or less deep in a segmentation network: its
#: profile would time padding, not the layers.
MIN_SIDE = 32


@dataclass(frozen=True)
class ProfileConfig:
    """What to profile (runtimes x variants at one size and batch) and how long.

    ``calls``: timed calls per cell, each followed by a profiled call (each layer's time is its
    median over the profiled calls, the latency the median of the timed ones); ``timing``: its
    ``warmup`` untimed calls of each first (the device's default where None) and ``threads``
    (``--calls`` stands for its ``iters``, and the adaptive settings do not apply).
    ``recalibrate`` measures the ceilings again even when cached; ``calibration`` how long.
    """

    device: str = "cpu"
    size: tuple[int, int] | None = None
    batch_size: int = 1
    runtimes: Sequence[str] = ("torch",)
    variants: Sequence[Variant] = (Variant(),)
    calls: int = 20
    timing: Timing = field(default_factory=Timing)
    recalibrate: bool = False
    calibration: Calibration | None = field(default=None, compare=False)
    seed: int = defaults.SEED
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        check_device(self.device)
        check_sizes([self.size] if self.size else None)
        if self.size and min(self.size) < MIN_SIDE:
            raise UserError(f"size {self.size[0]}x{self.size[1]} too small to profile: each side at least {MIN_SIDE}")
        check_positive(self.batch_size, "batch size")
        check_positive(self.calls, "calls")
        check_precisions([v.precision for v in self.variants])
        if (self.timing.iters, self.timing.budget_s, self.timing.target) != (None, None, None):
            raise UserError("profile times --calls calls per cell: iters, budget and target do not apply")
        for runtime in self.runtime_specs:
            if runtime.name not in PROFILED:
                raise UserError(
                    f"runtime {runtime.name} has no per-layer profiler segbench reads; profile supports "
                    + ", ".join(PROFILED)
                )
        if not self.combos():
            raise UserError(
                f"no runtime of {', '.join(self.runtimes)} profiles {', '.join(v.tag for v in self.variants)}"
            )

    @property
    def runtime_specs(self) -> list[RuntimeSpec]:
        from segbench.plugins import get_registry

        return get_registry().runtime_list(",".join(self.runtimes))

    @property
    def protocol(self) -> Protocol:
        """The timing protocol in effect: ``warmup`` untimed, then ``calls`` timed calls."""
        return replace(self.timing.protocol(self.device), iters=self.calls)

    def combos(self) -> list[tuple[RuntimeSpec, Variant]]:
        """Each runtime with each variant it can run and segbench can profile."""
        return [
            (r, v)
            for r in self.runtime_specs
            for v in self.variants
            if r.name in PROFILED and v.precision in PROFILED[r.name][0] and set(v.switches) <= PROFILED[r.name][1]
        ]


def machine() -> dict[str, Any]:
    """What must match for cached ceilings to be trusted: CPU, host, core count, versions."""
    import os

    facts = fingerprint()
    return {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "hostname": facts["hostname"],
        "torch_version": facts["torch_version"],
    }


def ceilings(config: ProfileConfig, context: Context, threads: int, precision: str) -> Ceilings:
    """The cached ceilings of this machine (measured now if there are none, or ``recalibrate``)."""
    from segbench.measure.ceilings import Calibration, ceilings_for
    from segbench.runtimes.torch_runtime import DTYPES

    found, cached = ceilings_for(
        machine(),
        threads,
        precision,
        DTYPES.get(precision, DTYPES["fp32"]),
        recalibrate=config.recalibrate,
        calibration=config.calibration or Calibration(),
        folder=config.cache_dir,
    )
    context.progress("ceilings", "cached" if cached else "measured")
    return found


def cached_roofs() -> list[str]:
    """This machine's cached ceilings, one line per thread count and precision (for ``segbench env``)."""
    from segbench.measure.ceilings import cached_ceilings

    return [
        f"{c.threads} threads {c.precision}: {c.peak_gmacs:.1f} GMAC/s; L2 {c.bandwidth_gbs_l2:.1f}, "
        f"LLC {c.bandwidth_gbs_llc:.1f}, DRAM {c.bandwidth_gbs_dram:.1f} GB/s (measured {c.measured_at})"
        for c in cached_ceilings(machine())
    ] or ["none cached: segbench profile measures them"]


def cached_ceilings_for(x: torch.Tensor, variant: Variant, threads: int) -> Ceilings | None:
    """This machine's cached CPU ceilings for the setting, if any (rows that do not measure them)."""
    from segbench.measure.ceilings import cache_file, load_cached

    if x.device.type != "cpu":
        return None
    return load_cached(cache_file(threads, variant.precision), machine(), threads, variant.precision)


def network_roofline(
    network: Any, x: torch.Tensor, variant: Variant, roofs: Ceilings | None, latency_ms: float | None
) -> Row:
    """A whole network's roofline fields at ``variant``'s precision: ``roofline_ms`` (its floor,
    `segbench.measure.roofline.network_floor` of PyTorch eager's layers: one floor for every runtime),
    ``intensity`` (all MACs / all compulsory bytes), ``bound`` (the roof that holds most of the
    unfused layers' roofs; ``overhead`` below 10 % of the floor), ``roofline_efficiency`` (floor /
    ``latency_ms``) and the ceilings. Empty without ceilings (none cached, not the CPU) or for int8."""
    from segbench.measure.layers import describe
    from segbench.measure.roofline import OVERHEAD_EFFICIENCY, network_floor, roofline_fields
    from segbench.runtimes.torch_runtime import DTYPES, convert_input, variant_model

    if roofs is None or variant.precision not in DTYPES:
        return {}
    plain = Variant(variant.precision, channels_last=variant.channels_last)
    layers = describe(variant_model(network, plain), convert_input(x, plain))
    per_layer = [roofline_fields(la.total_macs, la.nbytes, None, roofs) for la in layers]
    floor = network_floor(layers, roofs, DTYPES[variant.precision].itemsize)
    compute = sum(f["roofline_ms"] for f in per_layer if f["bound"] == "compute")
    nbytes = sum(la.nbytes for la in layers)
    bound = "compute" if compute >= sum(f["roofline_ms"] for f in per_layer) / 2 else "memory"
    if latency_ms and floor / latency_ms < OVERHEAD_EFFICIENCY:
        bound = "overhead"
    return {
        "roofline_ms": floor,
        "intensity": sum(la.total_macs for la in layers) / nbytes if nbytes else None,
        "bound": bound,
        "roofline_efficiency": floor / latency_ms if latency_ms else None,
        **roofs.fields(),
    }


def profile(specs: Sequence[ModelSpec], config: ProfileConfig, context: Context = ALONE) -> Iterator[Row]:
    """Layer rows and a summary row per model x runtime x variant (see the module docstring)."""
    for spec in specs:
        _check_size(spec, config)
    return measure_cells(cells(specs, config, context), context)


def _check_size(spec: ModelSpec, config: ProfileConfig) -> None:
    """A forward pass on the meta device at the size: a size the network cannot take is bad input."""
    import torch

    height, width = config.size or spec.default_size
    try:
        with torch.device("meta"):
            network = spec.build().eval()
            network(torch.empty(config.batch_size, spec.input_channels(), height, width))
    except Exception as exc:
        raise UserError(f"size {height}x{width} too small for {spec.name}: {str(exc).splitlines()[0]}") from None


def cells(specs: Sequence[ModelSpec], config: ProfileConfig, context: Context) -> Iterator[Cell]:
    label = device_name(config.device)
    calibrated: dict[tuple[int, str], Ceilings] = {}
    for spec in specs:
        model = Built(spec, seed=config.seed)
        height, width = config.size or spec.default_size
        for runtime, variant in config.combos():
            key = variant_key(
                spec, config.device, label, runtime, variant, batch_size=config.batch_size, height=height, width=width
            )
            shape = (config.batch_size, spec.input_channels(), height, width)
            measure = partial(_measure, model, shape, runtime, variant, config, context, calibrated)
            yield Cell([key], measure, device=config.device, stage="profile")


def _measure(
    model: Built,
    shape: tuple[int, ...],
    runtime: RuntimeSpec,
    variant: Variant,
    config: ProfileConfig,
    context: Context,
    calibrated: dict[tuple[int, str], Ceilings],
    keys: list[Row],
) -> list[Row]:
    import torch

    from segbench.measure.faults import VariantUnavailable
    from segbench.measure.settings import measurement_settings

    device = torch.device(config.device)
    missing = runtime.why_unavailable(device.type) if device.type in runtime.devices else f"{runtime.name}: no {device}"
    if missing:
        raise VariantUnavailable(missing)
    network = model.get().eval().to(device)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(config.seed)).to(device)
    with measurement_settings(device, config.timing.threads) as threads, torch.inference_mode():
        if (threads, variant.precision) not in calibrated:
            calibrated[threads, variant.precision] = ceilings(config, context, threads, variant.precision)
        roofs = calibrated[threads, variant.precision]
        context.progress(model.spec.name, f"profile {runtime.name} {variant.tag}")
        with tempfile.TemporaryDirectory() as workdir:
            latency, layers = PROFILERS[runtime.name](network, x, runtime, variant, config, threads, Path(workdir))
        floor = network_roofline(network, x, variant, roofs, latency["latency_ms_median"])
    return rows(layers, {**latency, **floor}, roofs, threads)


def rows(layers: list[Layer], latency: dict[str, Any], roofs: Ceilings, threads: int) -> list[Row]:
    """The layer rows and the summary row of one profiled cell."""
    import statistics

    from segbench.measure.roofline import roofline_fields

    layer_total = sum(layer.ms or 0.0 for layer in layers)
    calls = max((len(layer.times_ms) for layer in layers), default=0)
    per_call = [sum(la.times_ms[i] for la in layers if i < len(la.times_ms)) for i in range(calls)]
    attributed = statistics.median(per_call) if per_call else 0.0
    out = []
    for layer in layers:
        out.append(
            {
                "kind": "layer",
                "layer": layer.name,
                "op": layer.op,
                "input_shape": layer.input_shape,
                "output_shape": layer.output_shape,
                "layer_ms": layer.ms,
                "layer_share": (layer.ms or 0.0) / layer_total if layer_total else None,
                "macs_analytic": layer.macs,
                "macs_other": layer.macs_other,
                **roofline_fields(layer.total_macs, layer.nbytes, layer.ms, roofs),
                **roofs.fields(),
                "threads": threads,
            }
        )
    median = latency["latency_ms_median"]
    out.append(
        {
            **latency,
            "macs_analytic": sum(layer.macs for layer in layers),
            "macs_other": sum(layer.macs_other for layer in layers),
            "bytes": sum(layer.nbytes for layer in layers),
            "efficiency": latency["roofline_efficiency"],
            "profile_coverage": attributed / median,
            "unattributed_ms": median - attributed,
            **roofs.fields(),
            "threads": threads,
        }
    )
    return out


def _alternately(call: Any, after: Any, device: torch.device, config: ProfileConfig, batch: int) -> dict[str, Any]:
    """Latency fields of ``call``, timed by the ordinary timer one call at a time, each call followed by
    ``after`` (a profiled call, or reading the counters of the call just timed), ``warmup`` times untimed
    first: a burst of load on a shared machine then hits the timed and the profiled calls alike, and
    ``profile_coverage`` compares like with like."""
    from segbench.measure.session import Session
    from segbench.measure.timer import Protocol, time_sessions
    from segbench.rows.latency import summarize

    session = Session(call=call, predict=call)
    for _ in range(config.protocol.warmup):
        call()
        after()
    times: list[float] = []
    for _ in range(config.calls):
        times += time_sessions([session], device, Protocol(warmup=0, iters=1)).device_ms[0]
        after()
    # paired: each timed call alternates with another (profiled) one, as a paired timing's calls do
    return {**summarize(times, batch), "timing_protocol": defaults.protocol_label(config.protocol, paired=True)}


def _torch(
    network: Any, x: Any, runtime: RuntimeSpec, variant: Variant, config: ProfileConfig, threads: int, workdir: Path
) -> tuple[dict[str, Any], list[Layer]]:
    from segbench.measure.layers import torch_times
    from segbench.runtimes.torch_runtime import convert_input, variant_model

    net, xv = variant_model(network, variant), convert_input(x, variant)
    layers: dict[str, Layer] = {}

    def profiled() -> None:
        for layer in torch_times(net, xv):
            layers.setdefault(layer.name, replace(layer, times_ms=[])).times_ms.extend(layer.times_ms)

    latency = _alternately(lambda: net(xv), profiled, x.device, config, x.shape[0])
    for layer in layers.values():
        del layer.times_ms[: config.protocol.warmup]
    return latency, list(layers.values())


def _onnxruntime(
    network: Any, x: Any, runtime: RuntimeSpec, variant: Variant, config: ProfileConfig, threads: int, workdir: Path
) -> tuple[dict[str, Any], list[Layer]]:
    import onnxruntime as ort

    from segbench.measure.layers import OnnxGraph, describe, map_nodes, onnxruntime_runs
    from segbench.runtimes.onnx_export import INPUT_NAME, export
    from segbench.runtimes.onnxruntime_runtime import PROVIDERS, session_options

    path = export(network, x, workdir)
    options = session_options(threads)
    options.enable_profiling = True
    options.profile_file_prefix = str(workdir / "ort-profile")
    profiled = ort.InferenceSession(str(path), options, providers=[PROVIDERS[x.device.type]])
    inputs = {INPUT_NAME: x.cpu().numpy()}
    latency = _alternately(lambda: profiled.run(None, inputs), lambda: None, x.device, config, x.shape[0])
    runs = onnxruntime_runs(Path(profiled.end_profiling()), config.protocol.warmup)
    layers = describe(network, x)
    return latency, map_nodes(OnnxGraph(path, layers), runs, layers)


def _openvino(
    network: Any, x: Any, runtime: RuntimeSpec, variant: Variant, config: ProfileConfig, threads: int, workdir: Path
) -> tuple[dict[str, Any], list[Layer]]:
    from segbench.measure.layers import OnnxGraph, describe, map_nodes, openvino_runs
    from segbench.runtimes.onnx_export import export
    from segbench.runtimes.openvino_runtime import compile_cpu

    path = export(network, x, workdir)
    compiled = compile_cpu(path, threads, perf_count=True)
    request = compiled.create_infer_request()
    inputs = {0: x.cpu().numpy()}
    runs = []
    latency = _alternately(
        lambda: request.infer(inputs), lambda: runs.append(request.get_profiling_info()), x.device, config, x.shape[0]
    )
    layers = describe(network, x)
    runs = runs[config.protocol.warmup :]
    return latency, map_nodes(OnnxGraph(path, layers), openvino_runs(compiled, runs), layers)


PROFILERS = {"torch": _torch, "onnxruntime": _onnxruntime, "openvino": _openvino}
