"""The latency ratio in the report (harness/analysis/latency_report.py), the planner's latency budget and
the frontier's latency axis, on synthetic records. Pure: no TensorFlow, no timing."""

import pytest

from harness.__main__ import main
from harness.analysis import drop_fit, frontier, latency_report, plan, report
from test_plan import linear_records, write_jsonl

# a partial graph pays its QUANTIZE/DEQUANTIZE crossings at small N and gains past some N
RATIO = {1: 1.12, 2: 1.05, 3: 0.98, 4: 0.9, 6: 0.8, 8: 0.7, 10: 0.6, 12: 0.5}


def with_latency(records, ratio=RATIO, half_width=0.03, untimed=()):
    out = []
    for r in records:
        r = dict(r, env={"machine": {"cpu": {"model": "AMD EPYC", "flags": ["avx2"]}}})
        if r["n"] not in untimed:
            value = ratio[r["n"]] + 0.01 * r["seed"]
            r.update(latency_ratio=value, latency_ratio_ci95=[value - half_width, value + half_width],
                     quantize_ops=1, dequantize_ops=1)
        out.append(r)
    return out


def latency_plan(records, budget=100.0, **kwargs):
    return plan.plan_group(drop_fit.fit_group(records), budget, records=records, **kwargs)


def test_upper_bounds_are_the_highest_upper_bound_of_each_n():
    bounds = latency_report.upper_bounds(with_latency(linear_records(0.1)))
    assert bounds[3] == pytest.approx(0.98 + 0.02 + 0.03) and bounds[12] == pytest.approx(0.5 + 0.02 + 0.03)


def test_the_planner_takes_the_largest_n_within_the_latency_budget_and_the_accuracy_budget():
    timed = with_latency(linear_records(0.1))
    assert latency_plan(timed).n == 12  # no latency budget: accuracy alone
    fast = latency_plan(timed, latency_budget=0.9)  # N=4's upper bound is 0.95: over
    assert fast.n == 12 and fast.latency_upper == pytest.approx(0.55) and "latency ratio" in fast.reason
    tight = latency_plan(timed, 0.7, latency_budget=1.0)  # accuracy allows N <= ~6, latency N >= 3
    assert tight.n == 6 and tight.latency_upper <= 1.0
    none = latency_plan(timed, 0.25, latency_budget=1.0)  # accuracy allows N = 1 or 2: both slower than 1.0
    assert none.n is None and "over (or not timed for) the latency budget" in none.reason


def test_an_untimed_n_is_not_accepted_under_a_latency_budget():
    result = latency_plan(with_latency(linear_records(0.1), untimed=(12, 10)), latency_budget=1.0)
    assert result.n == 8


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "fast", True])
def test_a_latency_budget_must_be_a_positive_ratio(bad):
    with pytest.raises(ValueError, match="latency budget"):
        plan.check_latency_budget(bad)


def test_the_cli_plans_with_a_latency_budget(tmp_path, capsys):
    run = write_jsonl(tmp_path / "run", with_latency(linear_records(0.1)))
    assert main(["plan", "--results", str(run), "--budget", "0.7", "--latency-budget", "1.0"]) == 0
    out = capsys.readouterr().out
    assert "latency ratio budget 1" in out and "m      last   8     qat     6" in out
    assert main(["plan", "--results", str(run), "--budget", "0.7", "--latency-budget", "0"]) == 2


def test_the_report_has_a_latency_table_and_plot_per_model(tmp_path):
    records = with_latency(linear_records(0.1), untimed=(12,))
    result = report.write_report(records, tmp_path)
    text = result.path.read_text()
    assert "latency-m.png" in text
    section = text[text.index("### Inference latency vs N"):].splitlines()
    row = next(line for line in section if line.startswith("| last | 8 | qat | 3 |"))
    assert row == "| last | 8 | qat | 3 | 0.30 | 850 | 0.99 [0.95, 1.03] (3 runs) | 1/1 |"
    assert "not timed" in next(line for line in section if line.startswith("| last | 8 | qat | 12 |"))
    assert (tmp_path / "plots" / "latency-m.png").read_bytes().startswith(b"\x89PNG")


def test_latency_rows_keep_each_kind_of_unit_apart_and_n_in_numeric_order():
    base = with_latency(linear_records(0.1))
    kinds = [dict(r, order="type", n=0, kind=kind, latency_ratio=ratio, latency_ratio_ci95=[ratio, ratio])
             for kind, ratio in (("attention", 0.5), ("ffn", 0.7)) for r in base if r["n"] == 1]
    lines = latency_report.table(base + kinds)
    assert any(line.startswith("| type | 8 | qat | attention | ") and "0.50 [0.50, 0.50]" in line for line in lines)
    assert any(line.startswith("| type | 8 | qat | ffn | ") and "0.70 [0.70, 0.70]" in line for line in lines)
    kinds = [line.split(" | ")[3] for line in lines if line.startswith("| type | 8 |")]
    assert kinds == ["attention", "ffn"]
    last_ns = [int(line.split(" | ")[3]) for line in lines if line.startswith("| last | 8 |")]
    assert last_ns == sorted(last_ns) and 12 in last_ns


def test_a_run_without_latency_has_no_latency_section(tmp_path):
    text = report.write_report(linear_records(0.1), tmp_path).path.read_text()
    assert "Inference latency" not in text and not (tmp_path / "plots" / "latency-m.png").exists()


def test_frontier_points_carry_the_median_latency_ratio():
    points = {p.n: p for p in frontier.frontier_points(with_latency(linear_records(0.1), untimed=(1,)))}
    assert points[4].latency_ratio == pytest.approx(0.91) and points[1].latency_ratio is None
