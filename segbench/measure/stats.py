"""Statistics of timing samples, distribution-free: machines are shared, and their times are skewed
by bursts of load, so nothing here assumes a normal distribution.

- `median_ci`: the exact order-statistic interval for a median: P(X(j) <= m <= X(n+1-j)) =
  1 - 2 P(Bin(n, 1/2) <= j - 1), at least ``confidence`` for any continuous distribution; it needs
  n >= 6 for 95 % (below that: min and max). Deterministic and cheap (no resampling): the timing
  loop evaluates it after every round. Checked against ``scipy.stats.binom`` in the tests.
- `across_processes`: the estimate and 95 % interval of a median timed in several worker processes
  (a random-effects estimate; per-call times still distribution-free, only the process medians are
  taken as lognormal, see there): the interval that covers a rerun in a new process.

The rank test of ``segbench compare`` is scipy's (`scipy.stats.mannwhitneyu`): exact for small
samples, maintained and tested upstream.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

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
    from scipy.stats import norm, t

    logs = [math.log(statistics.median(s)) for s in samples]
    centre = statistics.fmean(logs)
    variance = statistics.variance(logs)
    half = float(t.ppf((1 + CONFIDENCE) / 2, len(logs) - 1)) * math.sqrt(variance / len(logs))
    z = float(norm.ppf((1 + CONFIDENCE) / 2))
    within = statistics.fmean((_log_width(s) / z) ** 2 for s in samples)
    share = max(0.0, variance - within) / variance if variance > 0 else 0.0
    return Spread(math.exp(centre), math.exp(centre - half), math.exp(centre + half), share)


def _log_width(samples: Sequence[float]) -> float:
    """Half the width of the median's order-statistic interval of ``samples``, on the log scale."""
    low, high = median_ci(samples)
    return (math.log(high) - math.log(low)) / 2
