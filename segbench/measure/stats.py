"""Statistics of timing samples, distribution-free: machines are shared, and their times are skewed
by bursts of load, so nothing here assumes a normal distribution.

- `median_ci`: the exact order-statistic interval for a median: P(X(j) <= m <= X(n+1-j)) =
  1 - 2 P(Bin(n, 1/2) <= j - 1), at least ``confidence`` for any continuous distribution; it needs
  n >= 6 for 95 % (below that: min and max). Deterministic and cheap (no resampling).
- `mann_whitney_greater`: the one-sided rank test that one set of samples tends to be larger than
  another (normal approximation with the tie correction; fine from about 8 samples a side).
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


def mann_whitney_greater(larger: Sequence[float], smaller: Sequence[float]) -> float:
    """One-sided p-value of the rank test that ``larger`` tends to exceed ``smaller``."""
    n1, n2 = len(larger), len(smaller)
    if not n1 or not n2:
        return 1.0
    pooled = sorted([(v, 0) for v in larger] + [(v, 1) for v in smaller])
    ranks = [0.0] * len(pooled)
    ties = 0.0
    i = 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        size = j - i + 1
        ties += size**3 - size
        i = j + 1
    rank_sum = sum(r for r, (_, group) in zip(ranks, pooled) if group == 0)
    u = rank_sum - n1 * (n1 + 1) / 2
    n = n1 + n2
    variance = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    if variance <= 0:
        return 1.0
    z = (u - n1 * n2 / 2 - 0.5) / math.sqrt(variance)  # continuity correction
    return 0.5 * math.erfc(z / math.sqrt(2))
