"""harness.compare: last-vs-first hypothesis test on constructed effects."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import compare

UNITS = 10


def paired_records(effect, ns=range(1, UNITS), seeds=(0, 1), noise=0.05, rng_seed=0, model="m", bits=8,
                   first_seeds=None):
    """drop_first - drop_last = effect + noise for every (n, seed)."""
    rng = np.random.default_rng(rng_seed)
    out = []
    for n in ns:
        for seed in seeds:
            last = 0.2 * n + float(rng.normal(0, noise))
            first = last + effect + float(rng.normal(0, noise))
            base = dict(status="passed", model=model, n=n, weight_bits=bits, method="qat", units_total=UNITS)
            out.append(dict(base, order="last", seed=seed, accuracy_drop_pp=last))
            out.append(dict(base, order="first", seed=seed if first_seeds is None else first_seeds[seed],
                            accuracy_drop_pp=first))
    return out


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(effect=st.floats(0.3, 3.0), sign=st.sampled_from([1, -1]), rng_seed=st.integers(0, 2**31))
def test_detects_constructed_effect_in_either_direction(effect, sign, rng_seed):
    (result,) = compare.compare_orders(paired_records(sign * effect, rng_seed=rng_seed))
    assert result.n_pairs == 2 * (UNITS - 1)
    assert result.p_value < 0.01
    assert result.verdict == (compare.FINAL_CHEAPER if sign > 0 else compare.FIRST_CHEAPER)
    assert math.copysign(1, result.rank_biserial) == sign and abs(result.rank_biserial) > 0.9
    assert result.median_diff_pp == pytest.approx(sign * effect, abs=0.1)


def test_balanced_differences_are_not_significant():
    records = paired_records(0.0, noise=0.0)
    for i, r in enumerate(x for x in records if x["order"] == "first"):
        r["accuracy_drop_pp"] += (i + 1) * 0.01 * (1 if i % 2 else -1)  # alternate signs, growing size
    (result,) = compare.compare_orders(records)
    assert result.verdict == compare.NO_DIFFERENCE and result.p_value > 0.5
    assert abs(result.rank_biserial) < 0.2


def test_all_zero_differences_are_no_difference():
    (result,) = compare.compare_orders(paired_records(0.0, noise=0.0))
    assert result.verdict == compare.NO_DIFFERENCE and result.p_value == 1.0 and result.n_nonzero == 0


def test_too_few_pairs():
    (result,) = compare.compare_orders(paired_records(2.0, ns=(1, 2, 3), seeds=(0,)))
    assert result.n_pairs == 3 and result.verdict == compare.TOO_FEW and math.isnan(result.p_value)


def test_full_and_empty_selections_are_not_paired():
    (result,) = compare.compare_orders(paired_records(5.0, ns=(0, UNITS), seeds=range(5)))
    assert result.n_pairs == 0 and result.verdict == compare.TOO_FEW


def test_pairs_need_the_same_seed():
    records = paired_records(2.0, first_seeds={0: 7, 1: 8})
    (result,) = compare.compare_orders(records)
    assert result.n_pairs == 0 and result.verdict == compare.TOO_FEW


def test_groups_without_both_orders_are_skipped_and_models_are_separate():
    records = paired_records(1.0) + [r for r in paired_records(1.0, model="solo") if r["order"] == "last"]
    records += paired_records(-1.0, model="other", bits=4)
    results = {(r.model, r.weight_bits): r for r in compare.compare_orders(records)}
    assert set(results) == {("m", 8), ("other", 4)}
    assert results[("other", 4)].verdict == compare.FIRST_CHEAPER


def test_unmeasured_records_are_ignored():
    records = paired_records(1.0)
    records.append(dict(records[0], order="first", accuracy_drop_pp=None, status="error", n=5, seed=9))
    (result,) = compare.compare_orders(records)
    assert result.n_pairs == 2 * (UNITS - 1)


def test_rank_biserial_known_values():
    assert compare.rank_biserial([1, 2, 3]) == 1.0
    assert compare.rank_biserial([-1, -2, -3]) == -1.0
    assert compare.rank_biserial([1, 2, -3]) == 0.0
    assert compare.rank_biserial([0, 0]) != compare.rank_biserial([0, 0])  # nan


def test_bad_alpha():
    with pytest.raises(ValueError):
        compare.compare_orders([], alpha=1.5)
