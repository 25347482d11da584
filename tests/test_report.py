"""`segbench report`: merging result files, every output format, the plots and the HTML page."""

import base64
import json
import re
from fractions import Fraction
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from segbench.cli import app
from segbench.output.plots import block_speedups, gmacs_per_second, interval, pareto_front, point_labels
from segbench.output.tables import sections
from segbench.rows.files import load_rows, to_csv, to_json
from segbench.rows.schema import make_row, theory_ratio

runner = CliRunner()

MODELS = {  # name: (latency ms on the CPU, GMAC, mIoU)
    "fcn8s": (900.0, 55.0, 0.41),
    "fcn32s": (850.0, 54.0, 0.35),
    "fast_scnn": (30.0, 0.42, 0.38),
}


def model_rows(device: str, device_name: str, hostname: str, speed: float) -> list[dict]:
    return [
        make_row(
            model=name,
            kind="model",
            family=name.rstrip("0123456789s"),
            device=device,
            device_name=device_name,
            hostname=hostname,
            precision="fp32",
            batch_size=1,
            height=256,
            width=512,
            num_classes=21,
            params=1_000 + i,
            macs_analytic=int(gmac * 1e9),
            macs_fvcore=int(gmac * 1e9),
            latency_ms_median=latency / speed,
            dataset="synthetic",
            train_steps=20,
            miou=miou,
        )
        for i, (name, (latency, gmac, miou)) in enumerate(MODELS.items())
    ]


def block_rows() -> list[dict]:
    rows = []
    for k in (3, 5):
        for c in (32, 128):
            for block, latency in (("standard", 2.0 * k * k), ("dsconv", 1.0 * k)):
                macs = k * k * c * c * 64 * 64 if block == "standard" else (k * k * c + c * c) * 64 * 64
                rows.append(
                    make_row(
                        model=f"block_{block}",
                        kind="block",
                        block=block,
                        kernel_size=k,
                        in_channels=c,
                        out_channels=c,
                        stride=1,
                        device="cpu",
                        device_name="Xeon",
                        batch_size=1,
                        height=64,
                        width=64,
                        macs_analytic=macs,
                        latency_ms_median=latency,
                    )
                )
    return rows


@pytest.fixture
def result_files(tmp_path: Path) -> tuple[Path, Path]:
    """A CPU run with blocks as JSON and a GPU run of the same models on another host as CSV."""
    cpu, gpu = tmp_path / "cpu.json", tmp_path / "gpu.csv"
    cpu.write_text(to_json(model_rows("cpu", "Xeon", "laptop", 1.0) + block_rows()))
    gpu.write_text(to_csv(model_rows("cuda", "H100", "gpubox", 20.0)))
    return cpu, gpu


def test_pareto_front_keeps_only_undominated_points():
    points = [(1.0, 0.30), (2.0, 0.50), (3.0, 0.40), (4.0, 0.60), (2.0, 0.20), (4.0, 0.60)]
    assert pareto_front(points) == [0, 1, 3]
    assert pareto_front([(5.0, 0.1)]) == [0]


def test_theory_ratio_matches_the_weight_ratio_of_reference_md():
    # REFERENCE.md: C = N = 128, K = 3: 147,456 vs 17,536 weights, 8.41x fewer.
    assert theory_ratio(3, 128) == Fraction(17_536, 147_456)
    assert 1 / float(theory_ratio(7, 10**9)) == pytest.approx(49, rel=1e-6)


def test_block_speedups_pair_standard_and_dsconv():
    pairs = block_speedups(block_rows())
    assert [(p["kernel_size"], p["out_channels"]) for p in pairs] == [(3, 32), (5, 32), (3, 128), (5, 128)]
    for p in pairs:
        k, c = p["kernel_size"], p["out_channels"]
        assert p["latency_speedup"] == pytest.approx(2.0 * k)  # 2 K^2 ms / K ms
        assert p["mac_ratio"] == p["mac_ratio_theory"] == float(theory_ratio(k, c))  # dsconv / standard


def test_gmacs_per_second_and_labels_that_tell_machines_apart():
    rows = model_rows("cpu", "Xeon", "laptop", 1.0) + model_rows("cuda", "H100", "gpubox", 20.0)
    assert gmacs_per_second(rows[2]) == pytest.approx(0.42 / 0.030)
    assert point_labels(rows)[2] == "fast_scnn (Xeon, laptop)"
    assert point_labels(rows)[5] == "fast_scnn (H100, gpubox)"
    assert point_labels(rows[:3]) == ["fcn8s", "fcn32s", "fast_scnn"]


def test_sections_show_varying_context_as_columns_and_the_rest_as_a_note():
    rows = model_rows("cpu", "Xeon", "laptop", 1.0) + model_rows("cuda", "H100", "gpubox", 20.0) + block_rows()
    (models_title, models, model_cols, model_notes), (blocks_title, blocks, block_cols, block_notes) = sections(rows)
    assert (models_title, len(models), blocks_title, len(blocks)) == ("Models", 6, "Blocks", 8)
    assert model_cols == [
        "model",
        "device",
        "device_name",
        "hostname",
        "params",
        "macs_analytic",
        "latency_ms_median",
        "miou",
    ]
    assert block_cols == [
        "model",
        "block",
        "kernel_size",
        "in_channels",
        "out_channels",
        "stride",
        "macs_analytic",
        "latency_ms_median",
    ]
    assert "device=cpu, device_name=Xeon" in block_notes[0]
    assert "height=256, width=512, batch_size=1, precision=fp32, num_classes=21" in model_notes[0]
    assert "dataset=synthetic, train_steps=20" in model_notes[0]


def test_report_merges_json_and_csv_into_json(result_files):
    result = runner.invoke(app, ["report", *map(str, result_files), "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 3 + 8 + 3
    assert rows == json.loads(to_json(load_rows(result_files)))
    gpu = [r for r in rows if r["device"] == "cuda"]
    assert [r["latency_ms_median"] for r in gpu] == [45.0, 42.5, 1.5]
    assert {r["hostname"] for r in gpu} == {"gpubox"}


def test_report_csv_round_trips(result_files, tmp_path):
    result = runner.invoke(app, ["report", *map(str, result_files), "--format", "csv"])
    assert result.exit_code == 0
    again = tmp_path / "again.csv"
    again.write_text(result.stdout)
    assert load_rows([again]) == load_rows(result_files)


def test_report_md_and_table_keep_machines_apart(result_files):
    md = runner.invoke(app, ["report", *map(str, result_files), "--format", "md"])
    assert md.exit_code == 0
    header = next(line for line in md.stdout.splitlines() if line.startswith("| model | device |"))
    assert header.startswith("| model | device | device_name | hostname |")
    assert "| fast_scnn | cuda | H100 | gpubox | 1,002 | 420,000,000 | 1.500 | 0.3800 |" in md.stdout
    assert "all rows: height=256, width=512, batch_size=1, precision=fp32" in md.stdout
    assert "- MACs are multiply-accumulates; FLOPs = 2 x MACs" in md.stdout
    assert "Blocks" in md.stdout
    table = runner.invoke(app, ["report", *map(str, result_files)], env={"COLUMNS": "250"})
    assert table.exit_code == 0
    assert "H100" in table.stdout and "gpubox" in table.stdout and "fast_scnn" in table.stdout


def test_report_out_file(result_files, tmp_path):
    out = tmp_path / "sub" / "report.md"
    result = runner.invoke(app, ["report", str(result_files[0]), "--format", "md", "--out", str(out)])
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "| fcn8s | 1,000 | 55,000,000,000 | 900.000 | 0.4100 |" in out.read_text()


def test_plots_are_written_and_non_trivial(result_files, tmp_path):
    plot_dir = tmp_path / "plots"
    result = runner.invoke(app, ["report", *map(str, result_files), "--format", "csv", "--plot", str(plot_dir)])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in plot_dir.iterdir())
    assert names == ["k2_study.png", "macs_vs_latency.png", "miou_vs_latency.png"]
    for png in plot_dir.iterdir():
        with Image.open(png) as image:
            assert image.format == "PNG" and image.width >= 800 and image.height >= 500
            # a drawn plot, not a blank canvas: many distinct colours
            assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 50
        assert png.stat().st_size > 20_000


def test_plots_without_their_fields_are_skipped_with_a_note(tmp_path):
    only_counts = tmp_path / "flops.json"
    only_counts.write_text(to_json([make_row(model="fcn8s", kind="model", params=1, macs_analytic=10)]))
    plot_dir = tmp_path / "plots"
    result = runner.invoke(app, ["report", str(only_counts), "--format", "json", "--plot", str(plot_dir)])
    assert result.exit_code == 0
    assert not plot_dir.exists() or not list(plot_dir.iterdir())
    notes = result.stderr.strip().splitlines()
    assert [n.split(":")[1].strip() for n in notes] == [
        "skipped plot miou_vs_latency",
        "skipped plot macs_vs_latency",
        "skipped plot k2_study",
        "skipped plot load_miss_rate",
        "skipped plot roofline",
        "skipped plot layer_time_by_op",
    ]


def test_html_is_self_contained_with_tables_and_plots(result_files, tmp_path):
    out = tmp_path / "report.html"
    result = runner.invoke(app, ["report", *map(str, result_files), "--format", "html", "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == 3
    assert all(base64.b64decode(i).startswith(b"\x89PNG\r\n\x1a\n") for i in images)
    assert "<th>device_name</th>" in text and "<td>H100</td>" in text and "<td>fast_scnn</td>" in text
    assert 'src="http' not in text and "<link" not in text


def test_html_defaults_to_a_file_under_results(result_files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["report", str(result_files[1]), "--format", "html"])
    assert result.exit_code == 0
    (page,) = (tmp_path / "results").glob("report-*.html")
    assert f"segbench: wrote {Path('results') / page.name}" in result.stderr
    assert result.stdout == ""
    assert page.read_text().count("data:image/png;base64,") == 2  # no block rows: no K^2 plot


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.json"], "segbench: error: result file not found: missing.json"),
        (["{cpu}", "--format", "xml"], "segbench: error: bad format 'xml': accepted table, json, csv, md, html"),
    ],
)
def test_bad_input_is_one_line_exit_2(result_files, args, message):
    result = runner.invoke(app, ["report", *(a.format(cpu=result_files[0]) for a in args)])
    assert result.exit_code == 2
    assert result.stderr.strip() == message


def test_unwritable_plot_folder_is_one_line_exit_2(result_files, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = runner.invoke(app, ["report", str(result_files[0]), "--format", "json", "--plot", str(blocker / "plots")])
    assert result.exit_code == 2
    png = blocker / "plots" / "miou_vs_latency.png"
    assert result.stderr.strip() == f"segbench: error: cannot write {png}: Not a directory"


def test_error_bars_come_from_the_intervals_in_the_rows():
    rows = [
        make_row(latency_ms_median=10.0, latency_ms_ci_low=9.0, latency_ms_ci_high=12.5),
        make_row(latency_ms_median=4.0),
    ]
    assert interval(rows, "latency_ms_median") == [(1.0, 2.5), (0, 0)]  # a row without an interval: no bar
    assert interval(rows[1:], "latency_ms_median") is None  # older files: no bars at all
    paired = block_rows()
    for row in paired:
        if row["block"] == "dsconv":
            row.update(latency_speedup=2.0, latency_speedup_ci_low=1.5, latency_speedup_ci_high=2.5)
    pairs = block_speedups(paired)
    assert interval(pairs, "latency_speedup") == [(0.5, 0.5)] * 4  # the paired speed-up and its interval kept
