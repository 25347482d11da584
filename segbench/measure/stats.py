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

import math
import statistics
from collections.abc import Sequence

CONFIDENCE = 0.95


def median_ci(samples: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """(low, high) of the median's confidence interval, from the order statistics of ``samples``."""
    ordered = sorted(samples)
    n = len(ordered)
    alpha = 1 - confidence
    j, cumulative = 0, 0.0
    for i in range(n // 2 + 1):
        cumulative += math.comb(n, i) / 2**n
        if 2 * cumulative > alpha:
            break
        j = i + 1
    if j == 0:
        return ordered[0], ordered[-1]
    return ordered[j - 1], ordered[n - j]


def relative_half_width(samples: Sequence[float], confidence: float = CONFIDENCE) -> float:
    """The wider side of the median's interval, relative to the median (0.02 = +-2 %)."""
    median = statistics.median(samples)
    low, high = median_ci(samples, confidence)
    return max(median - low, high - median) / abs(median) if median else math.inf


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Per-pair ratios of two paired sample lists."""
    return [a / b for a, b in zip(numerators, denominators)]
