"""harness.results.seedstats: per-seed tests, Holm, pooled spread, variance components."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.results import seedstats

FAST = settings(max_examples=60, deadline=None, derandomize=True, database=None)
VALUES = st.lists(st.floats(-5, 5, allow_nan=False).map(lambda v: round(v, 3)), min_size=1, max_size=10)


@pytest.mark.parametrize("values, p", [
    ([1, 2, 3], 0.25),  # all one sign, 3 seeds: only the identity and its mirror reach |sum| = 6
    ([3, 1, 1], 0.25),
    ([3, -1, 1], 0.75),  # |±3±1±1| >= 3 in 6 of 8 sign vectors
    ([1, -1], 1.0),
    ([0, 0, 0], 1.0),
    ([], 1.0),
    ([2.0] * 6, 1 / 32),
])
def test_sign_flip_known_values(values, p):
    assert seedstats.sign_flip_p(values) == pytest.approx(p)


def test_sign_flip_is_vectorised_over_leading_axes():
    rng = np.random.default_rng(0)
    batch = rng.normal(0.3, 1, (50, 7))
    ps = seedstats.sign_flip_p(batch)
    assert ps.shape == (50,)
    assert all(ps[i] == seedstats.sign_flip_p(list(batch[i])) for i in range(50))


def test_monte_carlo_beyond_the_exact_limit_agrees_with_enumeration():
    values = np.random.default_rng(1).normal(0.4, 1, 17)
    exact = seedstats.sign_flip_p(values, max_exact=17)
    approx = seedstats.sign_flip_p(values, max_exact=16)
    assert approx == pytest.approx(exact, abs=0.005) and approx != exact
    assert seedstats.sign_flip_p(values) == approx  # fixed seed: deterministic


@FAST
@given(values=VALUES, scale=st.floats(0.1, 10))
def test_sign_flip_p_is_a_p_value(values, scale):
    p = seedstats.sign_flip_p(values)
    assert 0 < p <= 1
    assert p >= seedstats.min_sign_flip_p(len(values)) - 1e-12
    assert seedstats.sign_flip_p([-v for v in values]) == pytest.approx(p)
    assert seedstats.sign_flip_p([scale * v for v in values]) == pytest.approx(p)


def test_min_sign_flip_p():
    assert seedstats.min_sign_flip_p(3) == 0.25
    assert seedstats.min_sign_flip_p(6) == 1 / 32
    assert seedstats.min_sign_flip_p(0) == 1.0 and seedstats.min_sign_flip_p(1) == 1.0
    assert seedstats.best_holm_p(6, 2) == 1 / 16 and seedstats.best_holm_p(3, 4) == 1.0


def test_holm_known_values_and_nan():
    assert seedstats.holm([0.01, 0.04, 0.03]) == pytest.approx((0.03, 0.06, 0.06))
    adjusted = seedstats.holm([0.02, math.nan, 0.5])
    assert adjusted[0] == pytest.approx(0.04) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.5)
    assert seedstats.holm([]) == ()


@FAST
@given(ps=st.lists(st.floats(0, 1), min_size=1, max_size=12))
def test_holm_is_monotone_bounded_and_not_below_raw(ps):
    adjusted = seedstats.holm(ps)
    for raw, adj in zip(ps, adjusted):
        assert raw - 1e-12 <= adj <= 1.0
    for i in range(len(ps)):
        for j in range(len(ps)):
            if ps[i] <= ps[j]:
                assert adjusted[i] <= adjusted[j] + 1e-12
    assert min(adjusted) == pytest.approx(min(1.0, len(ps) * min(ps)))


def test_pooled_sd_and_mean_interval():
    sd, dof = seedstats.pooled_sd([[1, 3], [2, 4, 6], [7]])
    assert dof == 3 and sd == pytest.approx(math.sqrt(10 / 3))
    assert seedstats.pooled_sd([[1], [2]])[1] == 0 and math.isnan(seedstats.pooled_sd([[1]])[0])
    mean, low, high = seedstats.mean_interval([1, 2, 3])
    assert mean == 2 and high - mean == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5) and mean - low == high - mean
    assert math.isnan(seedstats.mean_interval([4.0])[1])


def test_satterthwaite():
    assert seedstats.satterthwaite([(2.0, 5)]) == pytest.approx(5)
    assert seedstats.satterthwaite([(1.0, 4), (1.0, 4)]) == pytest.approx(8)
    assert seedstats.satterthwaite([(1.0, 4), (100.0, 3)]) == pytest.approx(101 ** 2 / (1 / 4 + 100 ** 2 / 3))
    assert math.isinf(seedstats.satterthwaite([(1.0, math.inf)]))


def cells_from(table):
    return {(n, s): float(v) for s, row in enumerate(table) for n, v in enumerate(row, start=1)}


def test_noise_model_separates_a_pure_seed_shift():
    shifts = np.array([0.0, 1.0, 2.0])
    noise = seedstats.noise_model(cells_from(0.3 * np.arange(1, 7) + shifts[:, None]))
    assert noise.within == pytest.approx(1.0) and noise.seed_shift == pytest.approx(1.0)
    assert noise.seed_dof == 2 and noise.resid_ms == pytest.approx(0, abs=1e-12) and noise.seeds == 3


def test_noise_model_recovers_components():
    rng = np.random.default_rng(3)
    table = 0.2 * np.arange(1, 11) + rng.normal(0, 1.0, (100, 1)) + rng.normal(0, 0.5, (100, 10))
    noise = seedstats.noise_model(cells_from(table))
    assert noise.within == pytest.approx(1.25, rel=0.2)
    assert noise.seed_shift == pytest.approx(1.0, rel=0.25)
    assert noise.resid_ms == pytest.approx(0.25, rel=0.1)
    assert 80 <= noise.within_dof <= 200  # governed by the 99 seed dof, not by the 900 within-N dof
    pieces = noise.terms(0.0, run=True)
    assert sum(v for v, _ in pieces) == pytest.approx(noise.within)


def test_noise_model_without_replication_or_shared_seeds():
    assert seedstats.noise_model({(1, 0): 0.1, (2, 0): 0.2, (3, 0): 0.4}) is None
    unshared = seedstats.noise_model({(1, 0): 0.1, (1, 1): 0.3, (2, 2): 0.2, (2, 3): 0.6})
    assert unshared.seed_shift == 0 and unshared.seed_dof == 0 and unshared.within == pytest.approx((0.02 + 0.08) / 2)


def test_sampling_variance_of_a_paired_drop():
    record = {"n_test": 1000, "discordant": {"control_only": 30, "quant_only": 10}}
    assert seedstats.sampling_var_pp2(record) == pytest.approx((0.04 - 0.02 ** 2) / 1000 * 1e4)
    assert seedstats.sampling_var_pp2({"n_test": None, "discordant": None}) is None
    assert seedstats.sampling_var_pp2({"n_test": 0, "discordant": {"control_only": 1, "quant_only": 0}}) is None


def test_drop_of_and_cell_means():
    assert seedstats.drop_of({"status": "nan", "accuracy_drop_pp": 1.0}) is None
    assert seedstats.drop_of({"status": "passed", "accuracy_drop_pp": True}) is None
    assert seedstats.drop_of({"status": "failed", "accuracy_drop_pp": "2.5"}) == 2.5
    records = [{"n": 1, "seed": 0, "accuracy_drop_pp": 1.0}, {"n": 1, "seed": 0, "accuracy_drop_pp": 3.0},
               {"n": 1, "seed": 1, "accuracy_drop_pp": 5.0}, {"n": 2, "seed": 0, "accuracy_drop_pp": float("nan")}]
    cells = seedstats.cell_means(records)
    assert cells == {(1, 0): 2.0, (1, 1): 5.0}
    assert seedstats.by_seed(cells) == {0: {1: 2.0}, 1: {1: 5.0}}
