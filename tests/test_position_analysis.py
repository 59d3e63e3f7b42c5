"""The analysis of issue 32's position designs, on constructed effects. Pure: no TensorFlow.

(b) last-inner against first-inner in the pre-registered family (harness/design/family.py) and the order
test; (c) ends8 on the frontier, against last-N at each width and against the mixed plans at matched bytes."""

import numpy as np
import pytest

from harness.analysis import fit_text, frontier, frontier_report, order_test
from harness.design.family import INNER, LAST_VS_FIRST, WHOLE, share_brackets

UNITS = 10  # 8 inner units


def inner_records(effect, seeds=range(8), model="m", bits=8, method="qat", orders=INNER, rng_seed=0):
    """drop_first - drop_last = effect (+ small noise) at every inner N, one shift per seed; also N = 8 (all
    inner units), where both orders quantize the same units."""
    rng = np.random.default_rng(rng_seed)
    out = []
    first, last = orders
    for seed in seeds:
        shift = float(rng.normal(0, 1.0))
        for n in range(0, UNITS - 1):
            base = dict(status="passed", model=model, n=n, weight_bits=bits, method=method, units_total=UNITS,
                        seed=seed)
            drop = 0.1 * n + shift + float(rng.normal(0, 0.02))
            out.append(dict(base, order=last, accuracy_drop_pp=drop, param_fraction=n / UNITS))
            if n:  # at all 8 inner units both orders are one selection: measured, never compared
                out.append(dict(base, order=first, accuracy_drop_pp=drop + effect + float(rng.normal(0, 0.02)),
                                param_fraction=n / UNITS))
    return out


def test_the_inner_pair_is_tested_on_the_inner_n_only():
    (result,) = order_test.compare_orders(inner_records(1.0))
    assert result.orders == INNER and result.inner and not result.registered
    assert sorted({n for n, *_ in result.pairs}) == list(range(1, UNITS - 2))  # 1..7 of the 8 inner units
    assert result.verdict == order_test.FINAL_CHEAPER and result.p_value == pytest.approx(2 / 2 ** 8)
    assert result.by_n.mean_diff_pp == pytest.approx(1.0, abs=0.05)
    n_sentence, _ = result.sentences()
    assert n_sentence.startswith("m inner w8 qat: quantizing the last N inner units (the first and last unit "
                                 "held out) costs 1.0")


def test_whole_and_inner_pairs_are_one_holm_family():
    records = inner_records(1.0) + inner_records(1.0, orders=WHOLE, rng_seed=1)
    whole, inner = order_test.compare_orders(records)
    assert whole.orders == WHOLE and inner.orders == INNER
    assert whole.tests_in_family == inner.tests_in_family == 2
    assert inner.test.p_holm == pytest.approx(2 * 2 / 2 ** 8)
    text = order_test.family_text((whole, inner))
    assert "Holm over 2 test(s)" in text and "m W8 QAT (N)" in text and "m inner W8 QAT (N)" in text


def test_the_family_declares_cnn_inner_on_share_and_the_report_names_it():
    records = inner_records(-0.8, model="cnn", bits=4)
    (result,) = order_test.compare_orders(records)
    assert result.registered and result.primary == "fraction" and result.test is result.by_fraction
    assert result.by_n.verdict == order_test.NOT_TESTED
    assert result.verdict == order_test.FIRST_CHEAPER
    assert "cnn inner W4 QAT (share)" in order_test.family_text((result,))
    sentence = fit_text.model_verdict("cnn", (result,), ())
    assert sentence.startswith("**cnn**: With the first and last unit held out of both: quantizing the last N "
                               "inner units instead of the first N inner units costs W4 QAT 0.80 pp more")


# weights per unit (kernel + bias) of the zoo's models, from their unit tables
PARAMS = {"mlp": (100480, 33024, 32896, 16512, 1290), "cnn": (320, 18496, 73856, 16512, 1290),
          "resnet20": (160,) + (2320,) * 6 + (4640,) + (9248,) * 5 + (18496,) + (36928,) * 5 + (650,)}
N_VALUES = {"mlp": range(6), "cnn": range(6), "resnet20": (0, 1, 3, 6, 10, 20)}


@pytest.mark.parametrize("model", sorted(PARAMS))
@pytest.mark.parametrize("orders", [WHOLE, INNER], ids=["whole", "inner"])
def test_every_declared_matching_follows_the_share_rule(model, orders):
    declared = {c.matching for c in LAST_VS_FIRST.comparisons if c.model == model and c.orders == orders}
    want = "share" if share_brackets(PARAMS[model], N_VALUES[model], 2 if orders == INNER else 0) else "n"
    assert declared == {want}


def test_share_brackets_on_a_constructed_model():
    # inner units 10 | 10 | 80: first-inner 1 holds 10%, last-inner 1 80%, first-inner 2 20%: no bracket
    assert not share_brackets((0, 10, 10, 80, 0), range(5), 2)
    # inner 40 | 20 | 40: first-inner 40-60%, last-inner-1 40%: bracketed
    assert share_brackets((0, 40, 20, 40, 0), range(5), 2)


FLOAT = 100_000
STEP = {8: 15_000, 4: 18_000}


def rec(order, n, bits, seed, drop, size, units=None):
    return dict(case_id=f"m-{order}{n}-s{seed}", model="m", order=order, n=n, weight_bits=bits, method="qat",
                seed=seed, status="passed", accuracy_drop_pp=drop, weight_bytes=size, units_total=5,
                units_selected=units if units is not None else list(range(5 - n, 5)), param_fraction=n / 5)


def truth(size):
    return 2.0 * (FLOAT - size) / FLOAT


def plan_records(rng, seeds, ends_delta, mixed_delta, ends_bytes=45_000, budgets=(30_000, 60_000)):
    """last-N at W8 and W4 on the truth line, mixed plans at two budgets (truth + mixed_delta) and the
    ends8 plan (truth + ends_delta), each seed shifted alike."""
    out = []
    for seed in range(seeds):
        shift = float(rng.normal(0, 0.3))
        noise = lambda: float(rng.normal(0, 0.02))  # noqa: E731
        for bits in (8, 4):
            out += [rec("last", n, bits, seed, truth(FLOAT - n * STEP[bits]) + shift + noise(), FLOAT - n * STEP[bits])
                    for n in range(6)]
        out += [rec("mixed", b, 4, seed, truth(b - 500) + mixed_delta + shift + noise(), b - 500, units=[1, 2, 3])
                for b in budgets]
        out.append(rec("ends8", 0, 4, seed, truth(ends_bytes) + ends_delta + shift + noise(), ends_bytes,
                       units=[0, 1, 2, 3, 4]))
    return out


def test_ends8_is_set_against_last_n_at_each_width_and_against_the_mixed_plans():
    (f,) = frontier.analyse(plan_records(np.random.default_rng(1), seeds=10, ends_delta=0.6, mixed_delta=-0.2))
    ends = [c for c in f.comparisons if c.selection == "ends8"]
    assert [c.name for c in ends] == ["ends8 (first+last W8, rest W4) vs last-N W8",
                                      "ends8 (first+last W8, rest W4) vs last-N W4",
                                      "ends8 (first+last W8, rest W4) vs mixed"]
    by_last, by_last4, by_mixed = ends
    assert by_last.mean_diff == pytest.approx(0.6, abs=0.05) and by_last4.mean_diff == pytest.approx(0.6, abs=0.05)
    assert by_mixed.mean_diff == pytest.approx(0.8, abs=0.05)  # 0.6 above the truth line, mixed 0.2 below
    assert by_last.verdict == "last-N beats ends8 (first+last W8, rest W4)"
    assert by_mixed.verdict == "mixed beats ends8 (first+last W8, rest W4)" and by_mixed.p_holm < 0.05
    assert "drop − mixed drop at matched bytes +0.80" in by_mixed.sentence()
    # the family: 2 mixed-vs-last comparisons (W8, W4) and the 3 of ends8
    assert all(c.tests_in_family == 5 for c in f.comparisons)
    (point,) = [p for p in f.points if p.selection == "ends8"]
    assert point.label == "ends8" and point.bits is None and point.weight_bytes == 45_000


def test_ends8_outside_the_mixed_plans_bytes_has_no_match_and_says_so():
    records = plan_records(np.random.default_rng(2), seeds=8, ends_delta=0.0, mixed_delta=0.0, ends_bytes=80_000)
    (f,) = frontier.analyse(records)
    (by_mixed,) = [c for c in f.comparisons if c.against == "mixed"]
    assert by_mixed.pairs == 0 and "no seed's point lies within its mixed byte range" in by_mixed.sentence()
    # no seeds could give it a match, so it is not "too few pairs", which more seeds would cure
    assert by_mixed.verdict == "no matched mixed point (outside its byte range)"


def test_an_ends8_run_identical_to_a_mixed_plan_is_left_out_and_counted():
    records = plan_records(np.random.default_rng(3), seeds=8, ends_delta=0.0, mixed_delta=0.0,
                           ends_bytes=29_500)  # the 30 kB plan's bytes ...
    for r in records:
        if r["order"] == "mixed":
            r["units_selected"] = [0, 1, 2, 3, 4]  # ... and units: the same model
    (f,) = frontier.analyse(records)
    (by_mixed,) = [c for c in f.comparisons if c.against == "mixed"]
    assert by_mixed.identical == 8 and by_mixed.pairs == 0


def test_the_report_places_ends8_beside_last_n_and_the_mixed_plans():
    frontiers = frontier.analyse(plan_records(np.random.default_rng(4), seeds=10, ends_delta=0.6, mixed_delta=-0.2))
    table = "\n".join(frontier_report.points_table(frontiers, "m"))
    assert "| qat | ends8 | 45,000 | 10 |" in table and "| last-N W8 | 10 |" in table and "| mixed | 10 |" in table
    verdicts = "\n".join(frontier_report.verdict_table(frontiers, "m"))
    assert "ends8 (first+last W8, rest W4) vs mixed" in verdicts
    assert "ends8 (first+last W8, rest W4) vs mixed" in frontier.verdict(frontiers, "m")


def test_a_report_of_the_new_orders_names_both_tests(tmp_path):
    from harness.analysis import report

    rows = plan_records(np.random.default_rng(5), seeds=3, ends_delta=0.5, mixed_delta=0.0)
    rows += [dict(r, case_id=f"m-{r['order']}{r['n']}-s{r['seed']}", weight_bytes=100_000 - 10_000 * r["n"],
                  control_accuracy=0.9, quant_accuracy=0.9 - r["accuracy_drop_pp"] / 100, units_total=5)
             for r in inner_records(0.4, seeds=range(3), model="m")]
    text = report.write_report(rows, tmp_path).path.read_text()
    assert "m inner w8 qat: quantizing the last N inner units (the first and last unit held out)" in text
    assert "ends8 (first+last W8, rest W4) vs mixed" in text and "| qat | ends8 | 45,000 | 3 |" in text
    assert (tmp_path / "plots" / "drop-m-qat.png").exists()
