"""Statistics of timing samples, distribution-free: machines are shared, and their times are skewed
by bursts of load, so nothing here assumes a normal distribution.

- `median_ci`: the exact order-statistic interval for a median: P(X(j) <= m <= X(n+1-j)) =
  1 - 2 P(Bin(n, 1/2) <= j - 1), at least ``confidence`` for any continuous distribution; it needs
  n >= 6 for 95 % (below that: min and max). Deterministic and cheap (no resampling).
- `across_processes`: the estimate and 95 % interval of a median timed in several worker processes
  (a random-effects estimate, see there): the interval that covers a rerun in a new process.
- `mann_whitney_greater`: the one-sided rank test that one set of samples tends to be larger than
  another (normal approximation with the tie correction; fine from about 8 samples a side).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95
#: Two-sided 95 % quantiles of Student's t for 1..9 degrees of freedom (beyond: `t_quantile`'s series).
T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262)
Z95 = 1.959964


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


def t_quantile(df: int) -> float:
    """The two-sided 95 % quantile of Student's t with ``df`` degrees of freedom (table to 9, then the
    Cornish-Fisher series, within 0.005 from 10 on)."""
    if df <= len(T95):
        return T95[df - 1]
    z = Z95
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class Spread:
    """A median timed in several processes: the estimate, its 95 % interval, and the share of the
    variance of a process's median that lies between processes (None for one process)."""

    median: float
    low: float
    high: float
    between_share: float | None


def across_processes(samples: Sequence[Sequence[float]]) -> Spread:
    """The median of a quantity timed in several worker processes (``samples``: one list per process),
    with a 95 % interval that holds both the within- and the between-process variance.

    A random-effects estimate on the log scale (times and ratios are multiplicative): each process
    contributes the log of its own median (distribution-free within the process); the estimate is
    their mean, and its interval the t interval over processes (N - 1 degrees of freedom). The
    spread of the process medians holds both components (var = between + within / n), so no
    model of the within-process distribution is needed; only the process medians are taken as
    roughly normal on the log scale. Every process counts alike, however many samples it took.
    One process: its median and the order-statistic interval (`median_ci`), exactly as before.

    The between-process share is ``max(0, var - w) / var``: ``var`` the variance of the log process
    medians, ``w`` the mean within-process variance of one (each from the width of its own
    order-statistic interval, as a normal one). A resampling alternative, the hierarchical
    bootstrap (processes, then samples), was not chosen: with 3 processes its percentile interval
    cannot reach 95 % (all three process medians fall on one side of the centre 25 % of the time).
    """
    if len(samples) == 1:
        low, high = median_ci(samples[0])
        return Spread(statistics.median(samples[0]), low, high, None)
    logs = [math.log(statistics.median(s)) for s in samples]
    centre = statistics.fmean(logs)
    variance = statistics.variance(logs)
    half = t_quantile(len(logs) - 1) * math.sqrt(variance / len(logs))
    within = statistics.fmean(_log_width(s) ** 2 for s in samples)
    share = max(0.0, variance - within) / variance if variance > 0 else 0.0
    return Spread(math.exp(centre), math.exp(centre - half), math.exp(centre + half), share)


def _log_width(samples: Sequence[float]) -> float:
    """The standard error of the log median of ``samples``, read off its 95 % order-statistic interval."""
    low, high = median_ci(samples)
    return (math.log(high) - math.log(low)) / (2 * Z95)


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
