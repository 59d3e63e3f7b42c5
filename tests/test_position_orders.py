"""The orders that separate position from layer identity (issue 32, items b and c). Pure: no TensorFlow.

``last-inner``/``first-inner``: last-N and first-N among the inner units, the first and the last unit held
out of both. ``ends8``: the literature's default plan, first and last unit at W8 and the rest at W4."""

import pytest
from hypothesis import given, strategies as st

from harness.design import mixed, size
from harness.design.config import INNER_ORDERS, ORDERS, Case, QuantConfig, RunOptions, Selection
from harness.design.grid import cases_for
from harness.design.select import select
from harness.design.units import Unit
from harness.options import Bad, parse_orders

KINDS = ("dense", "conv", "attention", "ffn")


@st.composite
def unit_lists(draw, min_size=2, max_size=30):
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=min_size, max_size=max_size))
    return tuple(Unit(i, k, f"w{i}", (f"w{i}",), draw(st.integers(1, 10_000)), draw(st.integers(0, 100)))
                 for i, k in enumerate(kinds))


@given(unit_lists(), st.data())
def test_inner_orders_never_touch_the_end_units_and_take_n_from_their_side(units, data):
    inner = len(units) - 2
    n = data.draw(st.integers(0, inner))
    last, first = select(units, Selection("last-inner", n)), select(units, Selection("first-inner", n))
    ends = {units[0].index, units[-1].index}
    for chosen in (last, first):
        assert len(chosen) == n and ends.isdisjoint(u.index for u in chosen)
        assert [u.index for u in chosen] == sorted(u.index for u in chosen)  # graph order
        assert [u.index for u in chosen] == list(range(chosen[0].index, chosen[0].index + n)) if n else True
    assert [u.index for u in last] == list(range(len(units) - 1 - n, len(units) - 1))
    assert [u.index for u in first] == list(range(1, 1 + n))


@given(unit_lists(), st.data())
def test_last_inner_and_first_inner_partition_the_inner_units(units, data):
    inner = len(units) - 2
    n = data.draw(st.integers(0, inner))
    last = select(units, Selection("last-inner", n))
    first = select(units, Selection("first-inner", inner - n))
    assert sorted(u.index for u in last + first) == list(range(1, len(units) - 1))
    # at n = all inner both orders are the same selection; at 0 both are empty
    assert select(units, Selection("last-inner", inner)) == select(units, Selection("first-inner", inner))


@given(unit_lists(), st.sampled_from(INNER_ORDERS), st.integers(1, 5))
def test_n_beyond_the_inner_units_names_the_range(units, order, extra):
    with pytest.raises(ValueError, match=rf"N must be in 0\.\.{len(units) - 2} .*first and last are held out"):
        select(units, Selection(order, len(units) - 2 + extra))


def test_a_one_unit_model_has_no_inner_unit():
    unit = (Unit(0, "dense", "a", ("a",), 10, 1),)
    assert select(unit, Selection("first-inner", 0)) == ()
    with pytest.raises(ValueError, match=r"0\.\.0"):
        select(unit, Selection("last-inner", 1))


def test_ids_options_and_validation():
    assert {"last-inner", "first-inner", "ends8"} <= set(ORDERS)
    assert Case("cnn", Selection("last-inner", 2), QuantConfig(4)).id == "cnn-lastin2-w4a8"
    assert Case("cnn", Selection("first-inner", 1), QuantConfig(8, method="ptq"), seed=3).id == "cnn-firstin1-w8a8-ptq-s3"
    assert Case("cnn", Selection("ends8"), QuantConfig(4), seed=2).id == "cnn-ends8-s2"
    assert parse_orders("last-inner,first-inner,ends8") == ("last-inner", "first-inner", "ends8")
    with pytest.raises(Bad, match="unknown order 'inner'.*last-inner, first-inner, ends8"):
        parse_orders("last,inner")
    with pytest.raises(ValueError, match="one plan per model"):
        Selection("ends8", 3)
    with pytest.raises(ValueError, match="ends_plan"):
        select((Unit(0, "dense", "a", ("a",), 1, 1), Unit(1, "dense", "b", ("b",), 1, 1)), Selection("ends8"))


def test_the_grid_runs_inner_n_within_the_inner_units_and_one_ends8_case_per_seed():
    cases = [c for c in cases_for(RunOptions(tier="reference", orders=("last-inner", "first-inner", "ends8"),
                                             methods=("qat", "ptq"), seeds=(0, 1))) if c.model == "cnn"]
    by = lambda order, method="qat", bits=8: sorted({c.selection.n for c in cases  # noqa: E731
                                                     if c.selection.order == order and c.quant.method == method
                                                     and c.quant.weight_bits == bits})
    # cnn: 5 units, 3 inner; the reference tier's n_values are 0..5
    # inner N = 0 quantizes nothing (last-0's model); first-inner 3 = last-inner 3
    assert by("last-inner") == [1, 2, 3] and by("first-inner") == [1, 2]
    assert by("last-inner", "ptq") == [1, 2, 3] and by("last-inner", "ptq", 4) == []
    ends = [c for c in cases if c.selection.order == "ends8"]
    assert [(c.id, c.quant.weight_bits, c.quant.method) for c in ends] == [("cnn-ends8", 4, "qat"), ("cnn-ends8-s1", 4, "qat")]


MLP = (Unit(0, "dense", "d1", ("d1",), 100352, 128), Unit(1, "dense", "d2", ("d2",), 32768, 256),
       Unit(2, "dense", "d3", ("d3",), 32768, 128), Unit(3, "dense", "d4", ("d4",), 16384, 128),
       Unit(4, "dense", "logits", ("logits",), 1280, 10))


def test_ends_plan_is_the_ends_at_w8_and_the_rest_at_w4_with_size_pys_bytes():
    plan = mixed.ends_plan(MLP)
    assert plan.choices == (8, 4, 4, 4, 8) and plan.tag == "84448"
    by_hand = (100352 + 1280) + (32768 + 32768 + 16384) // 2 + 4 * (128 + 256 + 128 + 128 + 10)
    assert plan.weight_bytes == plan.budget_bytes == by_hand
    # the same as size.predict of the W8 ends plus size.predict of the W4 inner units, unit by unit
    w8 = size.predict(MLP, (MLP[0], MLP[4]), QuantConfig(8)).weight_bytes
    w4 = size.predict(MLP, MLP[1:4], QuantConfig(4)).weight_bytes
    floats = sum(size.unit_bytes(u, False, 32) for u in MLP)
    assert plan.weight_bytes == w8 + w4 - floats


@given(unit_lists(), st.sampled_from((2, 4, 8)), st.sampled_from((2, 4, 8)))
def test_ends_plan_bytes_are_the_sum_of_its_units(units, outer, inner):
    plan = mixed.ends_plan(units, outer, inner)
    assert plan.choices[0] == plan.choices[-1] == outer and set(plan.choices[1:-1]) <= {inner}
    assert plan.weight_bytes == sum(mixed.unit_bytes(u, c) for u, c in zip(units, plan.choices))
    assert mixed.deployable(plan.choices)


def test_ends_plan_needs_two_units():
    with pytest.raises(ValueError, match="first and a last unit"):
        mixed.ends_plan(MLP[:1])


def test_weight_bytes_must_fall_with_n_in_the_inner_orders_too():
    from harness.results.gates import size_not_decreasing

    def r(order, n, size):
        return dict(status="passed", order=order, model="m", weight_bits=4, method="qat", seed=0, tier="reference",
                    n=n, weight_bytes=size, case_id=f"m-{order}{n}")
    assert size_not_decreasing([r("last-inner", 0, 900), r("last-inner", 1, 800), r("first-inner", 1, 700)]) == []
    (problem,) = size_not_decreasing([r("first-inner", 1, 700), r("first-inner", 2, 700)])
    assert "m-first-inner1 700 B -> m-first-inner2 700 B" in problem


def test_a_tier_can_run_one_order_at_fewer_widths():
    from harness.design.config import TierConfig

    tier = TierConfig(train_size=None, test_size=None, pretrain_epochs=1, finetune_steps=1, bits=(8, 4),
                      orders=("last", "single"), order_bits=(("single", (4,)),))
    assert tier.bits_of("single") == (4,) and tier.bits_of("last") == (8, 4)
    assert repr(tier) == repr(TierConfig(train_size=None, test_size=None, pretrain_epochs=1, finetune_steps=1,
                                         bits=(8, 4), orders=("last", "single")))  # no pre-training key moves
    assert TierConfig(**{**tier.__dict__, "order_bits": [["single", [4]]]}).bits_of("single") == (4,)  # from JSON
    for bad in ((("single", (2,)),), (("single", ()),), ((4, (4,)),), (("single", 4),)):
        with pytest.raises(ValueError, match="order_bits entries"):
            TierConfig(train_size=None, test_size=None, pretrain_epochs=1, finetune_steps=1, order_bits=bad)
