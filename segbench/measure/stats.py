"""Statistics of timing samples, distribution-free: machines are shared, and their times are skewed
by bursts of load, so nothing here assumes a normal distribution.

- `median_ci`: the exact order-statistic interval for a median: P(X(j) <= m <= X(n+1-j)) =
  1 - 2 P(Bin(n, 1/2) <= j - 1), at least ``confidence`` for any continuous distribution; it needs
  n >= 6 for 95 % (below that: min and max). Deterministic and cheap (no resampling): the timing
  loop evaluates it after every round. Checked against ``scipy.stats.binom`` in the tests.

The rank test of ``segbench compare`` is scipy's (`scipy.stats.mannwhitneyu`): exact for small
samples, maintained and tested upstream.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Sequence

CONFIDENCE = 0.95


def median_ci(samples: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """(low, high) of the median's confidence interval, from the order statistics of ``samples``."""
    ordered = sorted(samples)
    j = _order_index(len(ordered), confidence)
    if j == 0:
        return ordered[0], ordered[-1]
    return ordered[j - 1], ordered[len(ordered) - j]


@functools.cache
def _order_index(n: int, confidence: float) -> int:
    """The largest j with 2 P(Bin(n, 1/2) <= j - 1) <= 1 - confidence (0: none).

    The binomial terms by their ratio, in logs (2^-n underflows from n = 1075): the timing loop asks
    after every round, so this is O(n) float steps rather than big-integer binomial coefficients;
    cached, as each session and ratio of a round asks for the same n.
    """
    alpha = 1 - confidence
    j, cumulative, log_term = 0, 0.0, -n * math.log(2)  # log P(Bin(n, 1/2) = 0)
    for i in range(n // 2 + 1):
        cumulative += math.exp(log_term)
        if 2 * cumulative > alpha:
            break
        j = i + 1
        log_term += math.log((n - i) / (i + 1))
    return j


def relative_half_width(samples: Sequence[float], confidence: float = CONFIDENCE) -> float:
    """The wider side of the median's interval, relative to the median (0.02 = +-2 %)."""
    median = statistics.median(samples)
    low, high = median_ci(samples, confidence)
    return max(median - low, high - median) / abs(median) if median else math.inf


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Per-pair ratios of two paired sample lists."""
    return [a / b for a, b in zip(numerators, denominators)]
