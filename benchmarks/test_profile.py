"""Fast-SCNN at 1024x2048, batch 1, 2 threads, on the CPU: this machine's floor for the network (the sum
of its layers' roofline times) and how close PyTorch eager, channels-last, ONNX Runtime and OpenVINO
come to it, with the five layers where the best runtime loses the most time against the floor.

Not a timed test: it prints the table the docs quote (docs/profile.md), and checks only the
roofline's floor property (no layer with >= 1 % of the time faster than its roof by more than 10 %).
Run: ``python -m pytest benchmarks/test_profile.py -s`` (a few minutes on 2 cores).
"""

from __future__ import annotations

from segbench.measure.session import Variant
from segbench.plugins import get_registry
from segbench.runners.defaults import Timing
from segbench.runners.profile import ProfileConfig, profile

SIZE = (1024, 2048)
THREADS = 2
CALLS = 5


def test_fast_scnn_against_the_roofline() -> None:
    spec = get_registry().model("fast_scnn")
    runtimes = [
        r for r in ("torch", "onnxruntime", "openvino") if get_registry().runtimes[r].unavailable("cpu") is None
    ]
    config = ProfileConfig(
        size=SIZE,
        runtimes=runtimes,
        variants=[Variant(), Variant(channels_last=True)],
        calls=CALLS,
        timing=Timing(warmup=1, threads=THREADS),
    )
    rows = list(profile([spec], config))
    summaries = [r for r in rows if r["kind"] == "model"]
    first = summaries[0]
    print(
        f"\nFast-SCNN {SIZE[0]}x{SIZE[1]}, batch 1, {THREADS} threads; ceilings: {first['peak_gmacs']:.1f} GMAC/s, "
        f"L2 {first['bandwidth_gbs_l2']:.1f}, LLC {first['bandwidth_gbs_llc']:.1f}, DRAM {first['bandwidth_gbs_dram']:.1f} GB/s"
    )
    print("| runtime | variant | median ms | floor ms | efficiency | coverage | error |")
    print("|---|---|---|---|---|---|---|")
    for r in summaries:
        tag = Variant.of_row(r).tag
        if r["error"]:
            print(f"| {r['runtime']} | {tag} | | | | | {r['error']} |")
            continue
        print(
            f"| {r['runtime']} | {tag} | {r['latency_ms_median']:.1f} | {r['roofline_ms']:.1f} | "
            f"{r['efficiency']:.3f} | {r['profile_coverage']:.2f} | |"
        )
    timed = [r for r in summaries if not r["error"]]
    best = min(timed, key=lambda r: r["latency_ms_median"])
    losing = sorted(
        (r for r in rows if r["kind"] == "layer" and _same_cell(r, best)),
        key=lambda r: -(r["layer_ms"] - r["roofline_ms"]),
    )[:5]
    print(f"\nFive layers where the best ({best['runtime']} {Variant.of_row(best).tag}) loses most against the floor:")
    print("| layer | op | ms | floor ms | lost ms | bound |")
    print("|---|---|---|---|---|---|")
    for r in losing:
        print(
            f"| {r['layer']} | {r['op']} | {r['layer_ms']:.2f} | {r['roofline_ms']:.2f} | "
            f"{r['layer_ms'] - r['roofline_ms']:.2f} | {r['bound']} |"
        )
    too_fast = [
        (r["runtime"], r["layer"], r["efficiency"])
        for r in rows
        if r["kind"] == "layer" and r["layer_share"] >= 0.01 and r["efficiency"] > 1.1
    ]
    assert too_fast == []


def _same_cell(row: dict, summary: dict) -> bool:
    return all(row[k] == summary[k] for k in ("runtime", "precision", "channels_last"))
