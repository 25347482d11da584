"""MAC counters: hand-checked layers, the Fast-SCNN reference figures, fvcore == analytic on the built-ins."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segbench.measure.analytic import adaptive_pool_macs, analytic_count
from segbench.measure.macs import (
    FV_SKIPS,
    THOP_MISSES,
    THOP_TRANSPOSED,
    MacCount,
    count_model,
    count_spec,
    fvcore_count,
    thop_count,
)
from segbench.plugins import get_registry
from segbench.rows.schema import mac_footnotes

# REFERENCE.md, Fast-SCNN at 1x3x1024x2048, convolution MACs in G (two decimals).
FAST_SCNN_TOTAL = 6.71e9
FAST_SCNN_MODULES = {
    "learning_to_downsample": 0.81,
    "global_feature_extractor": 3.76,
    "pyramid_pooling": 0.07,
    "feature_fusion": 0.84,
    "classifier": 1.23,
}


def test_strided_dilated_grouped_conv_by_hand() -> None:
    conv = nn.Conv2d(8, 12, (3, 5), stride=(2, 3), padding=(1, 2), dilation=(2, 1), groups=4)
    x = torch.randn(2, 8, 17, 23)
    # H_out = (17 + 2 - 2*2 - 1) // 2 + 1 = 8; W_out = (23 + 4 - 4 - 1) // 3 + 1 = 8
    # MACs = N * H_out * W_out * C_out * (C_in / groups) * K_h * K_w = 2 * 8 * 8 * 12 * 2 * 3 * 5
    assert conv(x).shape == (2, 12, 8, 8)
    assert analytic_count(conv, x).macs == 46_080
    assert analytic_count(conv.to("meta"), x.to("meta")).macs == 46_080


def test_transposed_conv_by_hand_and_per_counter() -> None:
    up = nn.ConvTranspose2d(6, 4, 4, stride=2, padding=1, groups=2, bias=False)
    x = torch.randn(1, 6, 5, 7)
    assert up(x).shape == (1, 4, 10, 14)
    # analytic and fvcore: N * H_in * W_in * C_in * (C_out / groups) * K * K = 1 * 5 * 7 * 6 * 2 * 16
    assert analytic_count(up, x).macs == 6_720
    assert fvcore_count(up, x).macs == 6_720
    # thop: on the output grid, N * H_out * W_out * C_out * (C_in / groups) * K * K = 10 * 14 * 4 * 3 * 16
    assert thop_count(up, x).total == 26_880


def test_linear_and_functional_matmul() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(10, 7)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.fc(x)  # (3, 5, 7): 105 outputs x 10 inputs
            return y @ torch.ones(7, 2)  # (3, 5, 2): 30 outputs x 7 inputs

    count = analytic_count(Net(), torch.randn(3, 5, 10))
    assert count.by_operator() == {"linear": 1_050, "matmul": 210}
    assert count.macs == 1_260 and count.macs_other == 0


def test_other_ops_are_reported_not_hidden() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn = nn.BatchNorm2d(4)
            self.relu = nn.ReLU()
            self.pool = nn.MaxPool2d(2)
            self.adaptive = nn.AdaptiveAvgPool2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.relu(self.bn(x))  # 4 * 6 * 6 = 144 each
            up = F.interpolate(self.pool(y), size=(12, 12), mode="bilinear")  # pool 36 x 4 taps; 576 x 4
            return up.mean() + self.adaptive(y + y).sum()  # add 144; adaptive 4 ch * 8 * 8 (bins of 2)

    count = analytic_count(Net(), torch.randn(1, 4, 6, 6))
    ops = count.by_operator()
    assert ops["batch_norm"] == 144 and ops["relu"] == 144 and ops["max_pool2d"] == 144
    assert ops["interpolate"] == 2_304 and ops["adaptive_avg_pool2d"] == 256
    assert ops["add"] == 144 + 1  # y + y, then the scalar sum of the two reductions
    assert count.macs == 0 and count.macs_other == sum(ops.values())


def test_layers_with_tuple_outputs_and_keyword_inputs() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pool = nn.MaxPool2d(2, return_indices=True)
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            pooled, _ = self.pool(x)  # (1, 3, 4, 4): 48 outputs x 4 taps
            return self.conv(input=pooled)  # (1, 4, 2, 2): 16 outputs x 3 * 3 * 3

    assert analytic_count(Net(), torch.zeros(1, 3, 8, 8)).by_operator() == {"max_pool2d": 192, "conv2d": 432}


def test_adaptive_pool_bins_match_pytorch() -> None:
    x = torch.ones(1, 1, 32, 64)
    for bins in (1, 2, 3, 6, 5):
        # sum-pooling ones counts exactly how many inputs each bin reads
        reads = F.adaptive_avg_pool2d(x, bins) * _bin_areas(32, 64, bins)
        assert adaptive_pool_macs(x.shape, (1, 1, bins, bins)) == int(reads.sum().round())


def _bin_areas(h: int, w: int, bins: int) -> torch.Tensor:
    def sizes(n: int) -> torch.Tensor:
        return torch.tensor([-(-(i + 1) * n // bins) - (i * n) // bins for i in range(bins)], dtype=torch.float)

    return torch.outer(sizes(h), sizes(w))


def test_fast_scnn_reference_counts() -> None:
    from segbench.models.fast_scnn import FastSCNN

    with torch.device("meta"):
        model = FastSCNN()
    count = analytic_count(model, torch.zeros(1, 3, 1024, 2048, device="meta"))
    assert abs(count.macs - FAST_SCNN_TOTAL) / FAST_SCNN_TOTAL < 0.005
    by_module = count.by_top_module(primary=True)
    assert {name: round(by_module[name] / 1e9, 2) for name in FAST_SCNN_MODULES} == FAST_SCNN_MODULES
    assert sum(by_module.values()) == count.macs  # every conv MAC is inside one of the five modules


@pytest.fixture(scope="module")
def fast_scnn_count() -> MacCount:
    """Fast-SCNN counted once at an odd size (ceil-divided feature maps, overlapping pooling bins)."""
    return count_spec(get_registry().model("fast_scnn"), (97, 131))


def test_fvcore_equals_analytic_fast_scnn(fast_scnn_count: MacCount) -> None:
    fields = fast_scnn_count.fields
    assert fields["macs_fvcore"] == fields["macs_analytic"] > 0
    assert fields["flops"] == 2 * fields["macs_analytic"]
    assert fields["params"] == 1_137_795


def test_fvcore_equals_analytic_fcns(fcn_models: dict[str, nn.Module]) -> None:
    for name, model in fcn_models.items():
        count = count_model(model, torch.zeros(1, 3, 64, 80))
        assert count.fvcore.macs == count.analytic.macs > 0, name
        per_op = {r["operator"]: r for r in count.operator_rows()}
        for op in ("conv2d", "conv_transpose2d"):
            assert per_op[op]["macs_fvcore"] == per_op[op]["macs_analytic"], (name, op)
        assert THOP_TRANSPOSED in count.notes()  # thop counts the upsamplers on the output grid
        assert count.thop.total > count.analytic.macs


def test_fvcore_equals_analytic_every_registered_spec() -> None:
    registry = get_registry()
    for spec in registry.models.values():
        if spec.family == "fcn":
            continue  # built and checked once, in test_fvcore_equals_analytic_fcns
        count = count_spec(spec, (32, 48), **({"in_channels": 8, "out_channels": 8} if spec.kind == "block" else {}))
        assert count.fvcore.macs == count.analytic.macs > 0, spec.name


def test_counting_leaves_the_model_unchanged_and_stdout_clean(capsys: pytest.CaptureFixture[str]) -> None:
    from segbench.models.fast_scnn import FastSCNN

    model = FastSCNN().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_model(model, torch.randn(1, 3, 32, 64))
    assert model.training
    assert model.state_dict().keys() == before.keys()  # no thop total_ops / total_params buffers
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # BN stats untouched
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert capsys.readouterr().out == ""


def test_breakdowns_sum_to_the_totals(fast_scnn_count: MacCount) -> None:
    count = fast_scnn_count
    modules = count.module_rows()
    assert [r["module"] for r in modules] == [*FAST_SCNN_MODULES, "(root)"]
    operators = count.operator_rows()
    for rows in (modules, operators):
        assert sum(r["macs_analytic"] or 0 for r in rows) == count.analytic.macs
        assert sum(r["macs_other"] or 0 for r in rows) == count.analytic.macs_other
        assert sum(r["params"] for r in rows) == count.params
        assert sum(r["share"] for r in rows) == pytest.approx(1.0)
    assert sum(r["macs_fvcore"] for r in modules) == count.fvcore.macs
    assert sum(r["macs_thop"] for r in modules) == count.thop.total
    assert sum(r["macs_fvcore"] for r in operators) == count.fvcore.total
    assert sum(r["macs_thop"] for r in operators) == count.thop.total
    assert modules[-1]["module"] == "(root)"  # the final F.interpolate runs in the model's own forward


def test_footnotes_one_line_per_cause(fast_scnn_count: MacCount) -> None:
    counts = [fast_scnn_count, count_spec(get_registry().model("block_dsconv"), (16, 16))]
    lines = mac_footnotes([{"mac_notes": count.notes()} for count in counts])
    assert len(lines) == len(set(lines))
    skips = next(line for line in lines if line.startswith(FV_SKIPS.split("{")[0]))
    assert "add" in skips and "relu" in skips  # fvcore has no formula for aten::add, ignores relu
    misses = next(line for line in lines if line.startswith(THOP_MISSES.split("{")[0]))
    assert "interpolate" in misses
