"""`segbench run`: one merged row per model, files written, failing models isolated, Ctrl-C keeps rows."""

import json

import pytest
import torch
from typer.testing import CliRunner

from segbench.cli import app
from segbench.rows.files import load_rows
from segbench.runners.run import RunConfig, plan

runner = CliRunner()

PLUGIN = """
import torch
from torch import nn
from segbench import hookimpl
from segbench.registry import ModelSpec


class Tiny(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Conv2d(8, num_classes, 1)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))))


def broken(num_classes):
    raise RuntimeError("kaboom: this variant is not supported")


@hookimpl
def register_models(register):
    for name, builder in (("tiny_net", Tiny), ("broken_net", broken)):
        register(ModelSpec(name=name, family="tiny", builder=builder, default_size=(32, 32),
                           default_num_classes=6, description="test model", reference="tests"))
"""
TINY = ["--size", "32x32", "--steps", "2", "--train-batch-size", "2", "--warmup", "0", "--iters", "3"]
#: Every field `segbench run` measures for a model; each must be filled in a successful row.
MEASURED = (
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
    "peak_mem_mb",
    "dataset",
    "train_steps",
    "train_seconds",
    "miou",
    "pixel_acc",
    "iou_per_class",
    "device_name",
    "height",
    "width",
    "batch_size",
    "num_classes",
    "precision",
)
# Tiny at 32x32 with 6 classes: conv 3->8 3x3 (216 + 8 bias), BN (8 + 8), head 8->6 1x1 (48 + 6)
TINY_PARAMS = 216 + 8 + 16 + 48 + 6
TINY_MACS = (9 * 3 * 8 + 8 * 6) * 32 * 32


@pytest.fixture
def test_models(fake_plugins):
    fake_plugins("segbench-test-models", PLUGIN)


def test_defaults_come_from_the_dataset_and_the_device_type():
    from segbench.plugins import get_registry

    cpu = plan(get_registry().select("fast_scnn"), RunConfig())
    assert (cpu.train.size, cpu.train.config.budget) == ((128, 128), (120, 2))
    assert (cpu.latency.protocol.warmup, cpu.latency.protocol.iters) == (3, None)  # adaptive timing
    assert cpu.count.size == cpu.latency.sizes[0] == (128, 128)  # every stage at the dataset's size
    assert cpu.latency.num_classes == cpu.count.num_classes == 6  # built for the dataset's classes
    lines = cpu.describe()
    assert lines[0].startswith("Input 128x128 for counting, training and latency")
    assert "120 steps x batch 2" in lines[1] and "per model: torch fp32" in lines[2]


def test_run_end_to_end_with_a_failing_model(test_models, tmp_path):
    out = tmp_path / "results"
    args = ["run", "--models", "broken_net,tiny_net", *TINY, "--format", "json", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    broken, tiny = json.loads(result.stdout)
    assert broken["model"] == "broken_net"
    assert broken["error"] == "cannot build broken_net: RuntimeError: kaboom: this variant is not supported"
    assert broken["params"] is None and broken["miou"] is None
    assert tiny["error"] is None
    assert [f for f in MEASURED if tiny[f] is None] == []
    assert (tiny["params"], tiny["macs_analytic"], tiny["macs_fvcore"]) == (TINY_PARAMS, TINY_MACS, TINY_MACS)
    assert tiny["flops"] == 2 * TINY_MACS
    assert (tiny["height"], tiny["width"], tiny["num_classes"], tiny["batch_size"]) == (32, 32, 6, 1)
    assert (tiny["iters"], tiny["train_steps"], tiny["dataset"]) == (3, 2, "synthetic")
    assert 0.0 <= tiny["miou"] <= 1.0 and len(tiny["iou_per_class"]) == 6
    assert tiny["latency_ms_min"] <= tiny["latency_ms_median"] <= tiny["latency_ms_p90"]
    assert "segbench: broken_net: cannot build broken_net: RuntimeError: kaboom" in result.stderr
    assert "segbench: tiny_net: done in" in result.stderr
    assert "Training: 2 steps x batch 2 (fp32, seed 0)" in result.stderr
    (json_file,) = out.glob("run-*.json")
    stem = json_file.with_suffix("")
    assert load_rows([json_file])[1]["macs_analytic"] == TINY_MACS
    csv_rows = load_rows([stem.with_suffix(".csv")])
    assert [r["model"] for r in csv_rows] == ["broken_net", "tiny_net"] and csv_rows[1]["params"] == TINY_PARAMS
    md = stem.with_suffix(".md").read_text()
    assert "### segbench run - Models" in md and "| tiny_net |" in md
    assert "- Training: 2 steps x batch 2" in md and "MACs are multiply-accumulates" in md


def test_unsupported_variant_is_a_row_error(test_models):
    """CUDA graphs on the CPU: the row says why, the other measurements of the model are still there."""
    result = runner.invoke(app, ["run", "-m", "tiny_net", *TINY, "--cuda-graph", "--format", "json", "--no-save"])
    assert result.exit_code == 1
    eager, graph = json.loads(result.stdout)
    assert eager["error"] is None and eager["cuda_graph"] is False
    assert graph["error"] == "latency: cuda graphs need --device cuda" and graph["cuda_graph"] is True
    for row in (eager, graph):
        assert (row["params"], row["macs_analytic"], row["train_steps"]) == (TINY_PARAMS, TINY_MACS, 2)


def test_same_seed_same_row(test_models, tmp_path):
    rows = []
    for _ in range(2):
        result = runner.invoke(app, ["run", "-m", "tiny_net", *TINY, "--format", "json", "--no-save"])
        assert result.exit_code == 0, result.output
        rows.append(json.loads(result.stdout)[0])
    assert rows[0]["miou"] == rows[1]["miou"] and rows[0]["iou_per_class"] == rows[1]["iou_per_class"]
    assert rows[0]["train_conv_backend"] == rows[1]["train_conv_backend"] == "onednn"  # tiny layers: not probed


def test_train_time_budget_and_its_steps_give_the_same_row(test_models):
    at = TINY.index("--steps")
    timed_args = TINY[:at] + TINY[at + 2 :]
    result = runner.invoke(
        app, ["run", "-m", "tiny_net", *timed_args, "--train-time", "2", "--format", "json", "--no-save"]
    )
    assert result.exit_code == 0, result.output
    (timed,) = json.loads(result.stdout)
    assert timed["train_budget_seconds"] == 2 and timed["train_steps"] >= 1 and timed["init"] == "scratch"
    steps = ["--steps", str(timed["train_steps"])]
    again = runner.invoke(app, ["run", "-m", "tiny_net", *timed_args, *steps, "--format", "json", "--no-save"])
    assert json.loads(again.stdout)[0]["miou"] == timed["miou"]


def test_ctrl_c_keeps_the_finished_rows(test_models, tmp_path, monkeypatch):
    import segbench.runners.run

    real = segbench.runners.run.merge

    def interrupt_second(timed, *rows):
        if timed["model"] == "broken_net":
            raise KeyboardInterrupt
        return real(timed, *rows)

    monkeypatch.setattr(segbench.runners.run, "merge", interrupt_second)
    out = tmp_path / "results"
    result = runner.invoke(app, ["run", "-m", "tiny_net,broken_net", *TINY, "--format", "csv", "--out", str(out)])
    assert result.exit_code == 130
    assert "interrupted: keeping the 1 finished row(s)" in result.stderr
    (saved,) = out.glob("run-*.json")
    assert [r["model"] for r in load_rows([saved])] == ["tiny_net"]


@pytest.mark.slow
def test_run_builtin_model_and_block_at_tiny_size(tmp_path):
    result = runner.invoke(
        app, ["run", "-m", "fast_scnn,block_dsconv", *TINY, "--steps", "1", "--format", "md", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    model, block = load_rows(tmp_path.glob("run-*.json"))
    assert [f for f in MEASURED if model[f] is None] == []
    assert model["params"] == 1_136_118  # Fast-SCNN built for synthetic's 6 classes
    assert (block["kind"], block["block"], block["kernel_size"], block["in_channels"]) == ("block", "dsconv", 3, 128)
    assert block["macs_analytic"] == (9 * 128 + 128 * 128) * 32 * 32 and block["miou"] is None
    assert "### segbench run - Blocks" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "abc"], "bad size 'abc'"),
        (["--precision", "fp8"], "bad precision fp8: accepted fp32, fp16, bf16"),
        (["--models", "no_such_model"], "no_such_model"),
        (["--steps", "-1"], "bad steps -1"),
        (["--dataset", "nope"], "nope"),
        (["--blocks", "-k", "2"], "bad kernel size 2"),
        (["--train-time", "-5"], "bad --train-time -5"),
        (["--conv-backend", "native:backbone.head.fc6"], "'backbone.head.fc6' is not a conv layer of FastSCNN"),
        (["--init", "vgg16:/nonexistent/none.pt"], "none.pt: weights file not found"),
    ],
)
def test_bad_input_is_exit_2_before_any_work(args, message, tmp_path):
    result = runner.invoke(app, ["run", *args, "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("segbench: error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_run_with_blocks_feeds_report_plots(test_models, tmp_path):
    out = tmp_path / "results"
    args = ["run", "-m", "tiny_net", *TINY, "--blocks", "-k", "3", "-c", "8", "--block-size", "16x16"]
    result = runner.invoke(app, [*args, "--format", "md", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "### segbench run - Blocks" in result.stdout
    (saved,) = out.glob("run-*.json")
    _tiny, standard, dsconv = load_rows([saved])
    assert (standard["block"], dsconv["block"]) == ("standard", "dsconv")
    assert (dsconv["kernel_size"], dsconv["in_channels"], dsconv["out_channels"]) == (3, 8, 8)
    assert standard["macs_analytic"] == 9 * 8 * 8 * 16 * 16
    assert dsconv["mac_ratio"] == pytest.approx(1 / 8 + 1 / 9) == dsconv["mac_ratio_theory"]
    assert standard["iters"] == dsconv["iters"] == 3  # the run's timing settings
    plots = tmp_path / "plots"
    html = tmp_path / "r.html"
    report = runner.invoke(app, ["report", str(saved), "--plot", str(plots), "--format", "html", "--out", str(html)])
    assert report.exit_code == 0, report.output
    assert sorted(p.name for p in plots.iterdir()) == ["k2_study.png", "macs_vs_latency.png", "miou_vs_latency.png"]
    assert html.read_text().count("data:image/png;base64,") == 3


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_run_on_cuda_fills_every_field(test_models, tmp_path):
    args = ["run", "-m", "tiny_net", *TINY, "--device", "cuda", "--precision", "fp16", "--cuda-graph"]
    result = runner.invoke(app, [*args, "--format", "json", "--no-save"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["precision"], r["cuda_graph"]) for r in rows] == [("fp32", False), ("fp16", False), ("fp16", True)]
    row = rows[-1]
    assert [f for f in MEASURED if row[f] is None and f != "threads"] == []
    assert row["device_name"] == torch.cuda.get_device_name(0)
    assert row["output_argmax_agreement"] > 0.9  # the fast variant agrees with fp32 eager
    assert row["peak_mem_mb"] > 0  # a graph's peak is that of its warm-up and capture, not of a replay
    assert "Training: 2 steps x batch 2 (fp16 autocast" in result.stderr
