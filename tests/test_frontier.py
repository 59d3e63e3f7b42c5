"""harness.analysis.frontier: simulations with a known truth, interpolation exactness, no extrapolation,
per-seed bytes (sensitivity, mixed) and bytes that must agree (last, first), the Holm family, and the
report section. Fast, no TensorFlow."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.analysis import frontier, frontier_report, report

FLOAT_BYTES = 100_000
STEP = {8: 15_000, 4: 18_000}  # last-N weight bytes: FLOAT_BYTES - N * STEP[bits]
UNITS = 5
PNG = b"\x89PNG\r\n\x1a\n"


def rec(order, n, bits, seed, drop, weight_bytes, model="m", method="qat", status="passed"):
    return dict(case_id=f"{model}-{order}{n}-w{bits}a8-s{seed}", model=model, order=order, n=n, weight_bits=bits,
                method=method, seed=seed, status=status, accuracy_drop_pp=drop, weight_bytes=weight_bytes,
                predicted_weight_bytes=weight_bytes, units_total=UNITS, control_accuracy=0.9,
                quant_accuracy=0.9 - (drop or 0) / 100, param_fraction=n / UNITS, config_hash="h")


def truth(weight_bytes):
    """The true drop of last-N at these bytes, the same line at every bit width (pp)."""
    return 2.0 * (FLOAT_BYTES - weight_bytes) / FLOAT_BYTES


def simulate(rng, seeds, delta, bits=(8, 4), seed_sd=0.3, run_sd=0.05, mixed_budgets=(), jitter=0):
    """last-N at N = 0..5 and sensitivity-N at N = 1..4 (bytes between the last-N ones, so matching
    interpolates), drop = truth + delta (sensitivity only) + a shift per seed + noise per run; mixed
    plans at each budget with bytes just under it, also truth + delta. ``jitter`` > 0: each seed's
    sensitivity-N bytes move by up to +-jitter and its mixed bytes down by up to jitter (its own model
    picks other units), still bracketed by last-N, the drop still truth + delta at the seed's bytes."""
    records = []
    for seed in range(seeds):
        shift = float(rng.normal(0, seed_sd))
        for b in bits:
            for n in range(UNITS + 1):
                size = FLOAT_BYTES - n * STEP[b]
                records.append(rec("last", n, b, seed, truth(size) + shift + rng.normal(0, run_sd), size))
            for n in range(1, UNITS):
                size = FLOAT_BYTES - n * STEP[b] - 4_000 + (int(rng.integers(-jitter, jitter + 1)) if jitter else 0)
                records.append(rec("sensitivity", n, b, seed, truth(size) + delta + shift + rng.normal(0, run_sd), size))
        for budget in mixed_budgets:
            size = budget - 500 - (int(rng.integers(0, jitter + 1)) if jitter else 0)
            records.append(rec("mixed", budget, 4, seed, truth(size) + delta + shift + rng.normal(0, run_sd), size))
    return records


def comparisons(records, **kwargs):
    return [c for f in frontier.analyse(records, **kwargs) for c in f.comparisons]


def test_sensitivity_that_is_better_beats_last_n_with_enough_seeds():
    found = comparisons(simulate(np.random.default_rng(1), seeds=10, delta=-0.5))
    assert [c.name for c in found] == ["sensitivity-N W8 vs last-N W8", "sensitivity-N W4 vs last-N W4"]
    for c in found:
        assert c.verdict == "sensitivity-N beats last-N at matched bytes", c.sentence()
        assert c.pairs == 10 and c.n_points == 4 and abs(c.mean_diff + 0.5) < 0.05 and c.high < 0 and c.p_holm < 0.05
    line = frontier.verdict(frontier.analyse(simulate(np.random.default_rng(1), seeds=10, delta=-0.5)), "m")
    assert line.startswith("**m** frontier: at matched weight bytes, ") and "beats last-N" in line


def test_a_worse_selection_loses_to_last_n():
    found = comparisons(simulate(np.random.default_rng(2), seeds=10, delta=0.5, bits=(8,)))
    assert [c.verdict for c in found] == ["last-N beats sensitivity-N"]


def test_equal_selections_are_called_different_at_about_the_nominal_rate():
    rng = np.random.default_rng(3)
    runs = 200
    hits = sum(c.verdict != "no significant difference (8 pairs)"
               for _ in range(runs) for c in comparisons(simulate(rng, seeds=8, delta=0.0, bits=(4,))))
    # exact sign-flip test, 8 seeds: level 12/256 = 4.7%; 200 runs put 3 SD at +-4.5 points
    assert 0.0 < hits / runs <= 0.095, hits


def test_two_seeds_are_too_few_pairs():
    found = comparisons(simulate(np.random.default_rng(4), seeds=2, delta=-3.0, bits=(8,)))
    (c,) = found
    assert c.pairs == 2 and c.verdict == "too few pairs (2 < 6)"
    assert "too few pairs" in c.sentence() and "at best 0.5" in c.sentence()
    assert "too few pairs to tell" in frontier.verdict(frontier.analyse(simulate(np.random.default_rng(4), 2, -3.0)), "m")


def test_one_seed_has_no_interval_and_no_nan_in_the_text(tmp_path):
    records = simulate(np.random.default_rng(4), seeds=1, delta=-1.0, bits=(8,))
    (c,) = comparisons(records)
    assert c.pairs == 1 and math.isnan(c.low) and "nan" not in c.sentence() and "too few pairs (1 < 6)" in c.sentence()
    assert "nan" not in report.write_report(records, tmp_path).path.read_text()


def test_too_few_follows_order_tests_rule_with_holm():
    """3 seeds can never reach p < 0.05 with the exact sign-flip test (best 0.25), whatever the effect."""
    found = comparisons(simulate(np.random.default_rng(5), seeds=3, delta=-5.0, run_sd=0.0))
    assert all(c.verdict.startswith("too few pairs (3 < 7)") for c in found)  # 2 tests: 2 * 2^-5 < 0.05
    assert all(c.high < 0 for c in found)  # the t interval is still reported


def segment_value(knots, x):
    """The piecewise-linear function through sorted, distinct knots at x, by its segment formula."""
    for (x0, y0), (x1, y1) in zip(knots, knots[1:]):
        if x0 <= x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    raise AssertionError("outside")


@st.composite
def curves(draw):
    """A monotone (non-decreasing in bytes saved) piecewise-linear drop curve, query bytes in range."""
    sizes = sorted(draw(st.sets(st.integers(1_000, 2_000_000), min_size=2, max_size=7)))
    steps = draw(st.lists(st.floats(0, 3, allow_nan=False), min_size=len(sizes) - 1, max_size=len(sizes) - 1))
    drops = [sum(steps[i:]) for i in range(len(sizes))]  # fewer bytes, larger drop
    queries = draw(st.lists(st.integers(sizes[0], sizes[-1]), min_size=1, max_size=5, unique=True))
    delta = draw(st.floats(-2, 2, allow_nan=False))
    return list(zip(sizes, drops)), queries, delta


@settings(max_examples=60, deadline=None)
@given(curves())
def test_interpolation_is_exact_on_piecewise_linear_last_n(data):
    knots, queries, delta = data
    xs, ys = zip(*knots)
    for q in queries:
        assert frontier.interpolate(xs[::-1], ys[::-1], q) == pytest.approx(segment_value(knots, q), abs=1e-9)
    records = []
    for seed in (0, 1, 2):
        shift = 0.1 * seed
        records += [rec("last", i, 8, seed, y + shift, x) for i, (x, y) in enumerate(knots[::-1])]
        records += [rec("sensitivity", 1 + j % (UNITS - 1), 8, seed, segment_value(knots, q) + delta + shift, q,
                        model=f"m{j}") for j, q in enumerate(queries)]
        records += [rec("last", i, 8, seed, y + shift, x, model=f"m{j}")
                    for j in range(len(queries)) for i, (x, y) in enumerate(knots[::-1])]
    for c in comparisons(records):
        for m in c.matched:
            assert len(m.pairs) == 3 and m.diffs == pytest.approx([delta] * 3, abs=1e-9)


def test_never_extrapolates():
    assert frontier.interpolate([10, 20], [1.0, 3.0], 9.999) is None
    assert frontier.interpolate([10, 20], [1.0, 3.0], 20.001) is None
    assert frontier.interpolate([20, 10], [3.0, 1.0], 20) == 3.0 and frontier.interpolate([10, 20], [1.0, 3.0], 15) == 2.0
    assert frontier.interpolate([10, 10, 20], [1.0, 2.0, 4.0], 10) == 1.5  # equal bytes: averaged
    records = [rec("last", n, 8, s, 0.1 * n, FLOAT_BYTES - n * STEP[8]) for s in range(3) for n in range(1, 4)]
    records += [rec("sensitivity", 1, 8, s, 0.0, FLOAT_BYTES - 1_000) for s in range(3)]  # above last1's bytes
    (c,) = comparisons(records)
    assert c.pairs == 0 and c.matched[0].pairs == () and math.isnan(c.mean_diff)
    assert "no matched last-N point" in c.sentence() and "no matched last-N point" in frontier.verdict(
        frontier.analyse(records), "m")


def test_mixed_plans_are_matched_with_each_last_n_width_that_brackets_them():
    records = simulate(np.random.default_rng(6), seeds=6, delta=-0.4, mixed_budgets=(30_000, 50_000))
    found = {c.name: c for c in comparisons(records)}
    w8, w4 = found["mixed vs last-N W8"], found["mixed vs last-N W4"]
    # last-N W8 spans 25,000..100,000 B, W4 10,000..100,000 B: both bracket 29,500 and 49,500
    assert w8.n_points == 2 and w4.n_points == 2 and w8.pairs == w4.pairs == 6
    records = simulate(np.random.default_rng(6), seeds=6, delta=-0.4, mixed_budgets=(20_000,))
    found = {c.name: c for c in comparisons(records)}
    assert found["mixed vs last-N W8"].pairs == 0 and found["mixed vs last-N W4"].pairs == 6
    points = [p for f in frontier.analyse(records) for p in f.points if p.selection == "mixed"]
    assert [(p.label, p.bits, p.weight_bytes, p.seeds) for p in points] == [("mixed b20k", None, 19_500, 6)]


def test_sensitivity_with_bytes_that_differ_per_seed_still_beats_last_n():
    records = simulate(np.random.default_rng(11), seeds=10, delta=-0.5, jitter=3_000, mixed_budgets=(30_000,))
    (f,) = frontier.analyse(records)
    sens = [p for p in f.points if p.selection in ("sensitivity", "mixed")]
    assert all(p.problem == "" and p.seeds == 10 and len(p.seed_bytes) == 10 for p in sens)
    assert all(p.bytes_range[0] < p.bytes_range[1] for p in sens)  # the seeds' bytes really differ
    for p in sens:
        assert p.weight_bytes == pytest.approx(np.mean([b for _, b in p.seed_bytes]))
        assert p.bytes_range[0] <= p.weight_bytes <= p.bytes_range[1]
    found = {c.name: c for c in f.comparisons}
    for name in ("sensitivity-N W8 vs last-N W8", "sensitivity-N W4 vs last-N W4"):
        c = found[name]
        assert c.verdict == "sensitivity-N beats last-N at matched bytes", c.sentence()
        assert c.pairs == 10 and c.n_points == 4 and abs(c.mean_diff + 0.5) < 0.05 and c.high < 0
    assert found["mixed vs last-N W4"].verdict == "mixed beats last-N at matched bytes"


def test_each_seed_is_matched_at_its_own_bytes_exactly():
    """No noise: each seed's difference is exactly delta when matched at its own bytes; matching every
    seed at the seed-mean bytes would be off by the last-N slope times the seed's byte offset."""
    records = simulate(np.random.default_rng(12), seeds=4, delta=-0.3, run_sd=0.0, jitter=3_000,
                       mixed_budgets=(30_000, 50_000))
    by_id = {(r["order"], r["n"], r["weight_bits"], r["seed"]): r for r in records}
    found = comparisons(records)
    assert {c.name for c in found} == {"sensitivity-N W8 vs last-N W8", "sensitivity-N W4 vs last-N W4",
                                       "mixed vs last-N W8", "mixed vs last-N W4"}
    for c in found:
        assert c.pairs == 4
        for m in c.matched:
            assert len(m.pairs) == 4 and m.diffs == pytest.approx([-0.3] * 4, abs=1e-9)
            for seed, drop, last in m.pairs:
                own = m.point.bytes_of(seed)
                bits = 4 if m.point.selection == "mixed" else m.point.bits
                assert own == by_id[(m.point.selection, m.point.n, bits, seed)]["weight_bytes"]
                shift = by_id[("last", 0, m.last_bits, seed)]["accuracy_drop_pp"]  # truth(float) = 0
                assert last == pytest.approx(truth(own) + shift, abs=1e-9)
    p = found[0].matched[0].point
    assert p.bytes_text == f"{p.weight_bytes:,.0f} ({p.bytes_range[0]:,}–{p.bytes_range[1]:,})"


@pytest.mark.parametrize("order", ["last", "first"])
def test_last_or_first_seeds_that_disagree_on_bytes_are_an_error_not_an_average(tmp_path, order):
    records = simulate(np.random.default_rng(7), seeds=3, delta=0.0, bits=(8,))
    records += [dict(r, order="first", case_id=r["case_id"].replace("last", "first"))
                for r in records if r["order"] == "last" and r["n"]]
    bad = next(r for r in records if r["order"] == order and r["n"] == 2 and r["seed"] == 1)
    bad["weight_bytes"] += 64
    (f,) = frontier.analyse(records)
    (point,) = [p for p in f.points if p.selection == order and p.n == 2]
    assert point.weight_bytes is None and "seeds disagree on weight bytes (70,000, 70,064)" in point.problem
    assert point.bytes_text == "–" and point.bytes_of(0) is None
    assert f.problems == [f"{frontier.NAMES[order]} N=2 W8: {point.problem}"]
    (c,) = f.comparisons
    if order == "last":  # the last-N curve has no point at 70,000 B: sensitivity N=2 (66,000 B) is matched
        assert c.n_points == 4  # between last N=1 and N=3 instead
    text = report.write_report(records, tmp_path).path.read_text()
    assert f"- **error**: {frontier.NAMES[order]} N=2 W8: seeds disagree on weight bytes" in text


def test_runs_of_one_seed_that_disagree_on_bytes_are_an_error():
    records = simulate(np.random.default_rng(7), seeds=3, delta=0.0, bits=(8,), jitter=1_000)
    again = next(r for r in records if r["order"] == "sensitivity" and r["n"] == 2 and r["seed"] == 1)
    records.append(dict(again, weight_bytes=again["weight_bytes"] + 64))
    (f,) = frontier.analyse(records)
    (point,) = [p for p in f.points if p.selection == "sensitivity" and p.n == 2]
    assert point.weight_bytes is None and point.problem.startswith("runs of seed 1 disagree on weight bytes")
    assert all(m.point.n != 2 for c in f.comparisons for m in c.matched)


def test_first_n_is_plotted_but_not_in_the_holm_family():
    records = simulate(np.random.default_rng(13), seeds=3, delta=-5.0, run_sd=0.0)
    with_first = records + [dict(r, order="first", case_id=r["case_id"].replace("last", "first"))
                            for r in records if r["order"] == "last" and r["n"]]
    assert frontier.COMPARED == ("sensitivity", "mixed", "ends8")
    (f,) = frontier.analyse(with_first)
    assert {p.selection for p in f.points} == {"last", "first", "sensitivity"}
    assert [c.selection for c in f.comparisons] == ["sensitivity", "sensitivity"]
    assert all(c.tests_in_family == 2 and c.verdict == "too few pairs (3 < 7)" for c in f.comparisons)
    assert [c.sentence() for c in f.comparisons] == [c.sentence() for c in comparisons(records)]
    line = frontier.verdict((f,), "m")
    assert "needs 7 seeds after Holm over 2 tests" in line and "first-N" not in line


def test_unmeasured_records_are_skipped_and_counted():
    records = simulate(np.random.default_rng(8), seeds=3, delta=0.0, bits=(8,))
    records.append(rec("sensitivity", 3, 8, 3, None, None, status="error"))
    records.append(rec("sensitivity", 3, 8, 4, float("nan"), 51_000, status="nan"))
    (f,) = frontier.analyse(records)
    assert f.skipped == 2
    (point,) = [p for p in f.points if p.selection == "sensitivity" and p.n == 3]
    assert point.seeds == 3 and point.skipped == 2 and point.problem == ""


def test_selections_of_the_same_units_as_last_n_are_not_compared():
    records = simulate(np.random.default_rng(9), seeds=3, delta=0.0, bits=(8,))
    records += [rec("sensitivity", n, 8, s, 0.0, FLOAT_BYTES - n * STEP[8]) for s in range(3) for n in (0, UNITS)]
    (c,) = comparisons(records)
    assert sorted(m.point.n for m in c.matched) == [1, 2, 3, 4]


def test_alpha_is_checked():
    with pytest.raises(ValueError, match="alpha"):
        frontier.analyse([], alpha=1.0)


def test_report_section_only_with_sensitivity_or_mixed_records(tmp_path):
    plain = [r for r in simulate(np.random.default_rng(10), seeds=3, delta=0.0) if r["order"] == "last"]
    plain += [dict(r, order="first", case_id=r["case_id"].replace("last", "first")) for r in plain if r["n"]]
    result = report.write_report(plain, tmp_path / "plain")
    text = result.path.read_text()
    assert result.frontiers == () and frontier_report.HEADING not in text and "frontier" not in text
    assert not any(p.name.startswith("frontier") for p in result.plots)

    records = simulate(np.random.default_rng(10), seeds=10, delta=-0.5, mixed_budgets=(30_000,))
    records += [rec("last", n, 8, 0, 0.1, FLOAT_BYTES - n * STEP[8], model="other") for n in range(3)]
    result = report.write_report(records, tmp_path / "run")
    text = result.path.read_text()
    assert frontier_report.HEADING in text and "### m" in text and "### other" not in text  # no sens/mixed there
    assert "- **m** frontier: at matched weight bytes, " in text  # among the verdicts
    assert "| qat | sensitivity-N W8 vs last-N W8 | 4 | 10 |" in text and "sensitivity-N beats last-N" in text
    assert "| qat | mixed b30k | 29,500 | 10 |" in text
    (png,) = [p for p in result.plots if p.name == "frontier-m.png"]
    assert png.read_bytes().startswith(PNG) and "(plots/frontier-m.png)" in text


def test_report_shows_per_seed_bytes_and_no_first_n_comparison(tmp_path):
    records = simulate(np.random.default_rng(14), seeds=3, delta=-0.5, bits=(8,), jitter=2_000, mixed_budgets=(50_000,))
    records += [dict(r, order="first", case_id=r["case_id"].replace("last", "first"))
                for r in records if r["order"] == "last" and r["n"]]
    result = report.write_report(records, tmp_path)
    text = result.path.read_text()
    (f,) = result.frontiers
    for p in (p for p in f.points if p.selection in ("sensitivity", "mixed")):
        assert f"| qat | {p.label} | {p.bytes_text} | 3 |" in text and "–" in p.bytes_text
    assert "first-N W8 vs last-N" not in text and "first-N N=" not in text  # plotted, not compared
    (png,) = [p for p in result.plots if p.name == "frontier-m.png"]
    assert png.read_bytes().startswith(PNG)


def test_a_seed_whose_selection_has_last_ns_very_units_is_excluded_and_counted(tmp_path):
    """Sensitivity-2 of seed 0 picks exactly last-2's units at last-2's bytes: the same model, a difference
    of 0 by construction. It is left out of the matching and counted, not averaged in as a zero."""
    records = simulate(np.random.default_rng(10), seeds=8, delta=0.3, bits=(8,))
    last_units = {n: list(range(UNITS - n, UNITS)) for n in range(UNITS + 1)}
    for r in records:
        r["units_selected"] = last_units[r["n"]] if r["order"] == "last" else list(range(r["n"]))
    same = next(r for r in records if r["order"] == "sensitivity" and r["n"] == 2 and r["seed"] == 0)
    last2 = next(r for r in records if r["order"] == "last" and r["n"] == 2 and r["seed"] == 0)
    same.update(units_selected=last2["units_selected"], weight_bytes=last2["weight_bytes"],
                accuracy_drop_pp=last2["accuracy_drop_pp"])
    (c,) = comparisons(records)
    assert c.identical == 1 and sum(len(m.pairs) for m in c.matched) == 4 * 8 - 1
    point2 = next(m for m in c.matched if m.point.n == 2)
    assert 0 not in [seed for seed, _, _ in point2.pairs] and point2.identical == 1
    assert "1 points compared identical unit sets, excluded" in c.sentence()
    lines, _ = frontier_report.section(frontier.analyse(records), tmp_path, "plots", report._save)
    assert any(line.startswith("- 1 matched points compared identical unit sets") for line in lines)
    # without the unit lists nothing is known to be identical: nothing is excluded
    (plain,) = comparisons([{k: v for k, v in r.items() if k != "units_selected"} for r in records])
    assert plain.identical == 0 and sum(len(m.pairs) for m in plain.matched) == 4 * 8
