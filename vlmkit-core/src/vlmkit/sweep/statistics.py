"""Mean, standard deviation and a paired confidence interval over seeds: what a sweep's table reports.

Variants of a sweep share their seeds, so a variant is compared with the baseline seed by seed (a paired
difference); its 95 % interval uses Student's t with n - 1 degrees of freedom. No scipy: the two-sided 95 %
quantiles below are the textbook table (df 1 to 30), and a Cornish-Fisher expansion beyond (error < 1e-3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Sequence

_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError("degrees of freedom must be at least 1")
    if df <= len(_T975):
        return _T975[df - 1]
    z = NormalDist().inv_cdf(0.975)
    return (z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * df ** 3))


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    sd: float  # sample standard deviation (n - 1); 0.0 for a single value


def summarise(values: Sequence[float]) -> Summary:
    n = len(values)
    if n == 0:
        return Summary(0, math.nan, math.nan)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return Summary(n, mean, sd)


@dataclass(frozen=True)
class Difference:
    n: int
    mean: float
    low: float  # 95 % interval; nan when there are fewer than two pairs
    high: float


def paired_difference(values: dict[int, float], baseline: dict[int, float]) -> Difference:
    """``values - baseline`` over the seeds both have, with a 95 % t interval."""
    seeds = sorted(set(values) & set(baseline))
    diffs = [values[s] - baseline[s] for s in seeds]
    s = summarise(diffs)
    if s.n < 2:
        return Difference(s.n, s.mean, math.nan, math.nan)
    half = t_quantile_975(s.n - 1) * s.sd / math.sqrt(s.n)
    return Difference(s.n, s.mean, s.mean - half, s.mean + half)
