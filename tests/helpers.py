"""Helpers several test modules share (``from helpers import ...``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn
from typer.testing import CliRunner, Result

from segbench.cli import app
from segbench.measure.session import Variant
from segbench.registry import ModelSpec
from segbench.rows.store import STORE_NAME
from segbench.runners.defaults import Timing
from segbench.runners.latency import LatencyConfig, latency

TIMING_FIELDS = ("warmup", "iters", "budget_s", "target", "threads")


def latency_row(
    model: nn.Module,
    *,
    size: tuple[int, int] = (16, 16),
    batch: int = 2,
    channels: int = 3,
    variant: Variant | None = None,
    **options: Any,
) -> dict[str, Any]:
    """The row the latency runner gives ``variant`` of ``model`` on a ``batch x channels x size`` input
    (3 channels: the synthetic val image, resized; others: seeded random numbers).

    Times fp32 eager first, as every sweep does (the reference the variant is compared with and
    paired against). ``options``: `Timing` fields (warmup, iters, threads, ...) and further
    `LatencyConfig` fields (device, trace_dir, ...).
    """
    spec = ModelSpec(
        name="net",
        family="test",
        builder=lambda **_: model,
        default_size=size,
        default_num_classes=None,
        description="a model under test",
        kind="block",
        default_options={"in_channels": channels},
        plugin="tests",
    )
    variants = list(dict.fromkeys([Variant(), variant or Variant()]))
    timing = Timing(**{key: options.pop(key) for key in TIMING_FIELDS if key in options})
    config = LatencyConfig(batch_sizes=[batch], variants=variants, timing=timing, **options)
    return list(latency([spec], config))[-1]


def written(folder: Path) -> list[Path]:
    """What a command wrote into ``folder`` apart from the history store (``segbench.db`` and SQLite's
    ``-wal``/``-shm`` beside it), which every saving command also keeps up to date."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith(STORE_NAME))


def tiny_latency(*options: str) -> Result:
    """`segbench latency` of block_dsconv at 8x8, one call, no warm-up, rows as JSON on stdout, nothing
    saved: the quickest CLI run, for tests of what ``options`` add."""
    command = ["latency", "-m", "block_dsconv", "--size", "8x8", "--warmup", "0", "--iters", "1"]
    return CliRunner().invoke(app, [*command, "--format", "json", "--no-save", *options])
