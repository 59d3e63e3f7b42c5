"""harness.analysis.plan and the `python -m harness plan` command on synthetic records."""

import json
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from harness.analysis import drop_fit, plan
from harness.results import records as records_mod
from harness.__main__ import main

UNITS = 12


def linear_records(slope, ns=(1, 2, 3, 4, 6, 8, 10, 12), seeds=3, noise=0.005, bits=8, model="m",
                   method="qat", order="last", rng_seed=0):
    rng = np.random.default_rng(rng_seed)
    return [dict(case_id=f"{model}-{order}{n}-w{bits}a8" + (f"-s{s}" if s else ""), status="passed", model=model,
                 order=order, n=n, weight_bits=bits, method=method, seed=s, units_total=UNITS,
                 param_fraction=n / UNITS, accuracy_drop_pp=slope * n + float(rng.normal(0, noise)),
                 tflite_bytes=1000 - 50 * n, config_hash="h", schema_version=records_mod.SCHEMA_VERSION)
            for n in ns for s in range(seeds)]


def group_plan(records, budget, **kwargs):
    return plan.plan_group(drop_fit.fit_group(records), budget, records=records, **kwargs)


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(slope=st.floats(0.1, 1.0), budget=st.floats(0.2, 5.0), rng_seed=st.integers(0, 2**31))
def test_planner_returns_largest_n_within_budget(slope, budget, rng_seed):
    ratio = budget / slope
    assume(ratio >= 1.2 and 0.15 < ratio - math.floor(ratio) < 0.85)  # not on an N boundary
    result = group_plan(linear_records(slope, rng_seed=rng_seed), budget)
    assert result.n == min(math.floor(ratio), UNITS)
    assert result.upper95_pp <= budget
    if result.n < UNITS:
        assert drop_fit.predict(drop_fit.fit_group(linear_records(slope, rng_seed=rng_seed)), result.n + 1).upper95 > budget


def test_reason_names_the_answer_and_the_cap():
    result = group_plan(linear_records(0.5, ns=(1, 2, 4, 6, 8)), 100.0)
    assert result.n == 8 and "largest measured N" in result.reason and result.ok
    wider = group_plan(linear_records(0.5, ns=(1, 2, 4, 6, 8)), 100.0, extrapolate=True)
    assert wider.n == UNITS and "extrapolated" in wider.reason


def test_upper_bound_not_the_estimate_decides():
    noisy = linear_records(0.5, noise=0.3, rng_seed=1)
    result = group_plan(noisy, 2.1)  # the estimate at N=4 is ~2.0 but its upper bound is well above 2.1
    assert result.n is not None and result.n < 4
    assert result.upper95_pp <= 2.1


def test_no_n_fits():
    result = group_plan(linear_records(0.5), 0.0)
    assert result.n is None and not result.ok and "no N in 1..12 fits" in result.reason


def test_size_budget_without_unit_table_interpolates_and_says_so():
    records = linear_records(0.5)
    fits = group_plan(records, 2.2, size_budget=850)
    assert fits.n == 4 and "interpolated between measured N (records have no unit_table)" in fits.reason  # 800 B
    too_small = group_plan(records, 2.2, size_budget=700)
    assert too_small.n is None and "size budget" in too_small.reason and "no unit_table" in too_small.reason
    assert group_plan(records, 100, size_budget=400).n == UNITS  # more quantized is also smaller
    assert group_plan(records, 100, size_budget=399).n is None


def test_size_is_interpolated_between_measured_n_only():
    sizes = plan.size_table(linear_records(0.5, ns=(2, 4, 8)))
    assert sizes == ((2, 900.0), (4, 800.0), (8, 600.0))
    assert plan.bytes_at(sizes, 6) == 700.0
    assert plan.bytes_at(sizes, 1) is None and plan.bytes_at(sizes, 9) is None


def test_not_enough_n_says_so():
    result = group_plan(linear_records(0.5, ns=(1, 2)), 3.0)
    assert result.n is None and "not enough N" in result.reason


@pytest.mark.parametrize("budget", [-0.1, float("nan"), float("inf"), "x"])
def test_bad_budget_raises(budget):
    with pytest.raises(ValueError):
        plan.check_budget(budget)
    with pytest.raises(ValueError):
        plan.plan_table(linear_records(0.5), budget)


def test_bad_size_budget_raises():
    with pytest.raises(ValueError):
        plan.check_budget(1.0, size_budget=0)


def test_plan_table_across_bits():
    records = linear_records(0.1, bits=8) + linear_records(0.5, bits=4) + linear_records(0.5, bits=4, order="first")
    plans = {p.weight_bits: p for p in plan.plan_table(records, 1.3)}
    assert set(plans) == {8, 4} and all(p.order == "last" for p in plans.values())
    assert plans[8].n == UNITS and plans[4].n == 2
    lines = plan.format_plans(plans.values())
    assert lines[0].split()[:5] == ["model", "order", "bits", "method", "N"] and len(lines) == 3


def test_plan_table_filters_model():
    records = linear_records(0.1) + linear_records(0.5, model="other")
    assert [p.model for p in plan.plan_table(records, 1.0, model="other")] == ["other"]


def write_jsonl(folder, records):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def test_cli_prints_plan_table(tmp_path, capsys):
    run = write_jsonl(tmp_path / "run", linear_records(0.1, bits=8) + linear_records(0.5, bits=4))
    assert main(["plan", "--results", str(run), "--budget", "1.3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "plan: accuracy budget 1.3 pp"
    rows = {line.split()[2]: line.split()[4] for line in out[2:]}
    assert rows == {"4": "2", "8": "12"}


def test_cli_reads_case_files(tmp_path, capsys):
    run = tmp_path / "run"
    for record in linear_records(0.5):
        records_mod.write_atomic(records_mod.case_path(run, record["case_id"]), record)
    assert main(["plan", "--results", str(run), "--budget", "2.2", "--size-budget", "850", "--model", "m"]) == 0
    assert " 4 " in capsys.readouterr().out.splitlines()[2]


@pytest.mark.parametrize("argv_tail, expected", [
    (["--results", "MISSING", "--budget", "1"], "results folder not found"),
    (["--results", "RUN", "--budget", "-1"], "budget must be >= 0"),
    (["--results", "RUN", "--budget", "abc"], "invalid float value"),
    (["--results", "RUN", "--budget", "1", "--model", "nope"], "model 'nope' not in"),
    (["--results", "EMPTY", "--budget", "1"], "no records"),
    (["--results", "RUN"], "required"),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, argv_tail, expected):
    write_jsonl(tmp_path / "RUN", linear_records(0.5))
    (tmp_path / "EMPTY").mkdir()
    argv = ["plan"] + [str(tmp_path / a) if a in ("RUN", "MISSING", "EMPTY") else a for a in argv_tail]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and expected in captured.err


def test_cli_needs_a_subcommand(capsys):
    assert main([]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def unit_table(units=UNITS):
    return [dict(index=i, kind="dense", weight_layer=f"d{i}", kernel_params=99, bias_params=1, channels=1, kernels=1,
                 members=[f"d{i}"]) for i in range(units)]


def with_sizes(records, bits=8):
    """Exact weight bytes at W8: float unit 400 B, quantized unit 99 + 4 B; overhead grows with N."""
    return [dict(r, unit_table=unit_table(), weight_bytes=400 * (UNITS - r["n"]) + 103 * r["n"],
                 overhead_bytes=500 + 20 * r["n"], tflite_bytes=400 * (UNITS - r["n"]) + 103 * r["n"] + 500 + 20 * r["n"])
            for r in records]


def test_exact_size_at_unmeasured_n_uses_the_unit_table_and_the_nearest_overhead():
    records = with_sizes(linear_records(0.1, ns=(1, 2, 3, 4, 6, 8, 10, 12)))
    model = plan.size_model(records, "last", 8)
    assert model.exact and "exact weight bytes" in model.source
    assert model.weight_bytes(5) == 400 * 7 + 103 * 5
    assert model.file_bytes(5) == 400 * 7 + 103 * 5 + 620  # N=4 and 6 tie: the larger N's overhead
    assert model.file_bytes(7) == 400 * 5 + 103 * 7 + 660
    for n in (4, 6, 12):  # measured N: exactly the measured file
        assert model.file_bytes(n) == 400 * (UNITS - n) + 103 * n + 500 + 20 * n
    budget = 400 * 7 + 103 * 5 + 620
    result = group_plan(records, 100.0, size_budget=budget)  # more N is smaller: every N >= 5 fits; max is 12
    assert result.n == UNITS
    smaller = group_plan(records, 0.75, size_budget=budget)  # accuracy allows up to N=7 (0.1*N + band)
    assert smaller.n is not None and 5 <= smaller.n <= 7 and "exact weight bytes" in smaller.reason
    assert smaller.predicted_bytes == model.file_bytes(smaller.n)
    assert smaller.predicted_fraction == pytest.approx(smaller.n / UNITS)


def test_exact_size_at_four_bits_packs_nibbles():
    model = plan.size_model(with_sizes(linear_records(0.1)), "last", 4)
    assert model.weight_bytes(2) == 400 * (UNITS - 2) + 2 * (50 + 4)  # ceil(99 * 4 / 8) = 50


def test_a_diverged_run_makes_its_n_not_recommended():
    records = linear_records(0.1)
    diverged = dict(records[-1], case_id="m-last12-nan", status="nan", accuracy_drop_pp=None, seed=9)
    assert group_plan(records, 100.0).n == 12
    result = group_plan(records + [diverged], 100.0)
    assert result.n == 10 and "N=12: 1 of 4 runs diverged" in result.reason
    assert "N=11 unmeasured, next to diverged runs (N=12: 1 of 4)" in result.reason
    result = group_plan([r for r in records if r["n"] != 12] + [diverged], 100.0, extrapolate=True)
    assert result.n == 10 and "N=12: 1 of 1 runs diverged" in result.reason


def test_all_n_diverged_or_over_budget_says_why():
    records = linear_records(0.5, ns=(1, 2, 3))
    assert group_plan(records, 0.6).n == 1
    records += [dict(r, status="nan", accuracy_drop_pp=None, seed=5) for r in records if r["n"] == 1]
    result = group_plan(records, 0.6)
    assert result.n is None and "2 over the accuracy budget" in result.reason
    assert "1 not recommended (N=1: 3 of 6 runs diverged)" in result.reason


def test_divergence_table():
    records = [dict(n=1, status="passed"), dict(n=1, status="nan"), dict(n=2, status="error"), dict(n=3, status="failed")]
    table = plan.divergence(records)
    assert table == {1: (1, 2), 3: (0, 1)}
    assert plan.diverged_reason(table, 1) == "N=1: 1 of 2 runs diverged" and plan.diverged_reason(table, 3) is None
    assert plan.diverged_reason(table, 2) is not None and plan.diverged_reason(table, 5) is None


def test_size_check_reports_max_relative_error():
    records = [dict(r, weight_bytes=1000 - 10 * r["n"], predicted_weight_bytes=1000 - 10 * r["n"]) for r in linear_records(0.5)]
    assert plan.size_check(records)[0].max_rel_error == 0 and plan.size_check(records)[0].ok
    records[4] = dict(records[4], predicted_weight_bytes=records[4]["weight_bytes"] * 1.02)
    check = plan.size_check(records)[0]
    assert check.max_rel_error == pytest.approx(0.02) and not check.ok
    assert check.worst_case_id == records[4]["case_id"]
