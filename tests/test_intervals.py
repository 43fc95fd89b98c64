"""The bootstrap interval covers a known difference about 95 % of the time, and every verdict
comes out in each of its outcomes."""

import numpy as np
import pytest

from lorasweep.analysis.intervals import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    Interval,
    bootstrap_mean,
    decide,
    paired_difference,
)


def test_paired_interval_covers_a_known_difference_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    true_difference, hits, trials = 0.3, 0, 400
    for _ in range(trials):
        task = rng.normal(size=30)
        a = task + true_difference + rng.normal(scale=0.5, size=30)
        b = task + rng.normal(scale=0.5, size=30)
        interval = paired_difference(a, b, draws=1000, seed=int(rng.integers(1 << 30)))
        hits += interval.low <= true_difference <= interval.high
    assert 0.91 <= hits / trials <= 0.98


def test_pairing_removes_the_shared_task_variation():
    rng = np.random.default_rng(2)
    task = rng.normal(scale=10, size=12)
    a, b = task + 1.0, task + rng.normal(scale=0.01, size=12)
    paired = paired_difference(a, b)
    assert paired.low > 0.9 and paired.high < 1.1
    unpaired = bootstrap_mean(a).high - bootstrap_mean(a).low
    assert unpaired > 10 * (paired.high - paired.low)


def test_the_bootstrap_is_the_same_on_every_call_and_one_unit_gives_no_interval():
    assert bootstrap_mean([1.0, 2.0, 4.0]) == bootstrap_mean([1.0, 2.0, 4.0])
    assert bootstrap_mean([3.0]) == Interval(3.0, 3.0, 3.0, 1)
    with pytest.raises(ValueError, match="paired samples differ"):
        paired_difference([1.0, 2.0], [1.0])


@pytest.mark.parametrize(
    ("low", "high", "below", "above"),
    [
        (0.01, 0.04, REPRODUCED, NOT_REPRODUCED),
        (0.06, 0.09, NOT_REPRODUCED, REPRODUCED),
        (0.03, 0.07, INCONCLUSIVE, INCONCLUSIVE),
    ],
)
def test_decide_in_every_outcome_for_claims_of_either_direction(low, high, below, above):
    interval = Interval((low + high) / 2, low, high, n=5)
    assert decide(interval, 0.05, holds_below=True) == below
    assert decide(interval, 0.05, holds_below=False) == above


def test_one_unit_is_inconclusive_however_far_from_the_threshold():
    assert decide(Interval(0.0, 0.0, 0.0, n=1), 0.05) == INCONCLUSIVE
