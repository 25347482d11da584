"""`segbench compare`: the regression gate on params, MACs, latency and mIoU."""

import math
import random
import statistics
from pathlib import Path

import pytest
from typer.testing import CliRunner

from segbench.cli import app
from segbench.errors import UserError
from segbench.output.compare import ALPHA, KEY_FIELDS, MIN_SAMPLES, compare_rows, parse_tolerance, slower
from segbench.rows.files import to_csv, to_json
from segbench.rows.schema import make_row

runner = CliRunner()


def rows(**changes: dict) -> list[dict]:
    """Two model rows and one block row; ``changes`` maps a model name to fields to override."""
    common = dict(device="cpu", device_name="Xeon", precision="fp32", batch_size=1, height=256, width=512)
    out = [
        make_row(
            model="fcn8s",
            kind="model",
            num_classes=21,
            params=134_489_759,
            macs_analytic=13_900_000_000,
            latency_ms_median=400.0,
            miou=0.40,
            dataset="synthetic",
            train_steps=20,
            **common,
        ),
        make_row(
            model="fast_scnn",
            kind="model",
            num_classes=19,
            params=1_137_795,
            macs_analytic=210_000_000,
            latency_ms_median=20.0,
            miou=0.30,
            dataset="synthetic",
            train_steps=20,
            **common,
        ),
        make_row(
            model="block_dsconv",
            kind="block",
            block="dsconv",
            kernel_size=3,
            in_channels=128,
            out_channels=128,
            stride=1,
            params=17_792,
            macs_analytic=71_827_456,
            latency_ms_median=1.0,
            **{**common, "height": 64, "width": 64},
        ),
    ]
    return [{**r, **changes.get(r["model"], {})} for r in out]


def gate(tmp_path: Path, new: list[dict], *options: str, base: list[dict] | None = None):
    (tmp_path / "base.json").write_text(to_json(base if base is not None else rows()))
    (tmp_path / "new.csv").write_text(to_csv(new))
    return runner.invoke(app, ["compare", str(tmp_path / "base.json"), str(tmp_path / "new.csv"), *options])


def status_of(output: str, row_start: str, check: str) -> str:
    """The status cell of the summary line for one row and check."""
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 6 and cells[0].startswith(row_start) and cells[1] == check:
            return cells[5].strip("*")
    raise AssertionError(f"no line for {row_start} / {check} in:\n{output}")


@pytest.mark.parametrize(("text", "value"), [("10%", 0.1), ("0.1", 0.1), (" 2.5% ", 0.025), ("0", 0.0)])
def test_parse_tolerance(text, value):
    assert parse_tolerance(text, "--x") == pytest.approx(value)


@pytest.mark.parametrize("text", ["abc", "-5%", "%", "nan", "inf"])
def test_parse_tolerance_rejects(text):
    with pytest.raises(UserError, match="expected a non-negative fraction or percentage"):
        parse_tolerance(text, "--x")


def test_identical_files_pass(tmp_path):
    result = gate(tmp_path, rows())
    assert result.exit_code == 0, result.output
    # per model row: params, macs_analytic, latency, miou; the block row has no miou
    assert result.stdout.strip().endswith("**PASS**: 11 checks, 11 ok, 0 REGRESSION, 0 not comparable, 0 added")
    assert status_of(result.stdout, "fast_scnn 256x512 bs1 cpu fp32", "latency_ms_median") == "ok"
    assert "Rows matched on: " + ", ".join(KEY_FIELDS) in result.stdout


def test_changed_mac_count_fails(tmp_path):
    result = gate(tmp_path, rows(fast_scnn={"macs_analytic": 210_000_001}))
    assert result.exit_code == 1
    assert status_of(result.stdout, "fast_scnn", "macs_analytic") == "REGRESSION"
    assert "| 210,000,000 | 210,000,001 | +1 |" in result.stdout
    assert status_of(result.stdout, "fcn8s", "macs_analytic") == "ok"


def test_changed_param_count_fails(tmp_path):
    result = gate(tmp_path, rows(block_dsconv={"params": 17_793}))
    assert result.exit_code == 1
    assert status_of(result.stdout, "block_dsconv K=3 C=128 N=128 64x64", "params") == "REGRESSION"


def test_slower_latency_beyond_tolerance_fails_and_within_passes(tmp_path):
    slower = rows(fcn8s={"latency_ms_median": 460.0})  # +15 %
    failed = gate(tmp_path, slower)
    assert failed.exit_code == 1
    assert status_of(failed.stdout, "fcn8s", "latency_ms_median") == "REGRESSION"
    assert "+15.0% (limit +10.0%)" in failed.stdout
    assert gate(tmp_path, slower, "--latency-tolerance", "20%").exit_code == 0
    assert gate(tmp_path, slower, "--latency-tolerance", "0.2").exit_code == 0
    assert gate(tmp_path, rows(fcn8s={"latency_ms_median": 436.0})).exit_code == 0  # +9 %
    assert gate(tmp_path, rows(fcn8s={"latency_ms_median": 100.0})).exit_code == 0  # faster is fine


def test_latency_on_another_device_is_not_comparable(tmp_path):
    other = [{**r, "device_name": "EPYC", "latency_ms_median": r["latency_ms_median"] * 3} for r in rows()]
    result = gate(tmp_path, other)
    assert result.exit_code == 0
    assert status_of(result.stdout, "fcn8s", "latency_ms_median") == "not comparable"
    assert "| Xeon vs EPYC |" in result.stdout
    assert status_of(result.stdout, "fcn8s", "params") == "ok"


def test_miou_drop_beyond_tolerance_fails(tmp_path):
    assert gate(tmp_path, rows(fast_scnn={"miou": 0.295})).exit_code == 0
    result = gate(tmp_path, rows(fast_scnn={"miou": 0.28}))
    assert result.exit_code == 1
    assert status_of(result.stdout, "fast_scnn", "miou") == "REGRESSION"
    assert "| -2.00 points (limit -0.5) |" in result.stdout
    assert gate(tmp_path, rows(fast_scnn={"miou": 0.28}), "--miou-tolerance", "5").exit_code == 0
    longer = gate(tmp_path, rows(fast_scnn={"miou": 0.1, "train_steps": 5}))
    assert status_of(longer.stdout, "fast_scnn", "miou") == "not comparable"


def test_a_deployment_row_whose_miou_dropped_is_named(tmp_path):
    """Each runtime's row has its own mIoU: the one that fell fails the gate under its own name."""
    deployed = [
        {**r, "runtime": runtime, "protocol": "whole"} for r in rows()[1:2] for runtime in ("torch", "onnxruntime")
    ]
    dropped = [{**r, "miou": 0.29} if r["runtime"] == "onnxruntime" else r for r in deployed]
    result = gate(tmp_path, dropped, base=deployed)
    assert result.exit_code == 1
    assert status_of(result.stdout, "fast_scnn 256x512 bs1 cpu onnxruntime fp32", "miou") == "REGRESSION"
    assert status_of(result.stdout, "fast_scnn 256x512 bs1 cpu torch fp32", "miou") == "ok"
    assert "| -1.00 points (limit -0.5) |" in result.stdout
    assert gate(tmp_path, dropped, "--miou-tolerance", "1", base=deployed).exit_code == 0


def test_miou_at_another_protocol_is_not_comparable(tmp_path):
    multi = rows(fast_scnn={"miou": 0.2, "protocol": "multiscale", "scales": "0.5,1", "flip": True})
    result = gate(tmp_path, multi)
    assert status_of(result.stdout, "fast_scnn", "miou") == "not comparable"
    assert "| protocol whole vs multiscale |" in result.stdout
    assert gate(tmp_path, rows(fast_scnn={"protocol": "whole"})).exit_code == 0  # older files: whole


def test_missing_or_failed_row_in_new_fails_and_extra_row_is_added(tmp_path):
    missing = gate(tmp_path, rows()[:2])
    assert missing.exit_code == 1
    assert status_of(missing.stdout, "block_dsconv", "row") == "REGRESSION"
    failed = gate(tmp_path, rows(fcn8s={"error": "out of memory", "latency_ms_median": None, "miou": None}))
    assert failed.exit_code == 1
    assert status_of(failed.stdout, "fcn8s", "error") == "REGRESSION"
    assert status_of(failed.stdout, "fcn8s", "latency_ms_median") == "REGRESSION"
    extra = gate(tmp_path, rows(), base=rows()[:2])
    assert extra.exit_code == 0
    assert status_of(extra.stdout, "block_dsconv", "row") == "added"


def test_rows_differing_in_a_key_field_do_not_match():
    checks = compare_rows(rows(), rows(fcn8s={"batch_size": 8}))
    assert [(c.row, c.status) for c in checks if c.check == "row"] == [
        ("fcn8s 256x512 bs1 cpu fp32", "REGRESSION"),
        ("fcn8s 256x512 bs8 cpu fp32", "added"),
    ]


def test_labels_name_the_runtime_and_every_variant_flag():
    """A torch and an onnxruntime row (and a folded-BN one) of one model and size are told apart."""
    base = rows()[:1]
    variants = [
        {**base[0], "runtime": "torch"},
        {**base[0], "runtime": "onnxruntime"},
        {**base[0], "runtime": "torch", "bn_folded": True},
    ]
    labels = [c.row for c in compare_rows(variants, variants) if c.check == "params"]
    assert labels == [
        "fcn8s 256x512 bs1 cpu torch fp32",
        "fcn8s 256x512 bs1 cpu onnxruntime fp32",
        "fcn8s 256x512 bs1 cpu torch fp32 bn_folded",
    ]


ADAPTIVE = "single adaptive warmup=3 min_samples=6 min_seconds=1 budget_s=10 target=0.02"
FIXED = "single fixed warmup=3 iters=50"


def test_latency_timed_under_another_protocol_is_not_comparable_unless_forced(tmp_path):
    base = rows(fcn8s={"timing_protocol": ADAPTIVE})
    new = rows(fcn8s={"timing_protocol": FIXED, "latency_ms_median": 600.0})  # +50 %
    result = gate(tmp_path, new, base=base)
    assert result.exit_code == 0
    assert status_of(result.stdout, "fcn8s", "latency_ms_median") == "not comparable"
    assert f"| timing protocol {ADAPTIVE} vs {FIXED} (--force compares them) |" in result.stdout
    assert status_of(result.stdout, "fcn8s", "params") == "ok"  # counts do not depend on timing
    forced = gate(tmp_path, new, "--force", base=base)
    assert forced.exit_code == 1
    assert status_of(forced.stdout, "fcn8s", "latency_ms_median") == "REGRESSION"
    assert f"compared under different protocols (--force): timing protocol {ADAPTIVE} vs {FIXED}" in forced.stdout
    same = gate(tmp_path, rows(fcn8s={"timing_protocol": FIXED}), base=rows(fcn8s={"timing_protocol": FIXED}))
    assert same.exit_code == 0 and status_of(same.stdout, "fcn8s", "latency_ms_median") == "ok"


def test_a_file_from_before_protocols_were_recorded_is_not_compared_with_one_that_records_it(tmp_path):
    old = rows()
    for row in old:
        del row["schema_version"], row["timing_protocol"]
    result = gate(tmp_path, rows(fcn8s={"timing_protocol": ADAPTIVE, "latency_ms_median": 600.0}), base=old)
    assert result.exit_code == 0
    assert f"timing protocol not recorded vs {ADAPTIVE}" in result.stdout
    assert status_of(result.stdout, "fast_scnn", "latency_ms_median") == "ok"  # neither recorded: compared


def test_duplicate_rows_in_one_file_are_refused():
    with pytest.raises(UserError, match="BASE holds two rows for 'fcn8s 256x512 bs1 cpu fp32'"):
        compare_rows(rows() + rows()[:1], rows())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--latency-tolerance", "fast"], "bad --latency-tolerance 'fast'"),
        (["--miou-tolerance", "-1"], "bad --miou-tolerance '-1'"),
    ],
)
def test_bad_tolerance_is_one_line_exit_2(tmp_path, args, message):
    result = gate(tmp_path, rows(), *args)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"segbench: error: {message}") and result.stderr.count("\n") == 1
    assert result.stdout == ""


def test_missing_file_is_exit_2(tmp_path):
    (tmp_path / "base.json").write_text(to_json(rows()))
    result = runner.invoke(app, ["compare", str(tmp_path / "base.json"), str(tmp_path / "nope.json")])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"segbench: error: result file not found: {tmp_path / 'nope.json'}"


#: The noise of a shared machine in `_noisy_row`: lognormal spread, and a share of calls 3x slower.
SPREAD, SPIKE, SPIKE_SHARE = 0.3, 3.0, 0.1
#: Seeded trials per simulated gate; a bound is missed by chance with probability MISS (and the seeds fix it).
TRIALS, MISS = 200, 1e-3


def _noisy_row(median_ms: float, rng: random.Random, samples: int = 100) -> dict:
    """A latency row whose per-call samples carry a shared machine's noise (`SPREAD`, `SPIKE`)."""
    times = [
        median_ms * rng.lognormvariate(0, SPREAD) * (SPIKE if rng.random() < SPIKE_SHARE else 1) for _ in range(samples)
    ]
    return make_row(
        model="m",
        device="cpu",
        device_name="cpu0",
        latency_ms_median=statistics.median(times),
        latency_samples_ms=times,
    )


def _regressions(factor: float, samples: int, tolerance: float, seed: int) -> int:
    """In how many of TRIALS seeded pairs (NEW ``factor`` x slower) the gate reports a regression."""
    rng = random.Random(seed)
    return sum(
        any(
            c.status == "REGRESSION"
            for c in compare_rows(
                [_noisy_row(10.0, rng, samples)], [_noisy_row(10.0 * factor, rng, samples)], tolerance
            )
        )
        for _ in range(TRIALS)
    )


def _nominal_power(factor: float, samples: int) -> float:
    """The one-sided rank test's power by Noether's formula: Phi(sqrt(12 n m / (N + 1)) (P(Y > X) - 1/2) - z_alpha).

    P(Y > X) for the noise model, exactly: log Y - log X is normal (sd SPREAD * sqrt 2) shifted by
    log(factor) and by log(SPIKE) when one of the two calls is a spike.
    """
    from scipy.stats import norm

    spread = SPREAD * math.sqrt(2)
    shifts = {0.0: (1 - SPIKE_SHARE) ** 2 + SPIKE_SHARE**2, 1.0: SPIKE_SHARE * (1 - SPIKE_SHARE)}
    shifts[-1.0] = shifts[1.0]
    p_greater = sum(w * norm.cdf((math.log(factor) + s * math.log(SPIKE)) / spread) for s, w in shifts.items())
    scale = math.sqrt(12 * samples * samples / (2 * samples + 1))
    return float(norm.cdf(scale * (p_greater - 0.5) - norm.ppf(1 - ALPHA)))


@pytest.mark.parametrize("samples", [MIN_SAMPLES, 100])
def test_the_rank_test_false_alarm_rate_is_at_most_its_level(samples):
    """Tolerance 0, so the rank test alone decides: an unchanged model fails at most at rate ALPHA,
    i.e. at most the (1 - MISS) quantile of Binomial(TRIALS, ALPHA) of the trials."""
    from scipy.stats import binom

    assert _regressions(1.0, samples, 0.0, seed=samples) <= binom.ppf(1 - MISS, TRIALS, ALPHA)


@pytest.mark.parametrize(("samples", "factor"), [(MIN_SAMPLES, 2.0), (100, 1.2)])
def test_the_rank_test_catches_slowdowns_at_its_nominal_power(samples, factor):
    """A real slowdown (2x with 6 calls a side, 20 % with 100) is caught at least as often as the
    MISS quantile of Binomial(TRIALS, nominal power): the power comes from the noise model, not a run."""
    from scipy.stats import binom

    power = _nominal_power(factor, samples)
    assert power > 0.5  # a slowdown the test is meant to see at this sample size
    assert _regressions(factor, samples, 0.0, seed=samples) >= binom.ppf(MISS, TRIALS, power)


def test_the_gate_needs_tolerance_and_evidence_under_noise():
    """With 10 % tolerance an unchanged model fails less often than the rank test alone allows, and
    less often than medians alone would (the noise moves medians past 10 %); a 20 % slowdown is shown
    with the rank test's p-value."""
    from scipy.stats import binom

    false_alarms = _regressions(1.0, 100, 0.1, seed=1)
    medians_only = sum(
        _noisy_row(10.0, random.Random(s))["latency_ms_median"]
        > 1.1 * _noisy_row(10.0, random.Random(s + 1000))["latency_ms_median"]
        for s in range(TRIALS)
    )
    assert false_alarms <= binom.ppf(1 - MISS, TRIALS, ALPHA)
    assert false_alarms < medians_only
    rng = random.Random(2)
    checks = compare_rows([_noisy_row(10.0, rng)], [_noisy_row(12.0, rng)], 0.1)
    (check,) = [c for c in checks if c.check == "latency_ms_median"]
    assert "rank test p=" in check.change


def test_the_rank_test_at_six_samples_a_side_is_exact():
    """Six calls a side, every NEW call slower: the exact one-sided p-value is 1 / C(12, 6) = 1/924
    (the normal approximation would say 0.0025); one overlap (U = 35) gives 2/924."""
    base = make_row(model="m", device="cpu", device_name="cpu0", latency_ms_median=3.5)
    apart = [float(v) for v in range(1, 7)], [float(v) for v in range(7, 13)]
    one_overlap = [*range(1, 6), 7.0], [6.0, *range(8, 13)]
    for (old, new), p in ((apart, 1 / 924), (one_overlap, 2 / 924)):
        clear, evidence = slower({**base, "latency_samples_ms": old}, {**base, "latency_samples_ms": new})
        assert clear and evidence == f"rank test p={p:.2g} (clear at {ALPHA:g})"
    clear, evidence = slower({**base, "latency_samples_ms": apart[1]}, {**base, "latency_samples_ms": apart[0]})
    assert not clear and evidence.startswith("rank test p=1 ")


def test_the_gate_falls_back_to_intervals_then_to_medians():
    base = make_row(model="m", device="cpu", device_name="cpu0", latency_ms_median=10.0, latency_ms_ci_high=11.0)
    overlapping = {**base, "latency_ms_median": 12.0, "latency_ms_ci_low": 10.5}
    apart = {**base, "latency_ms_median": 12.0, "latency_ms_ci_low": 11.5}
    (overlap,) = [c for c in compare_rows([base], [overlapping], 0.1) if c.check == "latency_ms_median"]
    assert overlap.status == "ok" and "intervals overlap" in overlap.change
    (clear,) = [c for c in compare_rows([base], [apart], 0.1) if c.check == "latency_ms_median"]
    assert clear.status == "REGRESSION" and "intervals apart" in clear.change
    old = {**base, "latency_ms_ci_high": None}
    (median_only,) = [c for c in compare_rows([old], [overlapping], 0.1) if c.check == "latency_ms_median"]
    assert median_only.status == "REGRESSION" and "medians only" in median_only.change
