"""Beyond one process (#15): sweeps sharded over torchrun ranks, data-parallel training, and how the
ranks' rows meet. Real ``torchrun --standalone --nproc-per-node 2`` launches (gloo, CPU, tiny sizes)
checked against the same work in one process; the pieces (shards, journals) in process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import written
from typer.testing import CliRunner

from segbench.cli import app
from segbench.rows.files import load_rows
from segbench.rows.journal import Journal, in_cell_order, journal_paths, stem_of
from segbench.rows.schema import make_row
from segbench.runners.cells import Cell, Context, Shard, measure_cells

REPO = Path(__file__).resolve().parents[1]
PLUGINS = Path(__file__).parent / "plugins"  # the segbench-faulty distribution: chatty_net, crashing_net
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
FAST = ["--warmup", "0", "--iters", "1", "--processes", "1"]  # ranks here, not worker processes
runner = CliRunner()


@pytest.fixture
def faulty_plugin(monkeypatch):
    """The segbench-faulty distribution installed in this process too (the launches get it by PYTHONPATH)."""
    from segbench import plugins

    monkeypatch.syspath_prepend(str(PLUGINS))
    plugins.reset()
    yield
    sys.modules.pop("segbench_faulty", None)
    plugins.reset()


def torchrun(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node 2 ARGS`` with this checkout first on the path."""
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(PLUGINS)]),
        "SEGBENCH_DIST_TIMEOUT": "60",
        "OMP_NUM_THREADS": "1",
        **env,
    }
    return subprocess.run([*TORCHRUN, *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=240)


# --- in process: the shard and the journals -------------------------------------------------------


def test_shards_measure_every_cell_exactly_once_and_stamp_their_rows():
    cells = [
        Cell([{"model": f"m{i}", "batch_size": b} for b in (1, 2)], lambda keys: [{}] * len(keys)) for i in range(5)
    ]
    alone = list(measure_cells(cells))
    parts = [list(measure_cells(cells, Context(shard=Shard(rank, 3, cores=str(rank))))) for rank in range(3)]
    merged = in_cell_order([row for part in reversed(parts) for row in part])
    assert [(r["model"], r["batch_size"]) for r in merged] == [(r["model"], r["batch_size"]) for r in alone]
    assert [r["cell"] for r in merged] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert [r["rank"] for r in merged] == [0, 0, 1, 1, 2, 2, 0, 0, 1, 1]
    assert {(r["world_size"], r["cores"]) for r in parts[2]} == {(3, "2")}
    assert all(r["rank"] is r["cell"] is r["world_size"] is None for r in alone)  # plain runs: as before
    later = Shard(1, 3).after(5)  # a sweep that continues the numbering (run's blocks after its models)
    assert [i for i in range(5) if later.owns(i)] == [2] and later.fields(2)["cell"] == 7


def test_rank_journals_share_one_run_and_resume_reads_them_all(tmp_path):
    from segbench.cli.output import resumed_rows

    first = Journal(tmp_path, "latency", rank=0)
    second = Journal(tmp_path, "latency", rank=1, run_id=first.run_id)
    ranks = [tmp_path / f"latency-{first.run_id}.rank{k}.jsonl" for k in (0, 1)]
    assert journal_paths(first.stem) == ranks and stem_of(ranks[1]) == first.stem
    second.append(make_row(model="b", cell=1, rank=1))
    first.append(make_row(model="a", cell=0, rank=0))
    first.close()
    second.close()
    previous = resumed_rows(ranks[1], "latency")  # a killed sharded run, resumed from any rank's journal
    assert [r["model"] for r in in_cell_order(previous)] == ["a", "b"]
    again = Journal(tmp_path, "latency", resume=ranks[1], previous=previous)  # resumed in one process
    assert again.path.name == f"latency-{first.run_id}.jsonl" and again.others() == ranks
    again.finish(in_cell_order(previous))
    assert sorted(p.name for p in written(tmp_path)) == [f"latency-{first.run_id}.{s}" for s in ("csv", "json")]
    assert [r["model"] for r in load_rows([first.stem.with_suffix(".json")])] == ["a", "b"]


def test_the_global_batch_must_split_over_the_ranks():
    from segbench.errors import UserError
    from segbench.measure.data_parallel import DataParallel
    from segbench.runners.train import TrainConfig

    config = TrainConfig(batch_size=4)
    config.check_parallel(DataParallel(0, 2))
    assert config.budget == (120, 4)
    with pytest.raises(UserError, match="batch size 3 does not split over 2 ranks"):
        TrainConfig(batch_size=3).check_parallel(DataParallel(1, 2))


def test_cores_are_named_as_taskset_does_and_a_bad_timeout_is_refused(monkeypatch):
    from segbench.errors import UserError
    from segbench.measure.distributed import core_list, timeout_seconds

    assert core_list((8, 0, 1, 2, 3, 10, 11)) == "0-3,8,10-11" and core_list(None) is None
    monkeypatch.setenv("SEGBENCH_DIST_TIMEOUT", "soon")
    with pytest.raises(UserError, match="bad SEGBENCH_DIST_TIMEOUT='soon'"):
        timeout_seconds()


# --- real torchrun launches -----------------------------------------------------------------------


@pytest.mark.slow
def test_a_sharded_run_gives_the_rows_of_one_process(tmp_path, faulty_plugin):
    """Models and then the K^2 blocks' cells, round robin over 2 ranks, each on its own core."""
    args = [
        "run",
        "-m",
        "fast_scnn,chatty_net",
        "--steps",
        "0",
        "--size",
        "32x32",
        "--blocks",
        "--kernel-sizes",
        "3",
        "--channels",
        "8,16",
        "--block-size",
        "16x16",
        *FAST,
        "--format",
        "json",
    ]
    sharded = torchrun(["-m", "segbench", *args, "--out", str(tmp_path / "out")], cwd=tmp_path)
    assert sharded.returncode == 0, sharded.stderr
    rows = json.loads(sharded.stdout)  # rank 1 printed nothing: stdout is rank 0's one JSON array
    alone = json.loads(runner.invoke(app, [*args, "--no-save"], catch_exceptions=False).stdout)
    what = (
        "model",
        "block",
        "kernel_size",
        "in_channels",
        "height",
        "width",
        "params",
        "macs_analytic",
        "macs_fvcore",
        "mac_ratio",
    )
    assert [[r[f] for f in what] for r in rows] == [[r[f] for f in what] for r in alone]
    assert [r["model"] for r in rows] == ["fast_scnn", "chatty_net", *["block_standard", "block_dsconv"] * 2]
    assert [(r["cell"], r["rank"]) for r in rows] == [(0, 0), (1, 1), (2, 0), (2, 0), (3, 1), (3, 1)]
    assert {r["world_size"] for r in rows} == {2} and not any(r["error"] for r in rows)
    cores = {r["rank"]: r["cores"] for r in rows}
    assert len(set(cores.values())) == 2 and {r["threads"] for r in rows if r["kind"] == "model"} == {1}
    (saved,) = (tmp_path / "out").glob("*.json")
    assert [(r["model"], r["cell"]) for r in load_rows([saved])] == [(r["model"], r["cell"]) for r in rows]
    assert sorted(p.suffix for p in written(tmp_path / "out")) == [".csv", ".json", ".md"]  # no journal left


@pytest.mark.slow
def test_a_rank_that_dies_leaves_its_rows_and_resume_measures_the_rest(tmp_path):
    """Rank 1 crashes hard in its second cell: rank 0 names it, merges its first row from its journal."""
    args = [
        "-m",
        "segbench",
        "latency",
        "-m",
        "chatty_net,crashing_net",
        "--batch-size",
        "1,2",
        *FAST,
        "--format",
        "json",
    ]
    crashed = torchrun([*args, "--out", str(tmp_path)], cwd=tmp_path, SEGBENCH_FAULTY_CRASH="5")
    assert crashed.returncode != 0
    assert "rank 1 did not finish" in crashed.stderr and "--resume" in crashed.stderr
    (saved,) = tmp_path.glob("latency-*.json")
    kept = load_rows([saved])
    assert [(r["model"], r["batch_size"], r["rank"]) for r in kept] == [
        ("chatty_net", 1, 0),
        ("chatty_net", 2, 1),
        ("crashing_net", 1, 0),
    ]
    assert not list(tmp_path.glob("*.jsonl"))
    resumed = torchrun([*args, "--resume", str(saved)], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    rows = load_rows([saved])
    assert [(r["model"], r["batch_size"], r["cell"]) for r in rows] == [
        ("chatty_net", 1, 0),
        ("chatty_net", 2, 1),
        ("crashing_net", 1, 2),
        ("crashing_net", 2, 3),
    ]
    assert rows[3]["run_id"] != rows[0]["run_id"] == rows[1]["run_id"]  # only the missing cell was measured
    assert [r["cell"] for r in json.loads(resumed.stdout)] == [0, 1, 2, 3]


@pytest.mark.slow
def test_two_ranks_train_like_one_process_on_the_global_batch(tmp_path):
    """DDP + synchronised BatchNorm + the loss over the batch's labelled pixels vs one process, 3 steps."""
    launched = torchrun(
        [str(Path(__file__).parent / "distributed_worker.py"), str(tmp_path / "report.json")], cwd=tmp_path
    )
    assert launched.returncode == 0, launched.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["ranks_agree"] == 0.0  # DDP: bitwise the same weights on both ranks
    assert report["training_moved"] > 1e-3  # the weights did move, by far more than the tolerance below
    assert report["ranks_vs_one_process"] < 1e-6  # 1.5e-08 here; per-rank BatchNorm gives 5.6e-04
    assert report["matrix_equal"] and report["pixels"] > 0  # the summed confusion matrix is the same, exactly
    assert report["miou"][0] == report["miou"][1]


@pytest.mark.slow
def test_train_under_torchrun_records_the_world_and_the_global_batch(tmp_path):
    args = [
        "-m",
        "segbench",
        "train",
        "-m",
        "fast_scnn",
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--size",
        "32x32",
        "--save",
        str(tmp_path / "weights.pt"),
        "--format",
        "json",
        "--out",
        str(tmp_path / "out"),
    ]
    launched = torchrun(args, cwd=tmp_path)
    assert launched.returncode == 0, launched.stderr
    (row,) = json.loads(launched.stdout)
    assert (row["world_size"], row["batch_size"], row["rank"], row["error"]) == (2, 4, None, None)
    assert 0 <= row["miou"] <= 1 and (tmp_path / "weights.pt").is_file()
    assert sorted(p.suffix for p in written(tmp_path / "out")) == [".csv", ".json", ".md"]


# A DGX-like node in miniature: logical CPUs 0-7, CPU i and i+4 hyperthread siblings, physical cores
# 0-1 on socket 0 and 2-3 on socket 1 (review cuda-2026-12-02, N10).
def _core_of(cpu: int) -> tuple[int, int]:
    return ((cpu % 4) // 2, cpu % 4)


SOCKET0, SOCKET1 = frozenset({0, 1, 4, 5}), frozenset({2, 3, 6, 7})


def test_ranks_get_one_logical_cpu_per_physical_core_and_never_share_a_core() -> None:
    from segbench.measure.distributed import rank_cores

    usable = list(range(8))
    mine = [rank_cores(usable, rank, 2, _core_of) for rank in range(2)]
    assert mine == [(0, 1), (2, 3)]  # in id order it was (0-3) and (4-7): siblings in both ranks
    assert len({_core_of(c) for cores in mine for c in cores}) == 4


def test_ranks_take_the_cores_of_their_gpus_numa_node() -> None:
    from segbench.measure.distributed import rank_cores

    usable = list(range(8))
    assert [rank_cores(usable, r, 2, _core_of, [SOCKET1, SOCKET0]) for r in range(2)] == [(2, 3), (0, 1)]
    # both GPUs on socket 0: the two ranks split its cores
    assert [rank_cores(usable, r, 2, _core_of, [SOCKET0, SOCKET0]) for r in range(2)] == [(0,), (1,)]
    # more ranks than a node has cores: the even split over all cores instead
    near = [SOCKET0] * 4
    assert [rank_cores(usable, r, 4, _core_of, near) for r in range(4)] == [(0,), (1,), (2,), (3,)]


def test_a_rank_that_sees_one_gpu_of_its_own_uses_it() -> None:
    """N10: Slurm's --gpus-per-task=1 leaves each rank one GPU; the run was refused."""
    from segbench.errors import UserError
    from segbench.measure.distributed import gpu_index, parse_cpulist

    assert [gpu_index(r, 4, 4, narrowed=False) for r in range(4)] == [0, 1, 2, 3]
    assert [gpu_index(r, 4, 1, narrowed=True) for r in range(4)] == [0, 0, 0, 0]
    with pytest.raises(UserError, match="4 ranks on this machine but 1 CUDA device"):
        gpu_index(1, 4, 1, narrowed=False)
    assert parse_cpulist("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
