"""What the application sees, through the commands: end-to-end fields, protocols and mIoU on every row."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
from typer.testing import CliRunner

from segbench.cli import app

runner = CliRunner()
ORT = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("onnxruntime", "onnx", "onnxscript")),
    reason="needs segbench[onnx]",
)
E2E_FIELDS = (
    "e2e_ms_median",
    "e2e_ms_ci_low",
    "e2e_ms_ci_high",
    "e2e_ms_p90",
    "preprocess_ms_median",
    "model_ms_median",
    "postprocess_ms_median",
    "source_height",
    "source_width",
    "protocol",
    "miou",
    "miou_delta",
)
FAST = ["--iters", "3", "--warmup", "1", "--threads", "1", "--format", "json", "--no-save"]


def _rows(args: list[str]) -> list[dict]:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@ORT
def test_end_to_end_latency_with_a_dataset_fills_every_field_of_every_row() -> None:
    """The issue's command, at a smaller size: torch and ONNX Runtime rows, each with every field; the
    fp32 ONNX Runtime row's mIoU is PyTorch's (delta 0 within 0.1 point)."""
    rows = _rows(
        [
            "latency",
            "--models",
            "fast_scnn",
            "--end-to-end",
            "--source-size",
            "128x256",
            "--size",
            "64x128",
            "--runtime",
            "torch,onnxruntime",
            "--dataset",
            "synthetic",
            *FAST,
        ]
    )
    assert [r["runtime"] for r in rows] == ["torch", "onnxruntime"]
    for row in rows:
        assert row["error"] is None
        assert all(row[f] is not None for f in E2E_FIELDS), {f: row[f] for f in E2E_FIELDS}
        assert (row["source_height"], row["source_width"], row["height"], row["width"]) == (128, 256, 64, 128)
        assert row["protocol"] == "whole" and row["window"] is None and row["num_classes"] == 6
        assert row["e2e_ms_ci_low"] <= row["e2e_ms_median"] <= row["e2e_ms_ci_high"]
        assert 0 <= row["miou"] <= 1 and math.isfinite(row["miou_delta"])
    torch_row, ort_row = rows
    assert torch_row["miou_delta"] == 0.0
    assert abs(ort_row["miou_delta"]) <= 0.1
    assert ort_row["miou_delta"] == pytest.approx((ort_row["miou"] - torch_row["miou"]) * 100)


def test_multiscale_at_scale_one_trains_to_the_same_miou_as_whole() -> None:
    """Through the train command: the protocol's fields on the row, and scale 1 without flip is whole."""
    common = ["train", "--models", "fast_scnn", "--steps", "0", "--size", "64x64", "--format", "json", "--no-save"]
    whole = _rows(common)[0]
    multi = _rows([*common, "--protocol", "multiscale", "--scales", "1"])[0]
    assert (whole["protocol"], whole["scales"], whole["flip"]) == ("whole", None, None)
    assert (multi["protocol"], multi["scales"], multi["flip"]) == ("multiscale", "1", False)
    assert multi["miou"] == whole["miou"] and multi["pixel_acc"] == whole["pixel_acc"]


def test_slide_rows_of_latency_name_their_windows() -> None:
    rows = _rows(
        [
            "latency",
            "--models",
            "fast_scnn",
            "--size",
            "64x64",
            "--end-to-end",
            "--protocol",
            "slide",
            "--window",
            "32x32",
            "--stride",
            "16x32",
            *FAST,
        ]
    )
    (row,) = rows
    assert (row["protocol"], row["window"], row["stride"], row["scales"]) == ("slide", "32x32", "16x32", None)
    assert row["miou"] is None and row["e2e_ms_median"] is not None  # no --dataset: no mIoU
    assert (row["source_height"], row["source_width"]) == (64, 64)  # --source-size defaults to --size


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["latency", "--window", "32x32"], "--window goes with --protocol slide, not --protocol whole"),
        (
            ["latency", "--end-to-end", "--protocol", "slide", "--window", "32x32", "--stride", "0x8"],
            "bad --stride 0x8",
        ),
        (["latency", "--end-to-end", "--protocol", "multiscale", "--scales", "0.5,0"], "bad --scales 0.5,0"),
        (["latency", "--end-to-end", "--protocol", "multiscale", "--scales", "half"], "bad --scales 'half'"),
        (["latency", "--end-to-end", "--flip"], "--flip goes with --protocol multiscale"),
        (["latency", "--protocol", "tiles"], "bad --protocol 'tiles'"),
        (["latency", "--source-size", "64x64"], "--source-size goes with --end-to-end"),
        (["latency", "--protocol", "multiscale"], "--protocol multiscale applies to mIoU (--dataset) and --end-to-end"),
        (
            [
                "latency",
                "--end-to-end",
                "--source-size",
                "16x64",
                "--protocol",
                "slide",
                "--window",
                "32x32",
                "--stride",
                "16x16",
            ],
            "--window 32x32 is larger than the --source-size 16x64",
        ),
        (
            ["latency", "--end-to-end", "--protocol", "slide", "--window", "128x128", "--stride", "64x64"],
            "--window 128x128 is larger than the --size 64x64",
        ),
        (
            ["train", "--steps", "0", "--protocol", "slide", "--window", "128x128", "--stride", "64x64"],
            "--window 128x128 is larger than the --size 64x64",
        ),
    ],
)
def test_bad_protocol_and_end_to_end_options_exit_2_in_one_line(args: list[str], message: str) -> None:
    result = runner.invoke(app, [*args, "--models", "fast_scnn", "--size", "64x64", "--no-save"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"segbench: error: {message}") and result.stderr.count("\n") == 1
