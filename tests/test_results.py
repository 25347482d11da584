"""The row schema, the environment fingerprint and the JSON/CSV round trip."""

import csv
import json
import math

import pytest
import torch

from segbench import __version__
from segbench.errors import UserError
from segbench.rows.files import load_rows, save_rows, to_json
from segbench.rows.schema import ROW_FIELDS, SCHEMA_VERSION, make_row

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


def _row_of_today_without_version() -> dict:
    """A row as segbench wrote it before schema_version: every field of then, none of the two new ones."""
    row = make_row(model="fcn8s", params=7, latency_ms_median=2.0)
    del row["schema_version"], row["timing_protocol"]
    return row


def test_rows_carry_the_schema_version_in_json_csv_and_journal(tmp_path):
    from segbench.rows.files import to_json_line

    row = make_row(model="a", timing_protocol="single fixed warmup=1 iters=3")
    assert row["schema_version"] == SCHEMA_VERSION == 2
    paths = save_rows([row], tmp_path / "x")
    assert json.loads(paths[0].read_text())[0]["schema_version"] == 2
    assert paths[1].read_text().splitlines()[0].split(",").count("schema_version") == 1
    assert json.loads(to_json_line(row))["schema_version"] == 2
    for path in paths[:2]:
        (loaded,) = load_rows([path])
        assert loaded["schema_version"] == 2 and loaded["timing_protocol"] == "single fixed warmup=1 iters=3"


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_files_without_a_schema_version_load_as_version_1_and_are_migrated(tmp_path, suffix):
    old = _row_of_today_without_version()
    path = tmp_path / f"old{suffix}"
    if suffix == ".json":
        path.write_text(to_json([old]))
    else:
        with path.open("w", newline="") as stream:
            writer = csv.DictWriter(stream, [k for k in old if k not in ("iou_per_class", "mac_notes")])
            writer.writeheader()
            writer.writerow({k: v for k, v in old.items() if k not in ("iou_per_class", "mac_notes")})
    assert "schema_version" not in path.read_text()
    (row,) = load_rows([path])
    assert list(row) == list(ROW_FIELDS)
    assert row["schema_version"] == SCHEMA_VERSION and row["timing_protocol"] is None  # not recorded then
    assert row["params"] == 7 and row["latency_ms_median"] == 2.0


def test_a_newer_schema_is_refused_in_one_line(tmp_path):
    path = tmp_path / "future.json"
    path.write_text(to_json([make_row(model="a", schema_version=SCHEMA_VERSION + 1)]))
    with pytest.raises(UserError, match=f"schema version {SCHEMA_VERSION + 1}.*upgrade segbench") as caught:
        load_rows([path])
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("version", [None, SCHEMA_VERSION])
def test_a_renamed_field_is_refused_not_read_as_not_measured(tmp_path, version):
    row = make_row(model="a", latency_ms_median=3.0, schema_version=version)
    row["latency_median_ms"] = row.pop("latency_ms_median")
    path = tmp_path / "renamed.json"
    path.write_text(to_json([row]))
    with pytest.raises(UserError, match="unknown field\\(s\\) latency_median_ms"):
        load_rows([path])


def test_a_row_of_this_schema_missing_a_field_is_refused(tmp_path):
    row = make_row(model="a")
    del row["latency_ms_median"]
    path = tmp_path / "short.json"
    path.write_text(to_json([row]))
    with pytest.raises(UserError, match="missing field\\(s\\) latency_ms_median"):
        load_rows([path])


@pytest.mark.parametrize("version", ["2", 0, True])
def test_a_schema_version_that_is_no_version_number_is_refused(tmp_path, version):
    path = tmp_path / "odd.json"
    path.write_text(to_json([make_row(model="a", schema_version=version)]))
    with pytest.raises(UserError, match="is not a version number"):
        load_rows([path])


def test_protocol_label_names_the_method_and_every_setting():
    from types import SimpleNamespace

    from segbench.runners.defaults import protocol_label

    adaptive = SimpleNamespace(
        warmup=3, warmup_s=0.0, iters=None, min_samples=6, min_seconds=1.0, budget_s=10.0, target=0.02
    )
    assert protocol_label(adaptive, paired=False) == (
        "single adaptive warmup=3 min_samples=6 min_seconds=1 budget_s=10 target=0.02"
    )
    fixed = SimpleNamespace(warmup=0, warmup_s=0.0, iters=5)
    assert protocol_label(fixed, paired=True) == "paired fixed warmup=0 iters=5"
    timed_warmup = SimpleNamespace(warmup=10, warmup_s=1.0, iters=5)  # CUDA's default warm-up lasts a second too
    assert protocol_label(timed_warmup, paired=True) == "paired fixed warmup=10 warmup_s=1 iters=5"


def test_latency_and_blocks_rows_record_how_they_were_timed():
    """fp32 eager is timed alone; a variant alternately with it; the two blocks of a pair alternately."""
    from typer.testing import CliRunner

    from segbench.cli import app

    fast = ["--warmup", "0", "--iters", "2", "--no-save", "--format", "json"]
    latency = CliRunner().invoke(app, ["latency", "-m", "block_dsconv", "--channels-last", *fast])
    assert latency.exit_code == 0, latency.output
    assert [(r["channels_last"], r["timing_protocol"]) for r in json.loads(latency.stdout)] == [
        (False, "single fixed warmup=0 iters=2"),
        (True, "paired fixed warmup=0 iters=2"),
    ]
    blocks = CliRunner().invoke(app, ["blocks", "-k", "3", "-c", "16", *fast])
    assert blocks.exit_code == 0, blocks.output
    assert {(r["block"], r["timing_protocol"]) for r in json.loads(blocks.stdout)} == {
        ("standard", "paired fixed warmup=0 iters=2"),
        ("dsconv", "paired fixed warmup=0 iters=2"),
    }
