"""Results that survive: the journal, signals, concurrent runs, resume, checks before measuring,
misbehaving plugins, and numbers that cannot pass unchecked. Through the installed console script
where a real process matters (signals, concurrency, stdout)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import written
from PIL import Image
from typer.testing import CliRunner

from segbench.cli import app
from segbench.rows.files import load_rows, to_json
from segbench.rows.schema import make_row

PLUGINS = Path(__file__).parent / "plugins"  # holds the misbehaving segbench-faulty distribution
SEGBENCH = shutil.which("segbench") or "segbench"
FAST = ["--warmup", "0", "--iters", "1"]
runner = CliRunner()


def start(args: list[str], **env: str) -> subprocess.Popen:
    """The console script in its own process, with the faulty plugin installed."""
    environment = {**os.environ, "PYTHONPATH": str(PLUGINS), "SEGBENCH_FAULTY_SLEEP": "60", **env}
    return subprocess.Popen(
        [SEGBENCH, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment
    )


def wait_for_rows(folder: Path, count: int, timeout: float = 120) -> Path:
    """The journal of the run in ``folder`` once it holds ``count`` rows."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for journal in folder.glob("*.jsonl"):
            if journal.read_text().count("\n") >= count:
                return journal
        time.sleep(0.2)
    raise AssertionError(f"no journal with {count} row(s) in {folder}")


SWEEP = ["latency", "-m", "sleepy_net", "--batch-size", "1,2,3", *FAST]


def test_sigkill_loses_only_the_cell_in_progress_and_resume_finishes_the_sweep(tmp_path):
    out = tmp_path / "results"
    process = start([*SWEEP, "--out", str(out), "--format", "json"])
    journal = wait_for_rows(out, 1)  # batch 1 is done, batch 2 sleeps
    process.kill()
    process.wait(30)
    (first,) = load_rows([journal])  # the finished row is on disk; nothing else was written
    assert (first["model"], first["batch_size"], first["error"]) == ("sleepy_net", 1, None)
    assert sorted(p.suffix for p in written(out)) == [".jsonl"]

    report = runner.invoke(app, ["report", str(journal), "--format", "json"])
    assert report.exit_code == 0 and [r["batch_size"] for r in json.loads(report.stdout)] == [1]

    resumed = start(
        ["latency", "-m", "sleepy_net", "--batch-size", "1,2,3", *FAST, "--resume", str(journal), "--format", "json"],
        SEGBENCH_FAULTY_SLEEP="0",
    )
    stdout, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, stderr
    rows = json.loads(stdout)
    assert [r["batch_size"] for r in rows] == [1, 2, 3]
    assert rows[0]["run_id"] == first["run_id"] != rows[1]["run_id"]  # batch 1 was not measured again
    stem = journal.with_suffix("")
    assert sorted(p.name for p in written(out)) == sorted(stem.name + s for s in (".csv", ".json", ".md"))
    assert [r["batch_size"] for r in load_rows([stem.with_suffix(".json")])] == [1, 2, 3]


def test_sigterm_keeps_the_finished_rows_and_exits_143(tmp_path):
    out = tmp_path / "results"
    process = start([*SWEEP, "--out", str(out), "--format", "json"])
    wait_for_rows(out, 1)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 143
    assert "terminated: keeping the 1 finished row(s)" in stderr
    assert [r["batch_size"] for r in json.loads(stdout)] == [1]
    (saved,) = out.glob("latency-*.json")
    assert [r["batch_size"] for r in load_rows([saved])] == [1]
    assert not list(out.glob("*.jsonl"))  # the final files replace the journal


def test_ctrl_c_in_flops_keeps_the_finished_rows(tmp_path):
    """sleepy_net blocks in its forward pass at batch 2 (for 600 s): the interrupt comes after the
    first row and before the second, whatever the machine's speed."""
    out = tmp_path / "results"
    process = start(
        ["flops", "-m", "chatty_net,sleepy_net,block_dsconv", "-b", "2", "--out", str(out), "--format", "json"],
        SEGBENCH_FAULTY_SLEEP="600",
    )
    wait_for_rows(out, 1)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert [r["model"] for r in json.loads(stdout)] == ["chatty_net"]
    assert [r["model"] for r in load_rows(out.glob("flops-*.json"))] == ["chatty_net"]


def test_two_concurrent_runs_write_their_own_files(tmp_path):
    out = tmp_path / "results"
    args = ["flops", "-m", "block_dsconv", "--out", str(out), "--format", "json"]
    first, second = start(args), start([*args[:2], "block_standard", *args[3:]])
    for process in (first, second):
        assert process.wait(120) == 0, process.stderr.read()
    files = sorted(out.glob("flops-*.json"))
    assert len(files) == 2 and len(set(p.name for p in written(out))) == 6
    assert sorted(r["model"] for r in load_rows(files)) == ["block_dsconv", "block_standard"]
    assert len({r["run_id"] for r in load_rows(files)}) == 2


def test_a_run_that_draws_a_taken_run_id_draws_again(tmp_path, monkeypatch):
    """Runs in the same second that draw the same 24 random bits: a run that finds the id taken, by a
    run still writing its journal (exclusive create fails) or by a finished run's files, draws again;
    no run's rows land in another's files."""
    from segbench.rows import journal

    draws = iter(["aaaaaa", "aaaaaa", "bbbbbb", "aaaaaa", "bbbbbb", "cccccc"])
    monkeypatch.setattr(journal, "secrets", SimpleNamespace(token_hex=lambda nbytes: next(draws)))
    monkeypatch.setattr(journal, "time", SimpleNamespace(gmtime=time.gmtime, strftime=lambda *_: "20261202-120000"))
    out = tmp_path / "results"
    running = journal.Journal(out, "flops")  # a run in progress holds flops-...-aaaaaa.jsonl
    for model in ("block_standard", "fcn8s"):  # then: draws aaaaaa (journal held), bbbbbb; then taken twice
        result = runner.invoke(app, ["flops", "-m", model, "--size", "64x64", "--out", str(out), "--format", "json"])
        assert result.exit_code == 0, result.output
    mine = make_row(model="block_dsconv")
    running.append(mine)
    running.finish([mine])
    assert next(draws, None) is None  # every draw was used: the retry path was taken three times
    files = [out / f"flops-20261202-120000-{bits}.json" for bits in ("aaaaaa", "bbbbbb", "cccccc")]
    assert sorted(out.glob("*.json")) == files
    for path, model in zip(files, ("block_dsconv", "block_standard", "fcn8s")):
        (row,) = load_rows([path])
        assert (row["model"], row["run_id"]) == (model, path.stem.removeprefix("flops-"))


def test_a_printing_plugin_cannot_corrupt_json_on_stdout(tmp_path):
    for args in (["flops", "-m", "block_dsconv"], ["latency", "-m", "chatty_net", *FAST], ["list"]):
        process = start([*args, "--format", "json", *(["--no-save"] if args[0] != "list" else [])])
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
        assert isinstance(json.loads(stdout), list)  # the plugin's prints went to stderr
        assert "segbench-faulty: imported" in stderr


@pytest.mark.parametrize(
    ("model", "error"),
    [("exiting_net", "SystemExit: 3"), ("usererror_net", "UserError: a plugin raised segbench's own error type")],
)
def test_plugin_exceptions_of_any_kind_become_row_errors(model, error):
    process = start(
        ["latency", "-m", f"chatty_net,{model}", "--batch-size", "1,2", *FAST, "--format", "json", "--no-save"]
    )
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr
    rows = json.loads(stdout)
    assert [(r["model"], r["batch_size"], r["error"]) for r in rows] == [
        ("chatty_net", 1, None),
        ("chatty_net", 2, None),
        (model, 1, None),
        (model, 2, error),
    ]


# --- checked before anything is measured -----------------------------------------------------------


def _folder(root: Path, masks: list[np.ndarray]) -> Path:
    """A folder dataset: noise images (large enough that a cut file loses pixel data) and ``masks``."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i, mask in enumerate(masks):
        Image.fromarray(rng.integers(0, 255, (*mask.shape, 3), np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(mask.astype(np.uint8)).save(root / "masks" / f"{i}.png")
    return root


def test_bad_input_found_before_measuring_writes_nothing(tmp_path, fake_plugins):
    import torch

    fake_plugins(
        "two-nets",
        """
import segbench
from segbench.registry import ModelSpec
from torch import nn

@segbench.hookimpl
def register_models(register):
    for name, width in (("net_a", 4), ("net_b", 8)):
        register(ModelSpec(name=name, family="t", default_size=(16, 16), default_num_classes=2, description="t",
                           builder=lambda num_classes, width=width: nn.Conv2d(3, width * num_classes, 1)))
""",
    )
    weights = tmp_path / "w"
    weights.mkdir()
    torch.save({"weight": torch.zeros(8, 3, 1, 1), "bias": torch.zeros(8)}, weights / "net_a.pt")
    torch.save({"weight": torch.zeros(8, 3, 1, 1), "bias": torch.zeros(8)}, weights / "net_b.pt")  # fits net_a only
    data = _folder(tmp_path / "data", [np.eye(16, dtype=np.uint8)] * 5)
    broken = tmp_path / "broken"
    shutil.copytree(data, broken)
    val_image = broken / "images" / "4.png"  # every fifth image is val
    val_image.write_bytes(val_image.read_bytes()[:500])  # cut short: the header still reads
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    out = tmp_path / "out"
    train = ["train", "-m", "net_a,net_b", "--steps", "1", "--out", str(out)]
    cases = [
        (
            [*train, "--dataset", f"folder:{data}", "--weights", str(weights / "{model}.pt")],
            "net_b.pt: weights do not fit net_b with 2 classes",
        ),
        ([*train, "--dataset", f"folder:{broken}"], "4.png"),
        ([*train, "--dataset", f"folder:{data}", "--save", str(a_file / "{model}.pt")], "--save file"),
        (["latency", "-m", "net_a", "--trace", str(a_file), "--out", str(out)], "cannot write trace folder"),
        (["flops", "-m", "net_a", "--out", str(a_file / "sub")], "a_file"),
        (["run", "-m", "", "--out", str(out)], "empty model selection"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("segbench: error: ") and message in line, line
    assert not out.exists()


def test_binary_masks_of_0_and_255_are_refused_with_how_to_remap(tmp_path):
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 255
    data = _folder(tmp_path / "data", [mask] * 5)
    result = runner.invoke(app, ["train", "-m", "fast_scnn", "--dataset", f"folder:{data}", "--no-save"])
    assert result.exit_code == 2
    assert "masks hold only 0 and 255" in result.stderr and "(mask == 255)" in result.stderr


# --- no number passes unchecked ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (float("nan"), "new value is NaN"),
        (float("inf"), "new value is infinite"),
        (-1.0, "new value is negative"),
        ("fast", "new value is not a number ('fast')"),
    ],
)
def test_compare_flags_unusable_numbers(tmp_path, value, reason):
    base = make_row(model="m", device="cpu", device_name="cpu0", latency_ms_median=10.0, miou=0.5, dataset="d")
    for field in ("latency_ms_median", "miou"):
        new = {**base, field: value}
        (tmp_path / "base.json").write_text(to_json([base]))
        (tmp_path / "new.json").write_text(to_json([new]))
        result = runner.invoke(app, ["compare", str(tmp_path / "base.json"), str(tmp_path / "new.json")])
        assert result.exit_code == 1, result.output
        assert reason in result.stdout and "**FAIL**" in result.stdout


def test_compare_reads_a_nan_cell_from_csv(tmp_path):
    base = tmp_path / "base.csv"
    base.write_text("model,segbench_version,device,latency_ms_median\nm,0.1.0,cpu,10\n")
    new = tmp_path / "new.csv"
    new.write_text("model,segbench_version,device,latency_ms_median\nm,0.1.0,cpu,nan\n")
    result = runner.invoke(app, ["compare", str(base), str(new)])
    assert result.exit_code == 1 and "new value is NaN" in result.stdout


def test_report_refuses_to_overwrite_its_input_and_files_without_rows(tmp_path):
    results = tmp_path / "x.json"
    results.write_text(to_json([make_row(model="m")]))
    result = runner.invoke(app, ["report", str(results), "--format", "md", "--out", str(results)])
    assert result.exit_code == 2 and "is one of the input files" in result.stderr
    assert json.loads(results.read_text())[0]["model"] == "m"
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    result = runner.invoke(app, ["report", str(other)])
    assert result.exit_code == 2 and "holds no segbench result rows" in result.stderr


def test_an_overflowing_variant_is_an_error_and_inf_not_null():
    import torch
    from helpers import latency_row

    from segbench.measure.session import Variant
    from segbench.rows.latency import NON_FINITE

    class Overflows(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 1e5 * 1e5  # finite in fp32, inf in fp16

    fields = latency_row(
        Overflows(), size=(4, 4), batch=1, channels=2, variant=Variant("fp16"), device="cpu", warmup=0, iters=1
    )
    if fields["error"] not in (None, NON_FINITE):  # no fp16 multiply on this CPU: nothing to check
        pytest.skip(fields["error"])
    assert fields["output_max_abs_diff"] == float("inf") and fields["error"] == NON_FINITE
    assert (
        json.loads(to_json([make_row(output_max_abs_diff=fields["output_max_abs_diff"])]))[0]["output_max_abs_diff"]
        == "inf"
    )
