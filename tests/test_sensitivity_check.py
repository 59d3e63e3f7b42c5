"""harness.analysis.sensitivity_check on synthetic single-order records of known rank correlation
(issue 17, item 1). Pure: no TensorFlow."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import stats

from harness.analysis import sensitivity_check as sc


def single_records(drops_by_seed, model="mlp", bits=8, method="qat", status="passed"):
    """Records of ``single`` cases: drops_by_seed = {seed: [drop of unit 0, unit 1, ...]}."""
    return [{"model": model, "order": "single", "n": unit, "weight_bits": bits, "method": method, "seed": seed,
             "status": status, "accuracy_drop_pp": drop}
            for seed, drops in drops_by_seed.items() for unit, drop in enumerate(drops)]


SCORES = [0.1, 0.5, 0.2, 3.0, 1.0, 0.05]
RANKED_DROPS = [0.0, 0.4, 0.1, 1.5, 0.6, -0.1]  # the same order as SCORES


@given(st.lists(st.tuples(st.integers(-5, 5), st.integers(-5, 5)), min_size=3, max_size=20))
def test_spearman_matches_scipy_with_ties(pairs):
    x, y = [float(a) for a, _ in pairs], [float(b) for _, b in pairs]
    ours = sc.spearman(x, y)
    if len(set(x)) == 1 or len(set(y)) == 1:
        assert ours is None
    else:
        assert ours == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


@settings(max_examples=50)
@given(st.lists(st.integers(-100, 100), min_size=4, max_size=12, unique=True),  # distinct after exp()
       st.lists(st.floats(-1, 1), min_size=5, max_size=5))
def test_monotone_drops_give_rho_one_whatever_the_per_seed_shift(scores, shifts):
    # each seed shifts every drop alike (a per-seed control effect): ranks, and so rho, are unchanged
    drops = {seed: [math.exp(s / 50) + shift for s in scores] for seed, shift in enumerate(shifts)}
    [result] = sc.spearman_check(single_records(drops), {("mlp", 8): dict(enumerate(scores))}, resamples=200)
    assert result.rho == pytest.approx(1.0)
    assert all(v == pytest.approx(1.0) for v in result.per_seed.values())
    assert result.interval == pytest.approx((1.0, 1.0))
    assert result.verdict == sc.AGREES and result.seeds == (0, 1, 2, 3, 4)


def test_reversed_drops_disagree():
    drops = {seed: [-d + seed for d in RANKED_DROPS] for seed in range(5)}
    [result] = sc.spearman_check(single_records(drops), {("mlp", 8): dict(enumerate(SCORES))})
    assert result.rho == pytest.approx(-1.0)
    assert result.verdict == sc.DISAGREES


def test_seeds_that_disagree_widen_the_interval_to_unclear():
    # the mean drop still ranks like the score (the reversed seeds are scaled by 0.9), but resampled
    # seeds reverse it often: the interval, not the point estimate, must carry the disagreement
    reversed_drops = [-0.9 * d for d in RANKED_DROPS]
    drops = {0: RANKED_DROPS, 1: reversed_drops, 2: RANKED_DROPS, 3: reversed_drops, 4: RANKED_DROPS,
             5: reversed_drops}
    [result] = sc.spearman_check(single_records(drops), {("mlp", 8): dict(enumerate(SCORES))})
    assert result.per_seed == pytest.approx({0: 1.0, 1: -1.0, 2: 1.0, 3: -1.0, 4: 1.0, 5: -1.0})
    assert result.rho == pytest.approx(1.0)
    assert result.interval[0] < 0 < result.interval[1]
    assert result.verdict == sc.UNCLEAR


def test_known_partial_correlation():
    # swapping the two top-ranked drops of 6 units: rho = 1 - 6*2/(6*35) = 0.942857...
    drops = list(RANKED_DROPS)
    drops[3], drops[4] = drops[4], drops[3]
    [result] = sc.spearman_check(single_records({0: drops, 1: drops}), {("mlp", 8): dict(enumerate(SCORES))})
    assert result.rho == pytest.approx(1 - 6 * 2 / (6 * 35))


def test_too_few_units_and_too_few_seeds_cannot_be_judged():
    three = {("mlp", 8): {0: 1.0, 1: 2.0, 2: 3.0}}
    [few_units] = sc.spearman_check(single_records({0: [0.1, 0.2, 0.3], 1: [0.1, 0.2, 0.3]}), three)
    assert few_units.verdict == sc.TOO_FEW_UNITS and few_units.rho is None and few_units.interval is None
    [one_seed] = sc.spearman_check(single_records({0: RANKED_DROPS}), {("mlp", 8): dict(enumerate(SCORES))})
    assert one_seed.verdict == sc.TOO_FEW_SEEDS and one_seed.interval is None
    assert one_seed.rho == pytest.approx(1.0)
    # two seeds that agree perfectly: an interval, but 3 distinct resamples cannot support a verdict
    [two_seeds] = sc.spearman_check(single_records({0: RANKED_DROPS, 1: RANKED_DROPS}),
                                    {("mlp", 8): dict(enumerate(SCORES))})
    assert two_seeds.interval == pytest.approx((1.0, 1.0)) and two_seeds.verdict == sc.TOO_FEW_SEEDS
    # a seed missing a unit is not complete: it gives no bootstrap sample
    partial = single_records({0: RANKED_DROPS, 1: RANKED_DROPS})[:-1]
    [incomplete] = sc.spearman_check(partial, {("mlp", 8): dict(enumerate(SCORES))})
    assert incomplete.seeds == (0,) and incomplete.verdict == sc.TOO_FEW_SEEDS


def test_constant_drops_are_undefined():
    [result] = sc.spearman_check(single_records({0: [0.0] * 6, 1: [0.0] * 6}), {("mlp", 8): dict(enumerate(SCORES))})
    assert result.rho is None and result.verdict == sc.UNDEFINED


def test_only_measured_single_cases_of_the_scored_group_count():
    records = single_records({0: RANKED_DROPS, 1: RANKED_DROPS})
    noise = [dict(r, order="last", accuracy_drop_pp=-r["accuracy_drop_pp"]) for r in records]
    broken = [dict(r, status="error", accuracy_drop_pp=-r["accuracy_drop_pp"]) for r in records]
    other_bits = single_records({0: RANKED_DROPS}, bits=4)  # no 4-bit scores: no group
    results = sc.spearman_check(records + noise + broken + other_bits, {("mlp", 8): dict(enumerate(SCORES))})
    assert [(r.model, r.bits, r.rho) for r in results] == [("mlp", 8, pytest.approx(1.0))]


def sens_record(seed, key, scores, bits=8):
    return {"model": "mlp", "order": "sensitivity", "seed": seed, "status": "passed",
            "sensitivity": {"bits": bits, "pretrained_key": key,
                            "units": [{"index": i, "score": s} for i, s in enumerate(scores)]}}


def test_scores_from_records_one_pretrained_model_or_one_per_seed():
    shared = [sens_record(0, "k0", SCORES), sens_record(1, "k0", SCORES)]
    assert sc.scores_from_records(shared) == {("mlp", 8): dict(enumerate(SCORES))}
    reversed_scores = [-s for s in SCORES]
    per_seed = [sens_record(0, "k0", SCORES), sens_record(1, "k1", reversed_scores)]
    found = sc.scores_from_records(per_seed + [{"model": "mlp", "sensitivity": None}])
    assert found == {("mlp", 8, 0): dict(enumerate(SCORES)), ("mlp", 8, 1): dict(enumerate(reversed_scores))}


@given(st.permutations(range(6)))
def test_unit_labels_do_not_matter(permutation):
    # relabelling units consistently in scores and drops leaves rho unchanged
    scores = {permutation[i]: s for i, s in enumerate(SCORES)}
    drops = [0.0] * 6
    for i, d in enumerate(RANKED_DROPS):
        drops[permutation[i]] = d
    [result] = sc.spearman_check(single_records({0: drops, 1: drops}), {("mlp", 8): scores}, resamples=50)
    assert result.rho == pytest.approx(1.0)
    assert sc.describe([result])[0].startswith("mlp W8 qat: Spearman rho +1.00 [+1.00, +1.00] over 6 units")


def test_each_seed_is_ranked_against_its_own_pretrained_models_scores():
    # seed 1 pre-trained a different model whose scores are reversed, and its drops follow them
    reversed_scores = [-s for s in SCORES]
    scores = {("mlp", 8, 0): dict(enumerate(SCORES)), ("mlp", 8, 1): dict(enumerate(reversed_scores))}
    drops = {0: RANKED_DROPS, 1: [-d for d in RANKED_DROPS], 2: RANKED_DROPS}  # seed 2 has no scores
    [result] = sc.spearman_check(single_records(drops), scores)
    assert result.per_seed == pytest.approx({0: 1.0, 1: 1.0})
    assert result.seeds == (0, 1)


def test_the_report_has_the_spearman_section_only_with_scores_and_single_cases(tmp_path):
    from harness.analysis import report

    singles = single_records({0: RANKED_DROPS, 1: RANKED_DROPS, 2: RANKED_DROPS})
    scored = [sens_record(0, "k0", SCORES)]
    lines = report.spearman_section(singles + scored)
    assert lines[0].startswith("## Sensitivity score vs measured single-unit drop")
    assert any("mlp W8 qat: Spearman rho +1.00" in line for line in lines)
    assert report.spearman_section(singles) == [] and report.spearman_section(scored) == []


def test_permutation_p_is_exact_over_the_orderings_of_the_units():
    """5 units: 120 orderings; rho >= 0.7 in 14 of them (0.117), as the issue's count; perfect agreement
    in 1 (1/120). A random ranking is what a bootstrap over seeds cannot rule out."""
    scores = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert sc.permutation_p(scores, [1, 2, 3, 4, 5]) == 1 / 120
    p = sc.permutation_p(scores, [2, 1, 3, 5, 4])  # rho = +0.8
    rhos = [sc.spearman(scores, list(o)) for o in itertools.permutations([1, 2, 3, 4, 5])]
    assert p == sum(r >= 0.8 - 1e-9 for r in rhos) / 120
    assert sum(r >= 0.7 - 1e-9 for r in rhos) == 14
    assert sc.permutation_p(scores, [5, 4, 3, 2, 1]) == 1 / 120  # the lower tail for rho < 0
    assert sc.permutation_p(scores, [1, 1, 1, 1, 1]) is None


def test_permutation_p_under_no_relation_is_uniform_enough():
    """Scores unrelated to the drops, 6 units (exact) and 10 units (Monte Carlo): P(p < 0.05) <= 0.05."""
    rng = np.random.default_rng(3)
    for units, runs in ((6, 400), (10, 60)):
        ps = [sc.permutation_p(rng.normal(size=units), rng.normal(size=units), draws=2000)
              for _ in range(runs)]
        assert np.mean(np.array(ps) < 0.05) <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / runs), units


def test_a_high_rho_over_five_units_is_not_agreement_without_beating_chance():
    result = sc._verdict(5, 10, 0.7, (0.6, 1.0), perm_p=0.117)
    assert result == sc.UNCLEAR
    assert sc._verdict(5, 10, 1.0, (0.9, 1.0), perm_p=1 / 120) == sc.AGREES
