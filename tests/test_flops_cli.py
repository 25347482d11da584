"""`segbench flops` and `segbench blocks` through the CLI: clean JSON/CSV on stdout, one-line bad input."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from helpers import written
from typer.testing import CliRunner

from segbench.cli import app
from segbench.rows.schema import MACS_NOTE

runner = CliRunner()


def _json(args: list[str]) -> list[dict]:
    result = runner.invoke(app, [*args, "--format", "json", "--no-save"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_flops_json_row_per_model_with_all_counters() -> None:
    (row,) = _json(["flops", "--models", "fast_scnn", "--size", "64x128", "--num-classes", "5"])
    assert (row["model"], row["kind"], row["height"], row["width"]) == ("fast_scnn", "model", 64, 128)
    assert row["num_classes"] == 5
    assert row["params"] == row["params_trainable"] == 1_137_795 - (128 * 19 + 19) + (128 * 5 + 5)
    assert row["macs_fvcore"] == row["macs_analytic"] > 0
    assert row["flops"] == 2 * row["macs_fvcore"]
    assert row["macs_other"] > 0 and row["macs_thop"] > row["macs_analytic"]  # thop adds BN, pooling


def test_flops_batch_size_scales_macs() -> None:
    one, four = (_json(["flops", "-m", "block_dsconv", "--size", "16x16", "-b", str(b)])[0] for b in (1, 4))
    assert four["macs_analytic"] == 4 * one["macs_analytic"] and four["params"] == one["params"]
    assert (one["kind"], one["block"], one["kernel_size"], one["in_channels"]) == ("block", "dsconv", 3, 128)


def test_flops_by_module_rows() -> None:
    rows = _json(["flops", "--models", "fast_scnn", "--size", "64x128", "--by", "module"])
    assert [r["module"] for r in rows] == [
        "learning_to_downsample",
        "global_feature_extractor",
        "pyramid_pooling",
        "feature_fusion",
        "classifier",
        "(root)",
    ]
    assert all(r["macs_fvcore"] == r["macs_analytic"] for r in rows)  # conv MACs agree module by module
    assert rows[-1]["macs_analytic"] == 0 < rows[-1]["macs_other"]  # the final upsampling
    assert sum(r["params"] for r in rows) == 1_137_795
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)


def test_flops_by_operator_csv_and_saved_files(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["flops", "-m", "fcn32s", "--size", "40x40", "--by", "operator", "--format", "csv", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.stderr
    rows = {r["operator"]: r for r in csv.DictReader(io.StringIO(result.stdout))}
    assert set(rows) == {"conv2d", "conv_transpose2d", "relu", "max_pool2d"}
    up = rows["conv_transpose2d"]
    assert up["macs_analytic"] == up["macs_fvcore"] != up["macs_thop"]  # thop: output grid
    saved = sorted(p.suffix for p in written(tmp_path))
    assert saved == [".csv", ".json", ".md"]
    assert all("operator" in r and "share" in r for r in json.loads(next(tmp_path.glob("*.json")).read_text()))


def test_flops_table_states_the_convention_and_footnotes() -> None:
    result = runner.invoke(app, ["flops", "-m", "fcn16s", "--size", "32x32", "--no-save"])
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert MACS_NOTE in text
    assert "thop counts conv_transpose2d on the output grid" in text
    assert "fvcore skips" in text
    assert "Warning" not in result.stdout + result.stderr and "[INFO]" not in result.stdout


def test_blocks_json_rows_and_ratio_columns() -> None:
    rows = _json(["blocks", "--kernel-sizes", "3", "--channels", "8", "--size", "8x8", "--warmup", "0", "--iters", "2"])
    assert [r["block"] for r in rows] == ["standard", "dsconv"]
    assert rows[1]["mac_ratio"] == pytest.approx(1 / 8 + 1 / 9, rel=1e-12) and rows[1]["latency_speedup"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["flops", "--size", "0x10"], "bad size '0x10'"),
        (["flops", "--size", "abc"], "bad size 'abc'"),
        (["flops", "--num-classes", "0"], "bad number of classes 0"),
        (["flops", "--models", "fcn9s"], "unknown model 'fcn9s'"),
        (["flops", "--by", "layer"], "bad --by 'layer'"),
        (["flops", "--batch-size", "0"], "bad batch size 0"),
        (["blocks", "--kernel-sizes", "2"], "bad kernel size 2: accepted odd integers >= 1"),
        (["blocks", "--channels", "0"], "bad channel count '0'"),
        (["blocks", "--size", "8"], "bad size '8'"),
        (["blocks", "--device", "tpu"], "bad device 'tpu'"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"segbench: error: {message}")
