"""Uncertainty for the verdicts: a percentile bootstrap over independent units (task
replicates, or the seeds of one task), and the rule that turns an interval into a verdict.

A claim states a threshold before the data are seen ("within 5 % of σ²"). It is reproduced when
the whole 95 % interval lies on the claim's side of the threshold, not reproduced when the whole
interval lies on the other side, and inconclusive when the interval straddles it (Efron and
Tibshirani, *An Introduction to the Bootstrap*, 1993, ch. 13, for the percentile interval).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"

LEVEL = 0.95
DRAWS = 4000
SEED = 0
"""The bootstrap's fixed settings: a report's intervals are the same on every rerun."""


@dataclass(frozen=True)
class Interval:
    """An estimate with its ``LEVEL`` interval over ``n`` units (``low``/``high`` are the
    estimate itself for one unit, where no interval exists)."""

    estimate: float
    low: float
    high: float
    n: int


def bootstrap_mean(values, draws: int = DRAWS, level: float = LEVEL, seed: int = SEED) -> Interval:
    """The mean of ``values`` (one per unit) with its percentile-bootstrap interval."""
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError("bootstrap_mean needs a non-empty 1-d sequence, one value per unit")
    estimate = float(x.mean())
    if len(x) == 1:
        return Interval(estimate, estimate, estimate, 1)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(draws, len(x)))].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Interval(estimate, float(low), float(high), len(x))


def paired_difference(a, b, **kwargs) -> Interval:
    """The mean of ``a − b`` over paired units (runs sharing a task replicate and seed)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.shape} vs {b.shape}")
    return bootstrap_mean(a - b, **kwargs)


def decide(interval: Interval, threshold: float, holds_below: bool = True) -> str:
    """The verdict on a claim that the quantity is below ``threshold`` (or above it when
    ``holds_below`` is false). One unit gives no interval, hence no verdict but inconclusive."""
    if interval.n < 2:
        return INCONCLUSIVE
    low, high = (interval.low, interval.high) if holds_below else (-interval.high, -interval.low)
    bound = threshold if holds_below else -threshold
    if high < bound:
        return REPRODUCED
    if low > bound:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def decide_within(interval: Interval, low: float, high: float) -> str:
    """The verdict on a claim that the quantity lies in [``low``, ``high``]: reproduced when the
    whole interval lies inside, not reproduced when it lies wholly outside, else inconclusive."""
    if interval.n < 2:
        return INCONCLUSIVE
    if low <= interval.low and interval.high <= high:
        return REPRODUCED
    if interval.high < low or interval.low > high:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def nearest_bound(estimate: float, low: float, high: float) -> float:
    """Of a range's two ends, the one nearer ``estimate`` (the threshold a range claim reports)."""
    return low if abs(estimate - low) <= abs(estimate - high) else high
