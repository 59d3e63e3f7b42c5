"""The single-unit and per-kind costs (harness/analysis/unit_costs.py): simulations with known truth."""

import math

import numpy as np

from harness.analysis import unit_costs

TABLE = [dict(index=i, weight_layer=f"layer{i}", kernel_params=100 * (i + 1)) for i in range(5)]


def single_records(true_pp, seeds=10, sd=0.15, shift_sd=0.1, rng_seed=0, bits=4):
    rng = np.random.default_rng(rng_seed)
    out = []
    for seed in range(seeds):
        shift = rng.normal(0, shift_sd)  # one seed's control moves every unit's drop together
        for unit, cost in enumerate(true_pp):
            out.append(dict(model="cnn", weight_bits=bits, method="qat", order="single", n=unit, seed=seed,
                            status="passed", accuracy_drop_pp=cost + shift + rng.normal(0, sd), unit_table=TABLE))
    return out


def test_a_planted_unit_cost_is_found_and_the_null_units_are_not():
    (group,) = unit_costs.group_costs(single_records([0.7, 0, 0, 0, 0]))
    assert [c.detected for c in group.costs] == [True, False, False, False, False]
    assert group.costs[0].label == "layer0 (unit 0, 100 weights)"
    mean, low, high = group.costs[0].interval
    assert low < 0.7 < high and 0 < group.detectable_pp < 0.7
    text = unit_costs.verdict(group)
    assert "layer0 (unit 0, 100 weights) +0." in text and "the other 4 units: nothing detectable" in text
    assert "within the 0.5 pp target" in text


def test_holm_keeps_false_findings_rare_when_no_unit_costs_anything():
    runs = [unit_costs.group_costs(single_records([0] * 5, rng_seed=s))[0] for s in range(200)]
    any_found = np.mean([any(c.detected for c in g.costs) for g in runs])
    assert any_found <= 0.08  # family-wise 5%, plus the binomial noise of 200 runs


def test_three_seeds_are_reported_as_too_few_not_as_no_cost():
    (group,) = unit_costs.group_costs(single_records([2.0, 0, 0, 0, 0], seeds=3))
    assert math.isinf(group.detectable_pp) and not any(c.detected for c in group.costs)
    text = unit_costs.verdict(group)
    assert "too few seeds" in text and "not testable" in text and "nothing detectable" not in text


def test_a_target_the_seeds_cannot_reach_is_said():
    (group,) = unit_costs.group_costs(single_records([0] * 5, sd=0.6, bits=8))
    assert group.detectable_pp > 0.2 and "NOT within the 0.2 pp target" in unit_costs.verdict(group)


def test_kinds_are_compared_pairwise_per_seed():
    rng = np.random.default_rng(1)
    records = [dict(model="minilm2", weight_bits=8, method="qat", order="type", kind=kind, n=None, seed=seed,
                    status="passed", accuracy_drop_pp=cost + rng.normal(0, 0.1))
               for seed in range(10) for kind, cost in (("attention", 0.4), ("ffn", 0.0), ("dense", 0.0))]
    (group,) = unit_costs.group_costs(records)
    pairs = {c.label: c for c in group.differences}
    assert set(pairs) == {"attention - dense", "attention - ffn", "dense - ffn"}
    assert pairs["attention - ffn"].detected and not pairs["dense - ffn"].detected
    assert pairs["attention - ffn"].interval[0] > 0


def test_failed_or_unmeasured_records_and_other_orders_are_left_out():
    records = single_records([0.5, 0, 0, 0, 0], seeds=4)
    records[0] = dict(records[0], status="error", accuracy_drop_pp=None)
    records.append(dict(records[1], order="last"))
    (group,) = unit_costs.group_costs(records)
    assert group.costs[0].seeds == 3 and sum(c.seeds for c in group.costs) == 19
    lines = unit_costs.section(records)
    assert lines[0].startswith("## What each unit costs alone") and unit_costs.section([]) == []


def test_the_seed_reports_claim_is_judged_against_the_final_unit():
    rng = np.random.default_rng(2)
    table = [dict(index=0, kind="attention"), dict(index=1, kind="ffn"), dict(index=2, kind="dense")]

    def run(attention_pp):
        return unit_costs.group_costs([
            dict(model="minilm2", weight_bits=4, method="qat", order="type", kind=kind, n=None, seed=seed,
                 status="passed", accuracy_drop_pp=cost + rng.normal(0, 0.1), unit_table=table)
            for seed in range(10) for kind, cost in (("attention", attention_pp), ("ffn", 0.0), ("dense", 0.3))])[0]

    assert "(dense): attention - dense +" in unit_costs.verdict(run(1.0)) and ": supported." in unit_costs.verdict(run(1.0))
    assert "contradicted" in unit_costs.verdict(run(-0.5))
    assert "not supported: no detectable difference" in unit_costs.verdict(run(0.3))
