"""History: the project/CPU fields of rows, the store, series and change points from real runs, and bad input.

The real runs time ``paced_net`` (tests/plugins/paced), whose forward pass takes 40 ms x $PACE_SLOWDOWN,
in process, one run per second (row timestamps are per second).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from segbench import plugins
from segbench.cli import app
from segbench.errors import UserError
from segbench.output.history import analyse, history, series_of
from segbench.rows import environment
from segbench.rows.files import load_rows, save_rows
from segbench.rows.schema import make_row
from segbench.rows.store import STORE_NAME, STORE_VERSION, Store

PACED = Path(__file__).parent / "plugins" / "paced"
PACED_ARGS = ["latency", "--models", "paced_net", "--threads", "1", "--warmup", "1", "--iters", "12"]
runner = CliRunner()


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def paced_runs(out: Path, slowdowns: list[float]) -> None:
    """One ``segbench latency`` run of paced_net per slowdown, each in its own second, into ``out``."""
    for slowdown in slowdowns:
        time.sleep(1 - time.time() % 1 + 0.01)
        environment.fingerprint.cache_clear()
        result = runner.invoke(app, [*PACED_ARGS, "--out", str(out)], env={"PACE_SLOWDOWN": str(slowdown)})
        assert result.exit_code == 0, result.output
    environment.fingerprint.cache_clear()


@pytest.fixture(scope="module")
def paced_plugin():
    sys.path.insert(0, str(PACED))
    plugins.reset()
    yield
    sys.path.remove(str(PACED))
    sys.modules.pop("segbench_paced", None)
    plugins.reset()


@pytest.fixture(scope="module")
def stepped(paced_plugin, tmp_path_factory) -> Path:
    """Eight runs, the last four 30 % slower."""
    out = tmp_path_factory.mktemp("stepped")
    paced_runs(out, [1.0] * 4 + [1.3] * 4)
    return out


@pytest.fixture(scope="module")
def steady(paced_plugin, tmp_path_factory) -> Path:
    """Eight runs of unchanged code."""
    out = tmp_path_factory.mktemp("steady")
    paced_runs(out, [1.0] * 8)
    return out


def history_json(*args: str) -> list[dict]:
    result = runner.invoke(app, ["history", *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# --- what rows say about the project and the CPU -------------------------------------------------


def test_project_commit_is_the_working_directory_repository_and_says_dirty(tmp_path):
    assert environment.project_commit(tmp_path) == {"project_git_sha": None, "project_dirty": None}
    git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git(tmp_path, "add", "a.py")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    sha = git(tmp_path, "rev-parse", "HEAD").strip()
    assert environment.project_commit(tmp_path) == {"project_git_sha": sha, "project_dirty": False}
    (tmp_path / "a.py").write_text("x = 2\n")
    assert environment.project_commit(tmp_path) == {"project_git_sha": sha, "project_dirty": True}


def test_cpu_flags_keep_the_timing_features_in_a_fixed_order(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags : fpu avx512f sse4_2 avx2 amx_tile fma\n\nprocessor : 1\nflags : avx2\n")
    assert environment.cpu_flags(info) == ("sse4_2", "avx2", "fma", "avx512f", "amx_tile")
    assert environment.cpu_flags(tmp_path / "absent") == ()


def test_rows_carry_plugin_version_project_commit_and_cpu_flags(stepped):
    row = load_rows(sorted(stepped.glob("*.json"))[:1])[0]
    assert row["plugin"] == "segbench-paced" and row["plugin_version"] == "0.1"
    assert row["project_git_sha"] == git(Path.cwd(), "rev-parse", "HEAD").strip()
    assert isinstance(row["project_dirty"], bool)
    assert row["cpu_flags"] == " ".join(environment.cpu_flags())


# --- change points from real runs ----------------------------------------------------------------


def test_a_30_percent_step_at_run_5_is_the_one_change_point(stepped):
    [series] = history_json(str(stepped))
    assert series["model"] == "paced_net" and series["n_runs"] == 8
    [change] = series["change_points"]
    runs = sorted(load_rows(stepped.glob("*.json")), key=lambda r: r["timestamp"])
    assert change["index"] == 4 and change["run_id"] == runs[4]["run_id"]
    assert change["timestamp"] == runs[4]["timestamp"] and change["project_git_sha"] == runs[4]["project_git_sha"]
    # the true ratio is (1.3 x PACE_MS + w) / (PACE_MS + w), w the cost of a call beyond its pacing (the
    # timer, a late wake-up): 1.3 at w = 0, 1.2963 at w = 0.5 ms; the interval must hold part of that range
    # (on an idle machine it is narrow enough to fall just below 1.3 itself)
    assert change["ratio_ci_low"] <= 1.3 and change["ratio_ci_high"] >= (1.3 * 40 + 0.5) / (40 + 0.5)
    assert change["ratio_ci_high"] / change["ratio_ci_low"] < 1.25  # informative on a loaded machine too
    before = math.exp(sum(math.log(r["latency_ms_median"]) for r in runs[:4]) / 4)
    assert change["before"] == pytest.approx(before)
    assert change["regression"] is True
    assert change["samples_p"] < 1e-3


def test_eight_runs_of_unchanged_code_give_no_change_point(steady):
    [series] = history_json(str(steady))
    assert series["n_runs"] == 8 and series["change_points"] == []
    assert series["note"] == "0 change points"


def test_fail_on_regression_exits_1_for_the_step_and_0_without(stepped, steady):
    failed = runner.invoke(app, ["history", str(stepped), "--fail-on-regression"])
    assert failed.exit_code == 1 and "regression: paced_net: run 5" in failed.stderr
    assert runner.invoke(app, ["history", str(steady), "--fail-on-regression"]).exit_code == 0
    lenient = runner.invoke(app, ["history", str(stepped), "--fail-on-regression", "--tolerance", "40%"])
    assert lenient.exit_code == 0


def test_json_rows_carry_the_series_fields(stepped):
    [series] = history_json(str(stepped), "--models", "paced*")
    for key in ("model", "batch_size", "height", "width", "device_name", "hostname", "metric", "n_runs"):
        assert key in series
    assert set(series["change_points"][0]) >= {
        "run_id",
        "timestamp",
        "project_git_sha",
        "before",
        "after",
        "ratio",
        "ratio_ci_low",
        "ratio_ci_high",
    }
    assert series["first"] < series["last"]


# --- the store -----------------------------------------------------------------------------------


def test_every_run_added_its_rows_to_the_store_as_they_were_journaled(stepped):
    with sqlite3.connect(stepped / STORE_NAME) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone() == (str(STORE_VERSION),)
        stored = {run_id for (run_id,) in db.execute("SELECT run_id FROM rows")}
    assert stored == {r["run_id"] for r in load_rows(stepped.glob("*.json"))}


def test_a_deleted_store_rebuilt_from_the_files_gives_the_same_history(stepped, tmp_path):
    before = history_json(str(stepped))
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in stepped.glob("*.json"):
        (copy / path.name).write_bytes(path.read_bytes())
    assert history_json(str(copy)) == before  # no store there: built from the files
    (copy / STORE_NAME).unlink()
    assert history_json(str(copy), "--rebuild") == before
    assert len(Store(copy / STORE_NAME).rows()) == 8


def test_no_save_adds_nothing_to_any_store(paced_plugin, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, [*PACED_ARGS, "--no-save"])
    assert result.exit_code == 0, result.output
    assert list(tmp_path.rglob("*")) == []


def test_a_corrupt_or_foreign_file_is_skipped_with_a_warning(stepped, tmp_path):
    for path in list(stepped.glob("*.json"))[:2]:
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "broken.json").write_text("[{")
    (tmp_path / "package.json").write_text('{"name": "not segbench"}')
    result = runner.invoke(app, ["history", str(tmp_path), "--format", "json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)[0]["n_runs"] == 2
    warnings = [line for line in result.stderr.splitlines() if "warning: skipped" in line]
    assert len(warnings) == 2 and any("broken.json" in w for w in warnings)


def test_a_store_of_a_newer_layout_is_refused(tmp_path):
    Store(tmp_path / STORE_NAME).close()
    with sqlite3.connect(tmp_path / STORE_NAME) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'version'", (str(STORE_VERSION + 1),))
    result = runner.invoke(app, ["history", str(tmp_path)])
    assert result.exit_code == 2 and "newer than this segbench's" in result.stderr


def _add_rows(folder: str, writer: int) -> None:
    store = Store(Path(folder) / STORE_NAME)
    for i in range(40):
        store.add_row({"model": "m", "run_id": f"w{writer}-{i}"}, Path(folder) / f"w{writer}.jsonl")
    store.close()


def test_concurrent_writers_lose_no_row(tmp_path):
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_add_rows, args=(str(tmp_path), w)) for w in range(3)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(60)
    assert [p.exitcode for p in writers] == [0, 0, 0]
    with sqlite3.connect(tmp_path / STORE_NAME) as db:
        assert db.execute("SELECT COUNT(DISTINCT run_id) FROM rows").fetchone() == (120,)


def test_a_locked_store_waits_then_says_so(tmp_path):
    Store(tmp_path / STORE_NAME).close()
    holder = sqlite3.connect(tmp_path / STORE_NAME, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    started = time.monotonic()
    with pytest.raises(UserError, match="locked by another writer"):
        Store(tmp_path / STORE_NAME, timeout=0.3)
    assert time.monotonic() - started >= 0.3
    holder.execute("ROLLBACK")
    holder.close()


# --- series from made rows: machines, one run, accuracy -----------------------------------------


def made(metric: str, values: list[float], **fields) -> list[dict]:
    return [
        make_row(
            model="m", kind="model", **{metric: v}, run_id=f"r{i}", timestamp=f"2026-12-01T00:00:{i:02d}", **fields
        )
        for i, v in enumerate(values)
    ]


def test_series_never_mix_machines_and_a_single_run_says_so(tmp_path):
    rows = made("latency_ms_median", [10, 11, 10], hostname="a") + made("latency_ms_median", [20], hostname="b")
    found = {s.key["hostname"]: analyse(s, 0.1) for s in series_of(rows, "latency_ms_median")}
    assert [s.key["hostname"] for s in series_of(rows, "latency_ms_median")] == ["a", "b"]
    assert [r.value for r in found["a"].runs] == [10, 11, 10]
    assert found["b"].note == "1 run: no change points (a step needs 2 runs on each side)"
    save_rows(rows, tmp_path / "latency-x")
    assert [s["n_runs"] for s in history_json(str(tmp_path / "latency-x.json"))] == [3, 1]


def test_metric_miou_finds_the_run_where_accuracy_fell(tmp_path):
    values = [0.61, 0.61, 0.61, 0.61, 0.61, 0.5, 0.5, 0.5]
    save_rows(made("miou", values, dataset="synthetic", train_steps=40), tmp_path / "train-x")
    [series] = history_json(str(tmp_path), "--metric", "miou")
    [change] = series["change_points"]
    assert change["run_id"] == "r5" and change["ratio"] == pytest.approx(0.5 / 0.61)
    assert change["regression"] is True
    assert [s.change_points for s in history(made("miou", [0.6] * 8), "miou", 0.1)] == [[]]


def test_unknown_metric_and_bad_since_are_user_errors(tmp_path):
    assert (
        "not a numeric result-row field" in runner.invoke(app, ["history", str(tmp_path), "--metric", "model"]).stderr
    )
    assert "expected a date" in runner.invoke(app, ["history", str(tmp_path), "--since", "yesterday"]).stderr
    save_rows(made("latency_ms_median", [10, 11]), tmp_path / "latency-x")
    assert history_json(str(tmp_path), "--since", "2026-12-01")[0]["n_runs"] == 2
    later = runner.invoke(app, ["history", str(tmp_path), "--since", "2026-12-02"])
    assert later.exit_code == 2 and "no rows with latency_ms_median" in later.stderr


# --- segbench check and git bisect ---------------------------------------------------------------


def test_check_against_history_passes_unchanged_code_and_fails_a_slow_one(steady):
    args = ["check", "--baseline", "history", "--results", str(steady), *PACED_ARGS[1:]]
    same = runner.invoke(app, args, env={"PACE_SLOWDOWN": "1"})
    assert same.exit_code == 0, same.output
    assert "paced_net 1x8x8 torch fp32" in same.stdout and "vs the last 8 run(s)" in same.stdout
    slow = runner.invoke(app, args, env={"PACE_SLOWDOWN": "1.3"})
    assert slow.exit_code == 1 and "REGRESSION" in slow.stdout


def test_check_against_history_compares_with_the_runs_since_the_last_change_point(stepped):
    args = ["check", "--baseline", "history", "--results", str(stepped), *PACED_ARGS[1:]]
    slow = runner.invoke(app, args, env={"PACE_SLOWDOWN": "1.3"})
    assert slow.exit_code == 0, slow.output  # as slow as runs 5-8: no new regression
    assert "vs the last 4 run(s)" in slow.stdout


def test_check_exits_125_when_it_cannot_judge(paced_plugin, steady, tmp_path):
    unknown = runner.invoke(app, ["check", "--baseline", "history", "--results", str(steady), "--models", "nope"])
    assert unknown.exit_code == 125 and "unknown model" in unknown.stderr
    empty = runner.invoke(app, ["check", "--baseline", "history", "--results", str(tmp_path), *PACED_ARGS[1:]])
    assert empty.exit_code == 125 and "no latency rows in the baseline" in empty.stderr
    other = runner.invoke(
        app, ["check", "--baseline", "history", "--results", str(steady), "--models", "paced_net", "--iters", "3"]
    )
    assert other.exit_code == 125 and "no baseline series" in other.stderr  # default threads: another series


def test_git_bisect_run_check_finds_the_slow_commit_of_a_plugin(tmp_path):
    """A plugin repository of eight commits, the fifth 30 % slower; `git bisect run segbench check` names it."""
    repo = tmp_path / "plugin"
    shutil.copytree(PACED, repo)
    source = repo / "segbench_paced.py"
    git(repo, "init", "-q")
    shas = []
    for number in range(1, 9):
        text = source.read_text().replace("PACE_MS = 40.0", "PACE_MS = 52.0") if number == 5 else source.read_text()
        source.write_text(text + f"# commit {number}\n")
        git(repo, "add", "-A")
        git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", f"commit {number}")
        shas.append(git(repo, "rev-parse", "HEAD").strip())
    git(repo, "checkout", "-q", shas[0])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), str(Path(__file__).parents[1])])}
    segbench = [sys.executable, "-m", "segbench"]
    baseline = tmp_path / "baseline"
    measured = subprocess.run(
        [*segbench, *PACED_ARGS, "--out", str(baseline)], cwd=repo, env=env, capture_output=True, text=True
    )
    assert measured.returncode == 0, measured.stderr
    [base_file] = baseline.glob("latency-*.json")
    git(repo, "bisect", "start", shas[-1], shas[0])
    check = [*segbench, "check", "--baseline", str(base_file), "--tolerance", "15%", *PACED_ARGS[1:]]
    found = subprocess.run(["git", "bisect", "run", *check], cwd=repo, env=env, capture_output=True, text=True)
    assert f"{shas[4]} is the first bad commit" in found.stdout, found.stdout + found.stderr


def test_plot_writes_one_png_trend_per_series(stepped, steady, tmp_path):
    result = runner.invoke(app, ["history", str(stepped), str(steady), "--plot", str(tmp_path / "plots")])
    assert result.exit_code == 0, result.output
    pngs = sorted((tmp_path / "plots").glob("trend-latency-ms-median-paced-net-*.png"))
    assert len(pngs) == 1  # both folders hold one series: the same model, machine, variant and protocol
    assert pngs[0].read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_a_run_in_two_files_keeps_its_rows_when_one_file_goes(tmp_path):
    rows = made("latency_ms_median", [10, 11, 10, 12])
    save_rows(rows, tmp_path / "latency-x")
    save_rows(rows[:2], tmp_path / "report-merged")  # a merged report holds two of the same runs
    assert history_json(str(tmp_path))[0]["n_runs"] == 4
    for path in tmp_path.glob("report-merged.*"):
        path.unlink()
    assert history_json(str(tmp_path))[0]["n_runs"] == 4
    assert history_json(str(tmp_path), "--rebuild")[0]["n_runs"] == 4
