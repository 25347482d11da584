"""How often the history's change-point method cries wolf, and how often it finds a 30 % step, on
simulated series (docs/history.md quotes the table printed here; ``python -m pytest benchmarks -s -k history``).

Each run's value is log-normal around one level with a between-run spread of sigma = 0.06 in log
space (two runs differ by up to about 17 %, as unchanged code does on the project's shared machine),
or heavy-tailed (Student t with 3 degrees of freedom, scale 0.04). A series of n runs has no
change (false alarm: any change point) or a 30 % step at its middle (found: exactly one change point,
at the step). No samples: the between-run test alone decides, as it does with real samples, which
pass the rank test for any shift.
"""

from __future__ import annotations

import math
import random

from segbench.output.history import Run, Series, analyse

TRIALS = 2000


def series(values: list[float]) -> Series:
    return Series({}, "latency_ms_median", [Run({"run_id": str(i)}, v, None, None, None) for i, v in enumerate(values)])


def test_false_alarms_and_power_of_the_change_point_method():
    rng = random.Random(1)
    print("\nruns | false alarms (log-normal) | false alarms (t3) | 30 % step found")
    for n in (8, 20, 50):
        alarms = heavy = found = 0
        for _ in range(TRIALS):
            noise = [math.exp(rng.gauss(0, 0.06)) for _ in range(n)]
            alarms += bool(analyse(series(noise), 0.1).change_points)
            tails = [math.exp(0.04 * rng.gauss(0, 1) / math.sqrt(rng.gammavariate(1.5, 1 / 1.5))) for _ in range(n)]
            heavy += bool(analyse(series(tails), 0.1).change_points)
            cut = n // 2
            stepped = analyse(series([v * (1.3 if i >= cut else 1) for i, v in enumerate(noise)]), 0.1)
            found += [c.index for c in stepped.change_points] == [cut]
        print(f"{n:4d} | {alarms / TRIALS:25.3f} | {heavy / TRIALS:17.3f} | {found / TRIALS:15.3f}")
        assert alarms / TRIALS < 0.03
