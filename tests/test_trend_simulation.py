"""Simulations with known ground truth for the trend verdict (harness/analysis/drop_trend.py).

Drops are simulated as level + slope * N + a shift per seed shared by every N of that seed (its float
control) + per-case noise, N = 1..5 as in the reference tier. Rates were measured with these fixed RNG
seeds; the bounds leave room for Monte Carlo error only.
"""

import numpy as np
from scipy import stats

from harness.analysis import drop_fit, drop_forms, drop_trend

NS = range(1, 6)
LINEAR = [drop_forms.FORMS_BY_NAME["linear"]]


def records(rng, seeds, slope, level=0.0, sd_seed=0.3, sd_case=0.3):
    out = []
    for seed in range(seeds):
        shift = rng.normal(0, sd_seed)
        out += [dict(status="passed", model="m", order="last", n=n, weight_bits=8, method="qat", seed=seed, units_total=5,
                     param_fraction=n / 5, accuracy_drop_pp=float(level + slope * n + shift + rng.normal(0, sd_case)))
                for n in NS]
    return out


def test_flat_data_give_no_trend_in_at_least_95_percent_of_runs():
    """A flat drop (0.4 pp at every N, and 0 pp), seed shift SD 0.3, noise SD 0.3, all five trend forms:
    measured 1.0% of these 300 runs with a trend. The old rule (best of the trend forms by AICc, always
    a formula) described every one of them as a trend."""
    rng = np.random.default_rng(31)
    fits = [drop_fit.fit_group(records(rng, seeds, 0.0, level)) for seeds, level in [(10, 0.4), (3, 0.4), (10, 0.0)] * 100]
    rate = np.mean([f.trend for f in fits])
    assert rate <= 0.05, rate
    assert all(f.best.form in drop_forms.FLAT and f.level[3] in (3, 10) for f in fits if not f.trend)
    assert all(f.trend_best.form not in drop_forms.FLAT for f in fits)


def test_a_real_slope_is_detected_with_high_probability():
    """0.3 pp per unit, same noise, 10 seeds, all forms: detected in all 150 runs (0.2 pp: 92% of 200)."""
    rng = np.random.default_rng(32)
    fits = [drop_fit.fit_group(records(rng, 10, 0.3)) for _ in range(150)]
    assert np.mean([f.trend for f in fits]) >= 0.9
    slopes = [f.best.params[0] for f in fits if f.trend and f.best.form == "linear"]
    assert len(slopes) > 50 and abs(np.mean(slopes) - 0.3) < 0.03


def wald_and_seed_cover(rng, seeds, slope=0.2):
    group = drop_fit.fit_group(records(rng, seeds, slope, sd_seed=0.6, sd_case=0.2), forms=LINEAR)
    fit = group.trend_best
    return fit.ci_low[0] <= slope <= fit.ci_high[0], fit.seed_low[0] <= slope <= fit.seed_high[0]


def test_seed_level_intervals_cover_the_true_slope_under_a_shared_seed_shift():
    """A seed shift SD 0.6 pp shared by every N (noise 0.2 pp), a line through the origin, 5 seeds, 600 runs:
    the seed-level interval (per-seed slopes, t over seeds) covered the true slope in 96%; the Wald interval
    on the N means, which treats the shared shift as independent noise, in 47%."""
    rng = np.random.default_rng(33)
    wald, seed = np.array([wald_and_seed_cover(rng, 5) for _ in range(600)]).T
    assert 0.92 <= seed.mean() <= 0.98, seed.mean()
    assert wald.mean() < 0.85, wald.mean()


def test_seed_level_interval_is_the_t_interval_of_per_seed_slopes():
    rng = np.random.default_rng(34)
    rows = records(rng, 6, 0.2)
    group = drop_fit.fit_group(rows, forms=LINEAR)
    per_seed = []
    for seed in range(6):
        n = np.array([r["n"] for r in rows if r["seed"] == seed], float)
        y = np.array([r["accuracy_drop_pp"] for r in rows if r["seed"] == seed])
        per_seed.append(float(n @ y / (n @ n)))
    half = stats.t.ppf(0.975, 5) * np.std(per_seed, ddof=1) / np.sqrt(6)
    fit = group.trend_best
    assert np.isclose(fit.params[0], np.mean(per_seed)) and np.isclose(fit.seed_high[0] - fit.params[0], half)


def test_leave_one_seed_out_error_is_one_runs_error_and_skips_n_zero():
    """N = 0 with every drop 0 is not fitted; the held-out error of one run is near its own SD, not the
    SD of a 10-seed mean."""
    rng = np.random.default_rng(35)
    rows = records(rng, 10, 0.3, sd_seed=0.0, sd_case=0.4)
    rows += [dict(rows[0], n=0, seed=s, accuracy_drop_pp=0.0) for s in range(10)]
    group = drop_fit.fit_group(rows, forms=LINEAR)
    assert group.zero_by_construction and 0 not in group.n_values
    assert 0.3 < group.trend_best.loso_rmse < 0.55, group.trend_best.loso_rmse


def test_a_fit_at_a_bound_is_read_as_a_bound():
    step = drop_forms.fit_form(drop_forms.FORMS_BY_NAME["saturating"], [1, 2, 3, 4, 5], [0.5, 0.5, 0.5, 0.5, 0.5])
    assert step.at_bound and drop_trend.bound_reading(step).startswith("a step: ≈ 0.5 pp at every N ≥ 1")
    assert drop_trend.bound_reading(drop_forms.fit_form(drop_forms.FORMS_BY_NAME["linear"], [1, 2, 3], [1, 2, 3.1])) == ""
