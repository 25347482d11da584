"""The CLI skeleton: version, list, env, exit codes and stdout hygiene."""

import json
import subprocess
import sys

from typer.testing import CliRunner

from segbench import __version__
from segbench.cli import app

runner = CliRunner()


def test_version_from_console_script_and_module():
    assert runner.invoke(app, ["--version"]).stdout.strip() == f"segbench {__version__}"
    out = subprocess.run([sys.executable, "-m", "segbench", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"segbench {__version__}"


def test_list_json_is_a_parsable_array_with_computed_params():
    result = runner.invoke(app, ["list", "--format", "json"])
    assert result.exit_code == 0
    entries = {e["name"]: e for e in json.loads(result.stdout)}
    assert entries["fcn8s"]["params"] == 134_489_759
    assert entries["fast_scnn"]["params"] == 1_137_795
    assert entries["fast_scnn"]["default_size"] == "1024x2048"
    assert entries["fcn32s"]["num_classes"] == 21
    assert entries["block_standard"]["kind"] == "block"
    assert entries["unet"]["plugin"] == "segbench-unet"
    assert all(e["reference"] for e in entries.values() if e["kind"] != "runtime")
    torch_runtime = entries["torch"]
    assert (torch_runtime["kind"], torch_runtime["plugin"]) == ("runtime", "segbench")
    assert torch_runtime["available"].startswith("cpu: yes; cuda: ")
    assert {"onnxruntime", "openvino"} <= set(entries)


def test_list_table_shows_broken_plugin(fake_plugins):
    fake_plugins("broken-import", 'raise ImportError("no module named frob")\n')
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0
    assert "Plugins that failed to load" in result.stdout
    assert "broken-import" in result.stdout


def test_env_json_reports_versions_and_flags():
    result = runner.invoke(app, ["env", "--format", "json"])
    assert result.exit_code == 0
    (facts,) = json.loads(result.stdout)
    import torch

    assert facts["torch_version"] == torch.__version__
    assert facts["torch_threads"] == torch.get_num_threads()
    assert {"cuda_version", "cudnn_version", "cpu", "tf32_matmul", "cudnn_benchmark"} <= set(facts)


def test_bad_format_is_one_line_exit_2():
    result = runner.invoke(app, ["list", "--format", "xml"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "segbench: error: bad format 'xml': accepted table, json"
    assert result.stdout == ""


def test_unknown_model_from_the_console_script_exits_2_without_traceback(tmp_path):
    """Through a real process: stdout stays clean, stderr is one line listing the known names."""
    out = subprocess.run(
        [sys.executable, "-m", "segbench", "flops", "--models", "fcn9s", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert out.stdout == ""
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("segbench: error: unknown model 'fcn9s' (did you mean fcn8s")
    assert "known: " in line and "fast_scnn" in line
    assert not list(tmp_path.iterdir())
