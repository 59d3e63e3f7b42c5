"""harness.design.mixed against brute force on small models (issue 17): the exact mixed plan, the greedy
sensitivity selection, and per-unit bytes that add up to size.predict. Pure: no TensorFlow."""

import itertools
import math

import pytest
from hypothesis import given, settings, strategies as st

from harness.design import mixed
from harness.design.config import QuantConfig
from harness.design.size import predict
from harness.design.units import Unit

units_strategy = st.lists(
    st.tuples(st.integers(1, 50_000), st.integers(0, 300), st.sampled_from(["dense", "conv"])),
    min_size=1, max_size=7,
).map(lambda specs: tuple(Unit(i, kind, f"w{i}", (f"w{i}",), k, b, channels=b)
                          for i, (k, b, kind) in enumerate(specs)))
cost = st.one_of(st.just(0.0), st.floats(0.0, 100.0, allow_nan=False, allow_infinity=False),
                 st.integers(0, 5).map(float))  # small integers: plenty of exact ties


def costs_for(units):
    return st.lists(cost, min_size=len(units), max_size=len(units))


@given(units_strategy, st.sampled_from([2, 3, 4, 5, 6, 7, 8]), st.data())
def test_unit_bytes_add_up_to_size_predict(units, bits, data):
    chosen = data.draw(st.lists(st.sampled_from(units), unique=True))
    picked = {u.index for u in chosen}
    choices = [bits if u.index in picked else mixed.FLOAT for u in units]
    assert mixed.plan_bytes(units, choices) == predict(units, chosen, QuantConfig(bits)).weight_bytes
    assert mixed.plan_bytes(units, [mixed.FLOAT] * len(units)) == predict(units, (), QuantConfig(bits)).float_bytes


def test_unit_bytes_known_values():
    unit = Unit(0, "dense", "a", ("a",), 101, 3)
    assert mixed.unit_bytes(unit, "float") == 104 * 4
    assert mixed.unit_bytes(unit, 8) == 101 + 12
    assert mixed.unit_bytes(unit, 6) == 101 + 12  # 5-7 bits deploy as INT8 storage
    assert mixed.unit_bytes(unit, 4) == 51 + 12  # packed nibbles, rounded up
    with pytest.raises(ValueError, match="choice"):
        mixed.unit_bytes(unit, 16)


def brute_force(units, costs_by_bits, budget):
    """Cheapest plan within budget over all (1 + widths)^L plans, or None if none fits."""
    options = [mixed.FLOAT] + sorted(costs_by_bits)
    best = None
    for choices in itertools.product(options, repeat=len(units)):
        b = mixed.plan_bytes(units, choices)
        if b > budget:
            continue
        c = sum(0.0 if ch == mixed.FLOAT else costs_by_bits[ch][i] for i, ch in enumerate(choices))
        if best is None or c < best[0]:
            best = (c, b)
    return best


@settings(max_examples=150, deadline=None)
@given(units_strategy, st.data())
def test_mixed_plan_is_the_brute_force_optimum(units, data):
    costs_by_bits = {8: data.draw(costs_for(units)), 4: data.draw(costs_for(units))}
    smallest = mixed.plan_bytes(units, [4] * len(units))
    largest = mixed.plan_bytes(units, [mixed.FLOAT] * len(units))
    budget = data.draw(st.integers(smallest, largest + 10))
    plan = mixed.mixed_plan(units, costs_by_bits, budget)
    best_cost, _ = brute_force(units, costs_by_bits, budget)
    assert plan.weight_bytes <= budget
    assert plan.weight_bytes == mixed.plan_bytes(units, plan.choices)
    spent = sum(0.0 if ch == mixed.FLOAT else costs_by_bits[ch][i] for i, ch in enumerate(plan.choices))
    assert plan.predicted_cost == pytest.approx(spent, abs=1e-9)
    assert plan.predicted_cost == pytest.approx(best_cost, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(units_strategy, st.data())
def test_mixed_plan_with_three_widths(units, data):
    costs_by_bits = {b: data.draw(costs_for(units)) for b in (8, 6, 3)}
    budget = data.draw(st.integers(mixed.plan_bytes(units, [3] * len(units)),
                                   mixed.plan_bytes(units, [mixed.FLOAT] * len(units))))
    plan = mixed.mixed_plan(units, costs_by_bits, budget)
    assert plan.weight_bytes <= budget
    assert plan.predicted_cost == pytest.approx(brute_force(units, costs_by_bits, budget)[0], abs=1e-9)


@given(units_strategy, st.data())
def test_infeasible_budget_names_the_minimum(units, data):
    smallest = mixed.plan_bytes(units, [4] * len(units))
    costs = data.draw(costs_for(units))
    with pytest.raises(ValueError, match=f"minimum achievable is {smallest} bytes"):
        mixed.mixed_plan(units, {8: costs, 4: costs}, smallest - 1)
    assert mixed.mixed_plan(units, {8: costs, 4: costs}, smallest).weight_bytes == smallest


def test_mixed_plan_prefers_int8_on_the_sensitive_unit():
    units = tuple(Unit(i, "dense", f"w{i}", (f"w{i}",), 1000, 0) for i in range(3))
    costs = {8: [1.0, 1.0, 1.0], 4: [2.0, 50.0, 2.0]}
    plan = mixed.mixed_plan(units, costs, budget_bytes=500 + 1000 + 500)
    assert plan.choices == (4, 8, 4) and plan.weight_bytes == 2000 and plan.predicted_cost == 5.0
    assert plan.tag == "484" and plan.units_at(8) == (1,)
    assert mixed.mixed_plan(units, costs, budget_bytes=12_000).choices == ("float",) * 3


def test_sixty_units_plan_quickly():
    """L = 60 with distinct sizes: the Pareto front stays small enough to be exact in well under a second."""
    units = tuple(Unit(i, "conv", f"c{i}", (f"c{i}",), 900 * (i % 7 + 1) + 37 * i, 64, 64) for i in range(60))
    costs = {8: [((i * 37) % 11 + 1) * 0.01 for i in range(60)], 4: [((i * 53) % 13 + 1) * 0.1 for i in range(60)]}
    budget = mixed.plan_bytes(units, [8] * 60) * 3 // 4
    plan = mixed.mixed_plan(units, costs, budget)
    assert plan.weight_bytes <= budget and set(plan.choices) <= {"float", 8, 4}


def greedy_by_definition(units, costs, n, bits):
    """Repeatedly take the remaining unit with the best bytes saved per cost; ties: lowest index."""
    remaining, taken = list(units), []
    for _ in range(n):
        def ratio(u):
            saved = mixed.unit_bytes(u, mixed.FLOAT) - mixed.unit_bytes(u, bits)
            c = costs[u.index]
            return saved / c if c > 0 else (math.inf if saved > 0 else 0.0)
        best = max(ratio(u) for u in remaining)
        pick = min((u for u in remaining if ratio(u) == best), key=lambda u: u.index)
        taken.append(pick)
        remaining.remove(pick)
    return tuple(sorted(taken, key=lambda u: u.index))


@given(units_strategy, st.sampled_from([8, 4]), st.data())
def test_sensitivity_selection_without_chain_is_the_greedy_definition(units, bits, data):
    costs = data.draw(costs_for(units))
    for n in range(len(units) + 1):
        greedy = greedy_by_definition(units, costs, n, bits)
        assert mixed.sensitivity_selection(units, costs, n, bits, chain=False) == greedy
    frontier = mixed.selection_frontier(units, costs, bits, chain=False)
    assert all(set(a.units) <= set(b.units) for a, b in zip(frontier, frontier[1:]))  # nested without chain


def is_deployable_set(units, chosen):
    indices = {u.index for u in chosen}
    return mixed.deployable([8 if u.index in indices else mixed.FLOAT for u in units])


def chain_rule_by_brute_force(units, costs, n, bits):
    """The rule, by enumeration: walk the ranked order; take a unit iff some deployable n-set (of all
    itertools.combinations) holds the units taken so far, this one, and none of those passed over."""
    deployable_sets = [set(c) for c in itertools.combinations(range(len(units)), n)
                       if mixed.deployable([8 if i in c else mixed.FLOAT for i in range(len(units))])]
    taken, passed = set(), set()
    for unit in mixed.sensitivity_order(units, costs, bits):
        i = unit.index
        if len(taken) < n and any(taken | {i} <= s and not (passed & s) for s in deployable_sets):
            taken.add(i)
        else:
            passed.add(i)
    return tuple(u for u in units if u.index in taken)


small_units = st.lists(
    st.tuples(st.integers(1, 50_000), st.integers(0, 300), st.sampled_from(["dense", "conv"])),
    min_size=1, max_size=8,
).map(lambda specs: tuple(Unit(i, kind, f"w{i}", (f"w{i}",), k, b, channels=b)
                          for i, (k, b, kind) in enumerate(specs)))


@settings(max_examples=200, deadline=None)
@given(small_units, st.sampled_from([8, 4]), st.data())
def test_the_chain_selection_is_the_greedy_order_among_deployable_sets(units, bits, data):
    costs = data.draw(costs_for(units))
    frontier = mixed.selection_frontier(units, costs, bits)
    assert [p.n for p in frontier] == list(range(len(units) + 1))
    for n in range(len(units) + 1):
        chosen = mixed.sensitivity_selection(units, costs, n, bits)
        assert chosen == mixed.sensitivity_selection(units, costs, n, bits, chain=True)
        assert len(chosen) == n and list(chosen) == sorted(chosen, key=lambda u: u.index)
        assert is_deployable_set(units, chosen)
        greedy = greedy_by_definition(units, costs, n, bits)
        if is_deployable_set(units, greedy):
            assert chosen == greedy  # nothing changes for a selection that already deploys
        assert chosen == chain_rule_by_brute_force(units, costs, n, bits)
        p = frontier[n]  # the frontier is the same selection, N by N
        assert p.units == tuple(u.index for u in chosen)
        assert p.weight_bytes == predict(units, chosen, QuantConfig(bits)).weight_bytes
        assert p.predicted_cost == pytest.approx(sum(costs[u.index] for u in chosen))


def test_the_chain_selection_replaces_a_lone_float_unit():
    # as mlp seed 2: the greedy top-3 of 5 is {1, 3, 4}, which leaves unit 2 a lone float unit between
    # quantized ones (stored INT8 by the converter); the next deployable choice in ranked order is taken
    units = tuple(Unit(i, "dense", f"w{i}", (f"w{i}",), 10_000, 10) for i in range(5))
    costs = [5.0, 1.0, 4.0, 2.0, 3.0]  # ranked: 1, 3, 4, 2, 0
    plain = mixed.sensitivity_selection(units, costs, 3, 8, chain=False)
    assert [u.index for u in plain] == [1, 3, 4] and not is_deployable_set(units, plain)
    # 1 and 3 together need 2 quantized as well (1F3 is a lone float): with 3 units that is {1, 2, 3},
    # and 4 is then impossible; so the walk takes 1, 3, passes 4, takes 2
    chosen = mixed.sensitivity_selection(units, costs, 3, 8)
    assert [u.index for u in chosen] == [1, 2, 3] and is_deployable_set(units, chosen)
    # N = 2: {1, 3} leaves 2 a lone float unit, {1, 4} deploys (two float units between them)
    assert [u.index for u in mixed.sensitivity_selection(units, costs, 2, 8)] == [1, 4]


def test_sensitivity_selection_rejects_bad_arguments():
    units = (Unit(0, "dense", "a", ("a",), 10, 1),)
    with pytest.raises(ValueError, match=r"N must be in 0\.\.1"):
        mixed.sensitivity_selection(units, [1.0], 2)
    with pytest.raises(ValueError, match="finite and >= 0"):
        mixed.sensitivity_selection(units, [-1.0], 1)
    with pytest.raises(ValueError, match="1 units"):
        mixed.sensitivity_selection(units, [1.0, 2.0], 1)


def test_a_lone_float_unit_between_quantized_units_is_not_deployable():
    assert mixed.deployable((8, 4, 4, 4, "float")) and mixed.deployable((8, "float", "float", 8, "float"))
    assert mixed.deployable(("float", 8, 8)) and mixed.deployable(("float",) * 3)
    assert not mixed.deployable((8, "float", 8, "float", "float")) and not mixed.deployable((4, "float", 4))
    units = tuple(Unit(i, "dense", f"w{i}", (f"w{i}",), 1000, 0) for i in range(3))
    costs = {8: [1.0, 5.0, 1.5], 4: [9.0, 9.0, 9.0]}  # the middle unit is best kept float, but cannot be
    assert mixed.mixed_plan(units, costs, 2 * 1000 + 4000).choices == (8, "float", 8)
    plan = mixed.mixed_plan(units, costs, 2 * 1000 + 4000, chain=True)
    assert plan.choices == (8, 8, "float") and plan.predicted_cost == 6.0


@settings(max_examples=150, deadline=None)
@given(units_strategy, st.data())
def test_the_chain_plan_is_the_brute_force_optimum_among_deployable_plans(units, data):
    costs_by_bits = {8: data.draw(costs_for(units)), 4: data.draw(costs_for(units))}
    budget = data.draw(st.integers(mixed.plan_bytes(units, [4] * len(units)),
                                   mixed.plan_bytes(units, [mixed.FLOAT] * len(units)) + 10))
    plan = mixed.mixed_plan(units, costs_by_bits, budget, chain=True)
    assert mixed.deployable(plan.choices) and plan.weight_bytes <= budget
    assert plan.weight_bytes == mixed.plan_bytes(units, plan.choices)
    best = None
    for choices in itertools.product([mixed.FLOAT, 8, 4], repeat=len(units)):
        if mixed.deployable(choices) and mixed.plan_bytes(units, choices) <= budget:
            c = sum(0.0 if ch == mixed.FLOAT else costs_by_bits[ch][i] for i, ch in enumerate(choices))
            best = c if best is None else min(best, c)
    assert plan.predicted_cost == pytest.approx(best, abs=1e-9)


# --- tied_kinds: every quantized conv unit of a plan takes one width (harness/case/quantize.py) ---

def uniform_ok(units, choices, kinds):
    return len({c for u, c in zip(units, choices) if u.kind in kinds and c != mixed.FLOAT}) <= 1


@settings(max_examples=150, deadline=None)
@given(small_units, st.booleans(), st.data())
def test_the_uniform_plan_is_the_brute_force_optimum(units, chain, data):
    costs_by_bits = {8: data.draw(costs_for(units)), 4: data.draw(costs_for(units))}
    kinds = ("conv",)
    budget = data.draw(st.integers(mixed.plan_bytes(units, [4] * len(units)),
                                   mixed.plan_bytes(units, [mixed.FLOAT] * len(units)) + 10))
    plan = mixed.mixed_plan(units, costs_by_bits, budget, chain=chain, tied_kinds=kinds)
    assert plan.weight_bytes <= budget and plan.weight_bytes == mixed.plan_bytes(units, plan.choices)
    assert uniform_ok(units, plan.choices, kinds) and (mixed.deployable(plan.choices) or not chain)
    best = None
    for choices in itertools.product([mixed.FLOAT, 8, 4], repeat=len(units)):
        if (uniform_ok(units, choices, kinds) and (mixed.deployable(choices) or not chain)
                and mixed.plan_bytes(units, choices) <= budget):
            c = sum(0.0 if ch == mixed.FLOAT else costs_by_bits[ch][i] for i, ch in enumerate(choices))
            best = c if best is None else min(best, c)
    assert plan.predicted_cost == pytest.approx(best, abs=1e-9)
    if "conv" not in {u.kind for u in units}:  # nothing to tie: the unconstrained plan
        assert plan == mixed.mixed_plan(units, costs_by_bits, budget, chain=chain)


def test_tied_kinds_of_a_model_and_an_infeasible_budget():
    conv = tuple(Unit(i, "conv", f"c{i}", (f"c{i}",), 1000, 10, channels=10) for i in range(2))
    dense = (Unit(2, "dense", "d", ("d",), 1000, 10),)
    assert mixed.tied_kinds_of(conv + dense) == ("conv",) and mixed.tied_kinds_of(dense) == ()
    costs = {8: [1.0, 1.0, 1.0], 4: [1.0, 50.0, 1.0]}
    # unconstrained, the second conv would be INT8 beside an INT4 conv; tied, both convs take INT8
    budget = mixed.plan_bytes(conv + dense, [4, 8, 4])
    assert mixed.mixed_plan(conv + dense, costs, budget).choices == (4, 8, 4)
    tied = mixed.mixed_plan(conv + dense, costs, budget, tied_kinds=("conv",))
    assert uniform_ok(conv + dense, tied.choices, ("conv",)) and tied.weight_bytes <= budget
    with pytest.raises(ValueError, match="infeasible"):
        mixed.mixed_plan(conv + dense, costs, mixed.plan_bytes(conv + dense, [4] * 3) - 1, tied_kinds=("conv",))
