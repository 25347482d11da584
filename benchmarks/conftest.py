"""Shared pieces of the benchmark suites (not part of the default test run: testpaths is ``tests``).

Run: ``python -m pytest benchmarks -s`` (the pytest-benchmark suites and the torch.utils.benchmark
cross-check); ``python -m pytest benchmarks --benchmark-only`` runs the pytest-benchmark suites alone.
Every suite runs with ``BENCH_THREADS`` torch threads (default 1: least noise on a shared machine).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

from segbench.plugins import get_registry

BENCH_THREADS = int(os.environ.get("BENCH_THREADS", "1"))


@pytest.fixture(autouse=True)
def bench_threads() -> Iterator[int]:
    """Every benchmark with the same, stated thread count; the previous count restored after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(BENCH_THREADS)
    yield BENCH_THREADS
    torch.set_num_threads(previous)


def model_input(name: str, batch: int, height: int, width: int) -> tuple[torch.nn.Module, torch.Tensor]:
    """A registered model in eval mode (seeded) and a seeded input of its channel count."""
    spec = get_registry().model(name)
    torch.manual_seed(0)
    model = spec.build().eval()
    x = torch.randn(batch, spec.input_channels(), height, width, generator=torch.Generator().manual_seed(0))
    return model, x
