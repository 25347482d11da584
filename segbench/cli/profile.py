"""``segbench profile``: per-layer time against this machine's measured roofline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from segbench.cli.app import command
from segbench.cli.options import (
    ChannelsLast,
    Device,
    Models,
    Output,
    Precisions,
    Runtimes,
    Threads,
    Warmup,
    parse_names,
    parse_size,
    variants_of,
)
from segbench.cli.output import note
from segbench.rows.schema import LAYER_FIELDS
from segbench.runners.defaults import Timing

#: The layer fields less the ceilings (said once, in the footnotes) and two the files keep, and the
#: summary's own.
COLUMNS = (
    "model",
    "runtime",
    "kind",
    "macs_analytic",
    *(
        f
        for f in LAYER_FIELDS
        if not f.startswith(("peak_", "bandwidth_")) and f not in ("input_shape", "achieved_gbs")
    ),
    "latency_ms_median",
    "profile_coverage",
    "error",
)

Size = Annotated[str | None, typer.Option("--size", help="HxW. Default: each model's own.")]
BatchSize = Annotated[int, typer.Option("--batch-size", "-b", help="Batch size.")]
Calls = Annotated[
    int,
    typer.Option("--calls", help="Timed calls, each followed by a profiled one; medians over them are reported."),
]
Recalibrate = Annotated[
    bool, typer.Option("--recalibrate", help="Measure this machine's ceilings again, even if cached.")
]
Plot = Annotated[Path | None, typer.Option("--plot", help="Write the roofline and per-op time plots here.")]


@command("profile")
def profile_command(
    models: Models = None,
    device: Device = "cpu",
    size: Size = None,
    batch_size: BatchSize = 1,
    precision: Precisions = "fp32",
    channels_last: ChannelsLast = False,
    runtime: Runtimes = "torch",
    threads: Threads = None,
    calls: Calls = 20,
    warmup: Warmup = None,
    recalibrate: Recalibrate = False,
    plot: Plot = None,
    *,
    output: Output,
) -> None:
    """Time every layer with the runtime's own profiler and set it against this machine's roofline.

    One row per layer (time, share, MACs, compulsory bytes, intensity, achieved GMAC/s and GB/s, its
    roofline floor, efficiency, bound) and a summary row per model x runtime x variant (latency median,
    the network's floor, efficiency, profile coverage). The ceilings (GEMM peak; L2, LLC and DRAM
    bandwidth) are measured once per machine and thread count and cached; --recalibrate re-measures.
    """
    from segbench.cli.job import Job
    from segbench.plugins import get_registry
    from segbench.runners.profile import ProfileConfig, profile

    job = Job("profile", device, output)
    config = ProfileConfig(
        device=job.device,
        size=parse_size(size) if size else None,
        batch_size=batch_size,
        runtimes=parse_names(runtime),
        variants=variants_of(precision, channels_last, False, False, False),
        calls=calls,
        timing=Timing(warmup=warmup, threads=threads),
        recalibrate=recalibrate,
    )
    specs = get_registry().select(models, kind="model")
    note(f"profile on {device}: {', '.join(f'{r.name} {v.tag}' for r, v in config.combos())}")
    rows = job.collect(profile(specs, config, job.context), on_row=_summary)
    if plot is not None and rows:
        from segbench.output.plots import plot_layer_time_by_op, plot_roofline

        for name, draw in (("roofline", plot_roofline), ("layer_time_by_op", plot_layer_time_by_op)):
            reason = draw(rows, plot / f"{name}.png")
            note(f"skipped plot {name}: {reason}" if reason else f"wrote {plot / name}.png")
    job.emit(rows, COLUMNS, "segbench profile", footnotes=_footnotes(rows))


def _footnotes(rows: list[dict[str, Any]]) -> list[str]:
    ceilings = next((r for r in rows if r.get("peak_gmacs")), None)
    roofs = (
        f"ceilings: {ceilings['peak_gmacs']:.1f} GMAC/s; L2 {ceilings['bandwidth_gbs_l2']:.1f}, "
        f"LLC {ceilings['bandwidth_gbs_llc']:.1f}, DRAM {ceilings['bandwidth_gbs_dram']:.1f} GB/s "
        f"({ceilings['threads']} thread{'s' if ceilings['threads'] > 1 else ''})"
        if ceilings
        else "ceilings: none measured"
    )
    return [
        roofs,
        "bytes: compulsory traffic (inputs + outputs + weights, once each, at the precision)",
        "roofline_ms = max(MACs / peak, bytes / bandwidth of the level the working set fits in); "
        "efficiency = roofline_ms / layer_ms; bound overhead: below 10 % of the roof",
        "model rows: roofline_ms = the network's floor (BN, activations, adds fused into the op before them); "
        "profile_coverage = layer times of a call summed (median over calls) / latency median; unattributed_ms: "
        "framework overhead between layers (Python, dispatch, session)",
    ]


def _summary(row: dict[str, Any]) -> str | None:
    if row.get("kind") == "layer":
        return None
    what = f"{row['model']} {row['runtime']}"
    if row.get("error"):
        return f"{what}: error: {row['error']}"
    return (
        f"{what}: {row['latency_ms_median']:.2f} ms, floor {row['roofline_ms']:.2f} ms "
        f"(efficiency {row['efficiency']:.2f}), coverage {row['profile_coverage']:.2f}"
    )
