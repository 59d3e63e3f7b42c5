"""The step-timing statistics of `python -m harness perf`: the median's order-statistic interval is
checked against exact binomial coverage and by simulation with a known median. Pure, no TensorFlow."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from harness.tools import steptime


def _coverage(n: int, k: int) -> float:
    return 1.0 - 2.0 * sum(math.comb(n, i) for i in range(k)) / 2.0 ** n


@given(st.lists(st.floats(0.01, 100.0, allow_nan=False), min_size=1, max_size=40))
def test_interval_is_the_widest_k_that_still_covers(values):
    low, high = steptime.median_interval(values)
    n, ordered = len(values), sorted(values)
    if n < steptime.MIN_ROUNDS_FOR_INTERVAL:
        assert (low, high) == (None, None)
        return
    k = ordered.index(low) + 1 if ordered.count(low) == 1 else None
    assert low <= float(np.median(values)) <= high
    best = max(k for k in range(1, n // 2 + 1) if _coverage(n, k) >= 0.95)
    assert (low, high) == (ordered[best - 1], ordered[n - best])
    if k is not None and best + 1 <= n // 2:
        assert _coverage(n, best + 1) < 0.95  # one step narrower would not cover


def test_interval_covers_a_known_median_in_simulation():
    rng = np.random.default_rng(7)
    true_median = math.exp(0.2)  # lognormal(0.2, 0.3): skewed like step times
    hits = 0
    trials = 2000
    for _ in range(trials):
        low, high = steptime.median_interval(rng.lognormal(0.2, 0.3, size=9))
        hits += low <= true_median <= high
    assert 0.95 <= hits / trials <= 0.995  # exact coverage at n = 9 is 0.961


def test_five_rounds_cannot_give_a_95_interval_and_six_can():
    assert steptime.median_interval([1, 2, 3, 4, 5]) == (None, None)
    assert steptime.median_interval([6, 1, 5, 2, 4, 3]) == (1.0, 6.0)


def test_bad_confidence_is_refused():
    with pytest.raises(ValueError, match="confidence"):
        steptime.median_interval([1.0] * 10, confidence=1.0)


@settings(max_examples=50)
@given(st.floats(1e-5, 2.0), st.integers(1, 50), st.floats(0.0, 2000.0))
def test_rounds_last_at_least_round_ms_and_min_steps(step_s, min_steps, round_ms):
    steps = steptime.steps_per_round(step_s, min_steps, round_ms)
    assert steps >= min_steps and steps * step_s * 1000.0 >= round_ms * (1 - 1e-9)
    assert steps == min_steps or (steps - 1) * step_s * 1000.0 < round_ms


@given(st.lists(st.text(min_size=1), min_size=1, max_size=6, unique=True), st.integers(0, 100))
def test_rotation_keeps_every_model_once(names, index):
    order = steptime.rotated(names, index)
    assert sorted(order) == sorted(names) and order[0] == names[index % len(names)]


def test_ratios_are_per_round_against_the_reference():
    out = steptime.ratios_to({"float": [2.0, 4.0, 2.0, 2.0, 2.0, 2.0], "q": [3.0, 4.0, 3.0, 3.0, 3.0, 3.0]})
    assert set(out) == {"q"} and out["q"]["median"] == 1.5 and out["q"]["min"] == 1.0 and out["q"]["rounds"] == 6


def test_ratios_divide_by_the_fastest_float_of_each_round():
    # round 1: the XLA float is faster; round 2: the ops float is; the QAT model is 1.2x the faster one
    per_round = {"float": [2.0, 1.0] * 3, "float-xlastep": [1.0, 2.0] * 3, "q": [1.2, 1.2] * 3}
    out = steptime.ratios_to_fastest(per_round, ("float", "float-xlastep"))
    assert set(out) == {"float-xlastep", "q"}
    assert out["q"]["min"] == out["q"]["max"] == pytest.approx(1.2)
    assert out["float-xlastep"]["min"] == 1.0 and out["float-xlastep"]["max"] == 2.0


@given(st.lists(st.tuples(*[st.floats(0.1, 100.0)] * 3), min_size=6, max_size=12))
def test_no_float_configuration_is_faster_than_the_fastest(rounds):
    per_round = {"float": [r[0] for r in rounds], "float-b": [r[1] for r in rounds], "q": [r[2] for r in rounds]}
    out = steptime.ratios_to_fastest(per_round, ("float", "float-b"))
    assert out["float-b"]["min"] >= 1.0
    single = steptime.ratios_to(per_round)
    # dividing by a faster float can only raise a ratio, round by round, so the median too
    assert out["q"]["median"] >= single["q"]["median"] - 1e-12
