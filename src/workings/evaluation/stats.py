"""Confidence intervals and paired tests for rates measured on a finite set of questions.

A rate from 300 questions is an estimate; these functions say how far it may be from
the rate on questions like them, and whether two models asked the same questions differ
by more than chance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% by default).

    Unlike the normal approximation it stays inside [0, 1] and is not empty at 0 or n
    successes, which matters for a model that never gets the format right.
    """
    if n <= 0:
        raise ValueError(f"need at least one trial, got n={n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, {n}], got {successes}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends, not rounding residue
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def bootstrap_interval(values: Sequence[float], resamples: int = 2000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (seeded, so reproducible)."""
    import numpy as np

    if len(values) == 0:
        raise ValueError("need at least one value")
    data = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(resamples, len(data)))].mean(axis=1)
    lo, hi = np.percentile(means, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


@dataclass
class PairedComparison:
    """Two models on the same questions: who was right where, and whether the difference is chance."""

    n: int
    both: int  # right for A and B
    only_a: int  # right for A, wrong for B
    only_b: int  # wrong for A, right for B
    neither: int
    p_value: float  # exact two-sided McNemar test on the discordant questions
    difference: float  # rate of B minus rate of A
    difference_ci: tuple[float, float]  # paired bootstrap 95% interval of the difference

    @property
    def rate_a(self) -> float:
        """The share of the questions A got right."""
        return (self.both + self.only_a) / self.n

    @property
    def rate_b(self) -> float:
        """The share of the questions B got right."""
        return (self.both + self.only_b) / self.n

    @property
    def significant(self) -> bool:
        """B and A differ at the 5% level."""
        return self.p_value < 0.05


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: under "no difference" each discordant question is a fair coin.

    Returns 1.0 when there are no discordant questions.
    """
    if only_a < 0 or only_b < 0:
        raise ValueError("counts must be non-negative")
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def compare_paired(a: Sequence[bool], b: Sequence[bool], resamples: int = 2000, seed: int = 0) -> PairedComparison:
    """McNemar's exact test and a paired bootstrap interval for ``rate(b) - rate(a)``.

    ``a[i]`` and ``b[i]`` must be the two models' verdicts on the same question ``i``.
    """
    if len(a) != len(b):
        raise ValueError(f"paired verdicts need the same questions: {len(a)} vs {len(b)}")
    if not a:
        raise ValueError("need at least one question")
    both = sum(x and y for x, y in zip(a, b))
    only_a = sum(x and not y for x, y in zip(a, b))
    only_b = sum(y and not x for x, y in zip(a, b))
    diffs = [float(y) - float(x) for x, y in zip(a, b)]
    return PairedComparison(
        n=len(a), both=both, only_a=only_a, only_b=only_b, neither=len(a) - both - only_a - only_b,
        p_value=mcnemar_exact(only_a, only_b), difference=sum(diffs) / len(diffs),
        difference_ci=bootstrap_interval(diffs, resamples, seed),
    )


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 90, 99)) -> dict[str, float]:
    """Linear-interpolation percentiles (numpy's default), keyed ``p50``, ``p90``, …; empty input gives NaNs."""
    ordered = sorted(values)
    out = {}
    for q in qs:
        if not ordered:
            out[f"p{q:g}"] = float("nan")
            continue
        pos = (len(ordered) - 1) * q / 100
        lo, hi = math.floor(pos), math.ceil(pos)
        out[f"p{q:g}"] = ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
    return out
