"""harness.analysis.order_test: last-vs-first test at the seed level, on constructed effects."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.analysis import order_test
from harness.design.family import Family, OrderComparison
from harness.results import seedstats

UNITS = 10


def paired_records(effect, ns=range(1, UNITS), seeds=range(8), noise=0.05, seed_shift=1.0, rng_seed=0, model="m",
                   bits=8, first_seeds=None, fraction=lambda order, n: n / UNITS):
    """drop_first - drop_last = effect + noise for every (n, seed); each seed shifts all its drops alike."""
    rng = np.random.default_rng(rng_seed)
    out = []
    for seed in seeds:
        shift = float(rng.normal(0, seed_shift))
        for n in ns:
            last = 0.2 * n + shift + float(rng.normal(0, noise))
            first = last + effect + float(rng.normal(0, noise))
            base = dict(status="passed", model=model, n=n, weight_bits=bits, method="qat", units_total=UNITS)
            out.append(dict(base, order="last", seed=seed, accuracy_drop_pp=last, param_fraction=fraction("last", n)))
            out.append(dict(base, order="first", seed=seed if first_seeds is None else first_seeds[seed],
                            accuracy_drop_pp=first, param_fraction=fraction("first", n)))
    return out


@settings(max_examples=20, deadline=None, derandomize=True, database=None)
@given(effect=st.floats(0.3, 3.0), sign=st.sampled_from([1, -1]), rng_seed=st.integers(0, 2**31))
def test_detects_constructed_effect_in_either_direction(effect, sign, rng_seed):
    (result,) = order_test.compare_orders(paired_records(sign * effect, rng_seed=rng_seed))
    assert result.n_seeds == 8 and result.n_pairs == 8 * (UNITS - 1)
    assert result.p_value == pytest.approx(2 / 2 ** 8)  # every seed agrees in sign
    assert result.by_n.p_holm == pytest.approx(2 / 2 ** 8)  # one declared matching: a family of one
    assert result.verdict == (order_test.FINAL_CHEAPER if sign > 0 else order_test.FIRST_CHEAPER)
    assert result.by_n.mean_diff_pp == pytest.approx(sign * effect, abs=0.05)
    # the other matching is described, never tested: it would count one seed's drops twice
    assert result.by_fraction.verdict == order_test.NOT_TESTED and not result.by_fraction.counted


def test_per_seed_values_are_kept_and_are_means_over_matched_n():
    records = paired_records(1.0, seeds=range(3))
    (result,) = order_test.compare_orders(records)
    for seed, value, points in result.by_n.seed_values:
        diffs = [f["accuracy_drop_pp"] - l["accuracy_drop_pp"] for f in records for l in records
                 if f["order"] == "first" and l["order"] == "last" and f["seed"] == l["seed"] == seed and f["n"] == l["n"]]
        assert points == UNITS - 1 and value == pytest.approx(np.mean(diffs))
    assert result.p_value == seedstats.sign_flip_p([v for _, v, _ in result.by_n.seed_values])


def test_three_seeds_are_too_few_and_the_sentence_says_why():
    (result,) = order_test.compare_orders(paired_records(2.0, seeds=range(3)))
    assert result.verdict == order_test.TOO_FEW and result.p_value == pytest.approx(0.25)
    n_sentence, f_sentence = result.sentences()
    assert n_sentence.startswith("m w8 qat: quantizing the last N costs 2.0")
    for part in ("pp less than the first N", "3 seeds", "matched on N", "sign-flip p = 0.25", "not counted in the family",
                 "too few pairs", "gives p = 0.25 at best", "not counted in Holm"):
        assert part in n_sentence, part
    assert "matched on the share of weights quantized" in f_sentence and "descriptive" in f_sentence
    assert result.tests_in_family == 0 and not result.test.counted and result.test.declared


def test_six_seeds_alone_can_be_significant_but_not_after_holm_over_two_comparisons():
    (alone,) = order_test.compare_orders(paired_records(2.0, seeds=range(6)))
    assert alone.p_value == pytest.approx(1 / 32) and alone.verdict == order_test.FINAL_CHEAPER
    two = order_test.compare_orders(paired_records(2.0, seeds=range(6)) + paired_records(2.0, seeds=range(6), model="x"))
    assert all(r.verdict == order_test.TOO_FEW and r.test.counted and r.tests_in_family == 2 for r in two)
    assert two[0].by_n.best_p_holm == pytest.approx(1 / 16)


def test_a_test_that_cannot_reach_alpha_is_reported_but_not_counted():
    """5 seeds: the smallest two-sided sign-flip p is 2/32 > 0.05, so the test only dilutes the family."""
    records = paired_records(2.0, seeds=range(8)) + paired_records(2.0, seeds=range(5), model="x")
    counted, left = order_test.compare_orders(records)
    assert counted.tests_in_family == 1 and counted.by_n.p_holm == pytest.approx(2 / 2 ** 8)
    assert left.verdict == order_test.TOO_FEW and not left.test.counted and np.isnan(left.test.p_holm)
    text = order_test.family_text((counted, left))
    assert "Holm over 1 test(s)" in text and "m W8 QAT (N)" in text and "x W8 QAT (N), 5 seeds" in text


def test_balanced_differences_are_not_significant():
    records = paired_records(0.0, noise=0.0)
    for r in records:
        if r["order"] == "first":
            r["accuracy_drop_pp"] += 0.3 * (1 if r["seed"] % 2 else -1) * (1 + r["seed"] / 10)
    (result,) = order_test.compare_orders(records)
    assert result.verdict == order_test.NO_DIFFERENCE and result.p_value > 0.5


def test_all_zero_differences_are_no_difference():
    (result,) = order_test.compare_orders(paired_records(0.0, noise=0.0))
    assert result.verdict == order_test.NO_DIFFERENCE and result.p_value == 1.0


def test_fraction_matching_removes_a_difference_that_is_only_about_weight_share():
    """Last units hold most weights; the drop depends on the quantized share only. Matched on N,
    the last N look costlier; matched on share, there is no difference."""
    sizes = [1, 1, 1, 1, 2, 2, 4, 8, 30, 50]
    share = {"first": lambda n: sum(sizes[:n]) / 100, "last": lambda n: sum(sizes[UNITS - n:]) / 100}
    records = []
    rng = np.random.default_rng(5)
    for seed in range(8):
        shift = rng.normal(0, 1)
        for order in ("first", "last"):
            for n in range(0, UNITS + 1):
                f = share[order](n)
                records.append(dict(status="passed", model="m", order=order, n=n, weight_bits=8, method="qat", seed=seed,
                                    units_total=UNITS, param_fraction=f, accuracy_drop_pp=5 * f + shift + rng.normal(0, 0.02)))
    (by_n,) = order_test.compare_orders(records)
    assert by_n.verdict == order_test.FIRST_CHEAPER and by_n.by_n.mean_diff_pp < -1
    declared = Family("t", (OrderComparison("m", 8, "qat", "share"),))
    (result,) = order_test.compare_orders(records, family=declared)
    assert result.primary == "fraction" and result.registered and result.test is result.by_fraction
    assert result.verdict == order_test.NO_DIFFERENCE and abs(result.by_fraction.mean_diff_pp) < 0.05
    assert result.by_n.verdict == order_test.NOT_TESTED and result.sentences()[0] == result.sentence(result.by_fraction)


def test_fraction_matching_interpolates_only_between_measured_first_points():
    base = dict(status="passed", model="m", weight_bits=8, method="qat", seed=0, units_total=UNITS)
    records = [dict(base, order="first", n=2, param_fraction=0.2, accuracy_drop_pp=1.0),
               dict(base, order="first", n=6, param_fraction=0.6, accuracy_drop_pp=3.0),
               dict(base, order="last", n=3, param_fraction=0.4, accuracy_drop_pp=1.5),
               dict(base, order="last", n=1, param_fraction=0.1, accuracy_drop_pp=0.1),  # below: no anchor at 0
               dict(base, order="last", n=8, param_fraction=0.9, accuracy_drop_pp=0.1)]  # above
    (result,) = order_test.compare_orders(records)
    assert result.by_fraction.seed_values == ((0, pytest.approx(0.5), 1),)
    assert result.by_n.seed_values == ()  # no N measured in both orders
    assert result.by_n.verdict == order_test.TOO_FEW and "no seed has comparable points" in result.sentences()[0]


def test_holm_runs_over_every_group_with_its_one_matching():
    records = paired_records(1.0) + paired_records(0.0, model="other", rng_seed=3) + paired_records(-0.5, bits=4)
    results = order_test.compare_orders(records)
    expected = seedstats.holm([r.by_n.p_value for r in results])
    assert [r.by_n.p_holm for r in results] == pytest.approx(list(expected))
    assert all(np.isnan(r.by_fraction.p_holm) for r in results) and all(r.tests_in_family == 3 for r in results)


def test_a_declared_model_counts_only_its_declared_groups():
    records = paired_records(1.0) + paired_records(1.0, bits=4, rng_seed=2)
    declared = Family("t", (OrderComparison("m", 4, "qat", "n"),))
    w4, w8 = sorted(order_test.compare_orders(records, family=declared), key=lambda r: r.weight_bits)
    assert w4.test.counted and w4.tests_in_family == 1 and w4.by_n.p_holm == pytest.approx(2 / 2 ** 8)
    assert w8.primary == "" and w8.verdict == order_test.NOT_TESTED and not w8.by_n.counted
    with pytest.raises(ValueError):
        OrderComparison("m", 8, "qat", "fraction")


def test_full_and_empty_selections_are_not_paired():
    (result,) = order_test.compare_orders(paired_records(5.0, ns=(0, UNITS)))
    assert result.n_pairs == 0 and result.verdict == order_test.TOO_FEW


def test_pairs_need_the_same_seed():
    records = paired_records(2.0, seeds=(0, 1), first_seeds={0: 7, 1: 8})
    (result,) = order_test.compare_orders(records)
    assert result.n_pairs == 0 and result.verdict == order_test.TOO_FEW and result.by_fraction.n_seeds == 0


def test_groups_without_both_orders_are_skipped_and_models_are_separate():
    records = paired_records(1.0) + [r for r in paired_records(1.0, model="solo") if r["order"] == "last"]
    records += paired_records(-1.0, model="other", bits=4)
    results = {(r.model, r.weight_bits): r for r in order_test.compare_orders(records)}
    assert set(results) == {("m", 8), ("other", 4)}
    assert results[("other", 4)].verdict == order_test.FIRST_CHEAPER


def test_unmeasured_and_diverged_records_are_ignored():
    records = paired_records(1.0)
    records.append(dict(records[0], order="first", accuracy_drop_pp=None, status="error", n=5, seed=9))
    records.append(dict(records[0], order="first", accuracy_drop_pp=50.0, status="nan", n=5, seed=0))
    (result,) = order_test.compare_orders(records)
    assert result.n_pairs == 8 * (UNITS - 1) and abs(result.by_n.mean_diff_pp - 1.0) < 0.1


def test_pair_orders_lists_matched_points():
    pairs = order_test.pair_orders(paired_records(1.0, seeds=(0, 1), ns=(1, 2)))[("m", 8, "qat")]
    assert [(n, seed) for n, seed, _, _ in pairs] == [(1, 0), (1, 1), (2, 0), (2, 1)]


def test_bad_alpha():
    with pytest.raises(ValueError):
        order_test.compare_orders([], alpha=1.5)
