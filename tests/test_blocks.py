"""The K^2 block study: exact MAC ratio 1/N + 1/K^2 on the whole grid, rows, and the latency pairing."""

from __future__ import annotations

import statistics
from fractions import Fraction

import pytest
import torch

from segbench.checks import check_kernel_sizes
from segbench.errors import UserError
from segbench.measure.analytic import analytic_count
from segbench.plugins import get_registry
from segbench.rows.schema import theory_ratio
from segbench.runners.blocks import BlocksConfig, block_options, blocks, default_specs
from segbench.runners.defaults import Timing


def study_rows(kernel_sizes, channels, **options):
    """Every row of the K^2 runner over the built-in pair."""
    return list(blocks(default_specs(), BlocksConfig(kernel_sizes, channels, **options)))


GRID_K = (1, 3, 5, 7)
GRID_C = (32, 64, 128, 256)


def _meta_count(name: str, k: int, c: int, size: tuple[int, int] = (64, 64)) -> tuple[int, int]:
    """(conv MACs, conv weights) of a block, counted on the meta device."""
    with torch.device("meta"):
        block = get_registry().model(name).build(**block_options(k, c))
    macs = analytic_count(block, torch.zeros(1, c, *size, device="meta")).macs
    weights = sum(m.weight.numel() for m in block.modules() if isinstance(m, torch.nn.Conv2d))
    return macs, weights


@pytest.mark.parametrize("k", GRID_K)
@pytest.mark.parametrize("c", GRID_C)
def test_mac_and_weight_ratio_is_exactly_one_over_n_plus_one_over_k2(k: int, c: int) -> None:
    std_macs, std_weights = _meta_count("block_standard", k, c)
    ds_macs, ds_weights = _meta_count("block_dsconv", k, c)
    assert std_macs == k * k * c * c * 64 * 64  # K*K*C*N*H*W
    assert ds_macs == (k * k * c + c * c) * 64 * 64  # K*K*C*H*W + C*N*H*W
    assert Fraction(ds_macs, std_macs) == Fraction(1, c) + Fraction(1, k * k) == theory_ratio(k, c)
    assert Fraction(ds_weights, std_weights) == theory_ratio(k, c)


def test_reference_example_weights() -> None:
    """REFERENCE.md: C = N = 128, K = 3 gives 147,456 vs 17,536 conv weights."""
    assert _meta_count("block_standard", 3, 128)[1] == 147_456
    assert _meta_count("block_dsconv", 3, 128)[1] == 17_536


@pytest.mark.parametrize("bad", [[2], [3, 4], [0], [-3]])
def test_even_or_non_positive_kernel_sizes_are_rejected(bad: list[int]) -> None:
    with pytest.raises(UserError, match="accepted odd integers >= 1"):
        check_kernel_sizes(bad)


def test_study_rows_pair_standard_and_dsconv() -> None:
    rows = study_rows([1, 3], [4], size=(8, 8), batch_size=2, timing=Timing(warmup=0, iters=2))
    assert [(r["block"], r["kernel_size"]) for r in rows] == [
        ("standard", 1),
        ("dsconv", 1),
        ("standard", 3),
        ("dsconv", 3),
    ]
    for row in rows:
        assert row["kind"] == "block" and row["error"] is None
        assert (row["in_channels"], row["out_channels"], row["stride"]) == (4, 4, 1)
        assert (row["batch_size"], row["height"], row["width"], row["device"]) == (2, 8, 8, "cpu")
        assert row["macs_fvcore"] == row["macs_analytic"] and row["flops"] == 2 * row["macs_analytic"]
        assert row["latency_ms_median"] > 0 and row["iters"] == 2
    for standard, dsconv in (rows[0:2], rows[2:4]):
        k = standard["kernel_size"]
        assert standard["mac_ratio"] is None and standard["latency_speedup"] is None
        assert dsconv["mac_ratio"] == dsconv["mac_ratio_theory"] == float(theory_ratio(k, 4))
        # the two blocks timed alternately: the speed-up is the median of the per-call ratios
        paired = [a / b for a, b in zip(standard["latency_samples_ms"], dsconv["latency_samples_ms"])]
        assert len(paired) == 2 and dsconv["latency_speedup"] == statistics.median(paired)
        assert dsconv["latency_speedup_ci_low"] <= dsconv["latency_speedup"] <= dsconv["latency_speedup_ci_high"]
        assert standard["macs_analytic"] == 2 * k * k * 4 * 4 * 8 * 8
    assert rows[1]["params"] == 4 + 2 * 4 + 16 + 2 * 4  # depthwise 1x1 + BN, pointwise + BN


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_study_rows_on_cuda() -> None:
    rows = study_rows([3], [16], size=(16, 16), device="cuda", timing=Timing(warmup=1, iters=3))
    assert all(r["error"] is None and r["latency_ms_median"] > 0 for r in rows)
    assert rows[1]["latency_speedup"] > 0
    assert all(r["cuda_graph"] for r in rows)  # replays: the K^2 saving, not the count of kernel launches


def test_a_block_row_names_the_block_the_same_way_in_every_command() -> None:
    """latency, blocks, flops and run rows of block_dsconv at K=3, C=128, 64x64 share their identity."""
    import json

    from typer.testing import CliRunner

    from segbench.cli import app
    from segbench.rows.schema import IDENTITY_FIELDS

    fast = ["--warmup", "0", "--iters", "1"]
    commands = {
        "latency": ["latency", "-m", "block_dsconv", "--size", "64x64", *fast],
        "blocks": ["blocks", "-k", "3", "-c", "128", "--size", "64x64", *fast],
        "flops": ["flops", "-m", "block_dsconv", "--size", "64x64"],
        "run": ["run", "-m", "block_dsconv", "--size", "64x64", *fast],
    }
    identities = {}
    for name, args in commands.items():
        result = CliRunner().invoke(app, [*args, "--format", "json", "--no-save"])
        assert result.exit_code == 0, result.output
        (row,) = [r for r in json.loads(result.stdout) if r["model"] == "block_dsconv"]
        identities[name] = {f: row[f] for f in (*IDENTITY_FIELDS, "family", "plugin")}
    expected = {
        "model": "block_dsconv",
        "kind": "block",
        "block": "dsconv",
        "kernel_size": 3,
        "in_channels": 128,
        "out_channels": 128,
        "stride": 1,
        "batch_size": 1,
        "height": 64,
        "width": 64,
        "num_classes": None,
        "family": "conv_block",
        "plugin": "segbench",
    }
    assert identities == dict.fromkeys(commands, expected)
