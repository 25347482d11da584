"""measure/stats.py against scipy: the median's order-statistic interval (`median_ci`) and its use."""

import math
import random

import pytest
from scipy.stats import binom, quantile_test

from segbench.measure.stats import median_ci, ratios, relative_half_width


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_median_interval_is_scipys_order_statistic_interval(confidence):
    """For every sample size from the smallest that reaches ``confidence`` to 200, on skewed samples."""
    rng = random.Random(0)
    smallest = next(n for n in range(1, 50) if 2 * binom.cdf(0, n, 0.5) <= 1 - confidence)
    for n in range(smallest, 201):
        samples = [rng.lognormvariate(0, 0.5) for _ in range(n)]
        expected = quantile_test(samples, q=sorted(samples)[n // 2], p=0.5).confidence_interval(confidence)
        assert median_ci(samples, confidence) == (expected.low, expected.high), n


def test_median_interval_covers_at_least_its_confidence_and_is_the_narrowest_that_does():
    """P(X(j) <= m <= X(n+1-j)) = 1 - 2 P(Bin(n, 1/2) <= j - 1), by scipy's binomial."""
    for n in range(6, 101):
        low, _ = median_ci(list(range(n)))
        j = int(low) + 1  # the samples 0..n-1 are their own order statistics
        assert 1 - 2 * binom.cdf(j - 1, n, 0.5) >= 0.95
        assert 1 - 2 * binom.cdf(j, n, 0.5) < 0.95


@pytest.mark.parametrize("n", range(1, 6))
def test_below_six_samples_no_95_percent_interval_exists_so_min_and_max(n):
    samples = [float(v) for v in range(n, 0, -1)]
    assert math.isnan(quantile_test(samples, q=3, p=0.5).confidence_interval(0.95).low)
    assert median_ci(samples) == (1.0, float(n))


def test_relative_half_width_is_the_wider_side_over_the_median():
    # n = 7: the 95 % interval is (min, max) = (1, 10), the median 4: sides 3 and 6
    assert relative_half_width([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 10.0]) == pytest.approx(6 / 4)
    assert relative_half_width([0.0] * 7) == math.inf


def test_ratios_pair_the_lists_call_by_call():
    assert ratios([2.0, 9.0, 4.0], [1.0, 3.0, 8.0]) == [2.0, 3.0, 0.5]


@pytest.mark.parametrize("n", [1074, 1075, 1076, 2000, 5001])
def test_median_interval_of_large_samples_matches_scipys_binomial_quantile(n):
    """Past n = 1074, where 2^-n underflows a float: the lower index is binom.ppf(alpha / 2)."""
    low, high = median_ci(list(range(n)))
    j = int(binom.ppf(0.025, n, 0.5))
    assert (low, high) == (j - 1, n - j)
