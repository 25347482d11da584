"""Fast-SCNN at 1024x2048, batch 1, 2 threads, on the CPU, through every available runtime and variant,
each timed alternately with PyTorch fp32 eager in the same run (``latency_speedup``, with its 95 %
interval) and compared with it on the same input (argmax agreement).

The network is first trained briefly on the synthetic set (so its logits mean something and int8 is
calibrated on the images it is timed on), then the latency runner times it at 1024x2048 with those
weights. Target on a 2-core CPU: the best variant with argmax agreement >= 0.99 at no more than
0.2x PyTorch eager fp32 latency (a speed-up of at least 5x). Run: ``python -m pytest benchmarks/test_runtimes.py -s``
(about 10 minutes on 2 cores; set ``RUNTIME_BENCH_COMPILE=1`` to add torch.compile, minutes more).
"""

from __future__ import annotations

import os

from segbench.plugins import get_registry
from segbench.runners.defaults import Timing
from segbench.runners.latency import LatencyConfig, latency
from segbench.runners.train import TrainConfig, train
from segbench.runtimes.base import Variant

SIZE = (1024, 2048)
THREADS = 2
TRAIN_STEPS = 60
TORCH_VARIANTS = [
    Variant(),
    Variant(channels_last=True),
    Variant(fold_bn=True),
    Variant(channels_last=True, fold_bn=True),
]
COMPILED = [Variant(channels_last=True, compile=True, fold_bn=True)]
EXPORTED_VARIANTS = [Variant(), Variant("int8")]


def test_fast_scnn_through_every_runtime(tmp_path) -> None:
    spec = get_registry().model("fast_scnn")
    weights = tmp_path / "fast_scnn.pt"
    (trained,) = train([spec], TrainConfig(steps=TRAIN_STEPS, save=str(weights)))
    runtimes = [r.name for r in get_registry().runtimes.values() if r.unavailable("cpu") is None]
    variants = TORCH_VARIANTS + (COMPILED if os.environ.get("RUNTIME_BENCH_COMPILE") == "1" else [])
    variants += [v for v in EXPORTED_VARIANTS if v not in variants]
    config = LatencyConfig(
        sizes=[SIZE],
        runtimes=runtimes,
        variants=variants,
        num_classes=trained["num_classes"],
        timing=Timing(threads=THREADS),
        weights=str(weights),
    )
    rows = list(latency([spec], config))
    print(
        f"\nFast-SCNN {SIZE[0]}x{SIZE[1]}, batch 1, {THREADS} threads, trained {TRAIN_STEPS} steps "
        f"(synthetic val mIoU {trained['miou']:.3f}); each row timed alternately with PyTorch fp32 eager"
    )
    print("| runtime | variant | median ms | x eager latency (95% interval) | argmax agreement | prepare s | error |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = (
            "1 (reference)"
            if r["latency_speedup"] is None
            else (
                f"{1 / r['latency_speedup']:.3f} ({1 / r['latency_speedup_ci_high']:.3f}-{1 / r['latency_speedup_ci_low']:.3f})"
            )
        )
        agreement = "-" if r["output_argmax_agreement"] is None else f"{r['output_argmax_agreement']:.4f}"
        prepare = "-" if r["compile_seconds"] is None else f"{r['compile_seconds']:.1f}"
        median = "-" if r["latency_ms_median"] is None else f"{r['latency_ms_median']:.1f}"
        print(
            f"| {r['runtime']} | {Variant.of_row(r).tag} | {median} | {ratio} | {agreement} | {prepare} | {r['error'] or ''} |"
        )
    faithful = [r for r in rows if r["latency_speedup"] and (r["output_argmax_agreement"] or 0) >= 0.99]
    best = max(faithful, key=lambda r: r["latency_speedup"])
    print(
        f"best with agreement >= 0.99: {best['runtime']} {Variant.of_row(best).tag} at "
        f"{1 / best['latency_speedup']:.3f}x PyTorch eager fp32 (target <= 0.2x)"
    )
    assert all(r["error"] is None for r in rows)
    assert all(r["output_argmax_agreement"] >= 0.99 for r in rows if r["precision"] == "fp32" and r["latency_speedup"])
