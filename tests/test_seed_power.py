"""harness.analysis.seed_power: the detectable effect at 80% power of the exact sign-flip test over seeds,
checked against simulations with a known true effect. Pure: no TensorFlow."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.analysis import seed_power
from harness.results import seedstats


@settings(max_examples=80, deadline=None)
@given(st.lists(st.one_of(st.floats(-5, 5, allow_nan=False), st.sampled_from([0.0, 0.5, -0.5, 1.0])),
                min_size=1, max_size=12))
def test_exact_p_is_the_analysiss_sign_flip_p(values):
    assert seed_power.exact_p(values) == pytest.approx(seedstats.sign_flip_p(values), abs=1e-12)


def test_exact_p_beyond_the_enumerated_range_is_exact():
    values = np.full(20, 0.3)  # all of one sign: 2 of 2^20 sign vectors are as extreme
    assert seed_power.exact_p(values) == pytest.approx(2 / 2 ** 20)
    assert seed_power.exact_p(np.r_[values, -values]) == 1.0


def simulated_power(effect, sd, seeds, bar, runs=2000, rng_seed=123):
    """An independent simulation: true effect known, the analysis's own test, another random stream."""
    rng = np.random.default_rng(rng_seed)
    values = effect + sd * rng.standard_normal((runs, seeds))
    return float(np.mean(seedstats.sign_flip_p(values) < bar))


@pytest.mark.parametrize("seeds,sd,family", [(10, 0.3, 1), (12, 0.25, 4)])
def test_at_the_detectable_effect_a_known_effect_is_found_80_percent_of_the_time(seeds, sd, family):
    effect = seed_power.detectable_effect(seeds, sd, family=family)
    bar = 0.05 / family
    found = simulated_power(effect, sd, seeds, bar)
    assert abs(found - 0.8) < 0.04, (effect, found)  # 2,000 runs: binomial SE 0.009, plus the bisection's
    assert simulated_power(0.7 * effect, sd, seeds, bar) < 0.7  # a smaller true effect is missed more often
    assert simulated_power(0.0, sd, seeds, bar) <= bar + 0.01  # and no effect is found at the test's level


def test_many_seeds_approach_the_t_tests_detectable_effect():
    # 24 normal values: the permutation test is about as efficient as the t test: (t_.975 + t_.80) / sqrt(24)
    # = 0.60 (0.57 with normal quantiles)
    effect = seed_power.detectable_effect(24, 1.0, draws=600)
    assert 0.54 < effect < 0.65


def test_the_effect_scales_with_the_sd_and_shrinks_with_seeds():
    one = seed_power.detectable_effect(10, 1.0, draws=500)
    assert seed_power.detectable_effect(10, 0.2, draws=500) == pytest.approx(0.2 * one)
    assert seed_power.detectable_effect(16, 1.0, draws=500) < one


def test_seeds_that_cannot_reach_the_level_detect_nothing():
    assert seed_power.detectable_effect(5, 0.3) == math.inf  # 2/32 >= 0.05
    assert seed_power.detectable_effect(8, 0.3, family=13) == math.inf  # 2/256 >= 0.05/13
    assert seed_power.detectable_effect(10, 0.3, family=13) < math.inf  # 2/1024 < 0.05/13


def test_seeds_needed_is_the_first_k_whose_effect_fits():
    k = seed_power.seeds_needed(0.5, 0.4, draws=400)
    assert seed_power.detectable_effect(k, 0.4, draws=400) <= 0.5 < seed_power.detectable_effect(k - 1, 0.4, draws=400)
    with pytest.raises(ValueError, match="more than 8 seeds"):
        seed_power.seeds_needed(0.01, 1.0, max_seeds=8, draws=100)


def test_beyond_the_subset_range_the_analysiss_random_signs_are_used():
    # 30 seeds: (t_.975 + t_.80) / sqrt(30) = 0.53 (0.51 with normal quantiles)
    assert 0.45 < seed_power.detectable_effect(30, 1.0, draws=300) < 0.62
