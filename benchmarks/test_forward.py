"""pytest-benchmark: forward passes of the built-in models and blocks at small sizes, on CPU."""

from __future__ import annotations

import pytest
import torch
from conftest import model_input

CASES = [
    ("fast_scnn", 1, 256, 512),
    ("fcn8s", 1, 128, 128),
    ("block_standard", 1, 64, 64),
    ("block_dsconv", 1, 64, 64),
]


@pytest.mark.parametrize(("name", "batch", "height", "width"), CASES, ids=[f"{c[0]}-{c[2]}x{c[3]}" for c in CASES])
def test_forward(benchmark, name: str, batch: int, height: int, width: int) -> None:
    model, x = model_input(name, batch, height, width)

    def forward() -> torch.Tensor:
        with torch.inference_mode():
            return model(x)

    benchmark.group = "forward"
    out = benchmark.pedantic(forward, rounds=10, warmup_rounds=2)
    assert out.shape[0] == batch and out.shape[-2:] == (height, width)
