"""The row schema, the environment fingerprint and the JSON/CSV round trip."""

import json
import math

import pytest
import torch

from segbench import __version__
from segbench.errors import UserError
from segbench.rows.files import load_rows, save_rows, to_json
from segbench.rows.schema import ROW_FIELDS, make_row

DESIGN_FIELDS = [
    "model",
    "kind",
    "family",
    "plugin",
    "device",
    "device_name",
    "precision",
    "channels_last",
    "compiled",
    "cuda_graph",
    "batch_size",
    "height",
    "width",
    "num_classes",
    "params",
    "params_trainable",
    "macs_fvcore",
    "macs_thop",
    "macs_analytic",
    "flops",
    "latency_ms_median",
    "latency_ms_mean",
    "latency_ms_p90",
    "latency_ms_min",
    "latency_ms_std",
    "iters",
    "throughput_ips",
    "host_ms_median",
    "threads",
    "output_max_abs_diff",
    "output_argmax_agreement",
    "compile_seconds",
    "peak_mem_mb",
    "trace_file",
    "dataset",
    "train_steps",
    "train_seconds",
    "miou",
    "pixel_acc",
    "iou_per_class",
    "block",
    "kernel_size",
    "in_channels",
    "out_channels",
    "stride",
    "error",
    "segbench_version",
    "torch_version",
    "cuda_version",
    "timestamp",
    "git_sha",
    "hostname",
]


def test_schema_holds_every_design_field_once():
    assert len(set(ROW_FIELDS)) == len(ROW_FIELDS)
    assert set(DESIGN_FIELDS) <= set(ROW_FIELDS)


def test_make_row_fills_fingerprint_and_leaves_the_rest_null():
    row = make_row(model="fcn8s", params=10)
    assert list(row) == list(ROW_FIELDS)
    assert row["segbench_version"] == __version__ and row["torch_version"] == torch.__version__
    assert row["hostname"] and row["timestamp"]
    assert row["latency_ms_median"] is None and row["miou"] is None


def test_make_row_rejects_unknown_fields():
    with pytest.raises(KeyError, match="latency_s"):
        make_row(latency_s=1.0)


def test_save_and_load_round_trip(tmp_path):
    rows = [
        make_row(model="a", params=1_000, latency_ms_median=1.5, channels_last=True, iou_per_class=[0.5, None]),
        make_row(model="b", error="out of memory", miou=float("nan")),
    ]
    paths = save_rows(rows, tmp_path / "flops-x", markdown="| a |")
    assert [p.name for p in paths] == ["flops-x.json", "flops-x.csv", "flops-x.md"]
    from_json, from_csv = load_rows([paths[0]]), load_rows([paths[1]])
    for loaded in (from_json, from_csv):
        assert [r["model"] for r in loaded] == ["a", "b"]
        assert loaded[0]["params"] == 1_000 and loaded[0]["latency_ms_median"] == 1.5
        assert loaded[0]["channels_last"] is True
        assert loaded[1]["error"] == "out of memory" and math.isnan(loaded[1]["miou"])
    assert from_json[0]["iou_per_class"] == [0.5, None]
    assert from_csv[0]["iou_per_class"] is None  # per-class lists are JSON only
    assert "| a |" in paths[2].read_text()


def test_json_is_strict_and_keeps_non_finite_numbers_apart_from_null():
    text = to_json([make_row(miou=float("nan"), latency_ms_std=math.inf, params=torch.tensor(3))])
    row = json.loads(text)[0]  # a strict parser reads it
    assert row["miou"] == "nan" and row["latency_ms_std"] == "inf" and row["params"] == 3
    assert row["latency_ms_median"] is None  # null stays "not measured"


def test_load_rows_rejects_missing_and_malformed_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_rows([tmp_path / "nope.json"])
    bad = tmp_path / "bad.json"
    bad.write_text('{"model": 1}')
    with pytest.raises(UserError, match="JSON array"):
        load_rows([bad])
