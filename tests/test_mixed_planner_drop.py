"""The mixed planner's calibrated drop in pp (issue 17, item 4): drop = a * summed HAWQ-V2 score, fitted
over seeds from a run's records. Simulations with a known slope, the refusals, the record matching, and
``python -m harness plan --budget PP --size-budget BYTES`` as a user runs it. No TensorFlow."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.analysis import mixed_planner as mp
from harness.results import records
from harness.design.units import Unit

ROOT = Path(__file__).resolve().parents[1]
MLP_SHAPES = [(100352, 128), (32768, 256), (32768, 128), (16384, 128), (1280, 10)]  # 784-128-256-128-128-10
LAYERS = ["dense_1", "dense_2", "dense_3", "dense_4", "logits"]
SCORES = {8: [1.29e-5, 3.87e-6, 8.0e-7, 1.67e-6, 3.79e-6], 4: [4.23e-3, 1.28e-3, 2.65e-4, 5.41e-4, 1.23e-3]}
SLOPE = 150.0  # pp per unit of score in the simulated runs


def simulated_points(rng, seeds=5, slope=SLOPE, shift_sd=0.15, noise_sd=0.2):
    """Every single unit and the whole network at 4 and 8 bits, per seed: its own pre-trained model's scores
    (a seed factor), drop = slope * cost + a seed shift + noise, measured to 0.1 pp (1000 test examples)."""
    points = []
    for seed in range(seeds):
        factor, shift = rng.uniform(0.5, 1.5), rng.normal(0, shift_sd)
        for bits, scores in SCORES.items():
            for units in [[i] for i in range(5)] + [list(range(5))]:
                cost = factor * sum(scores[i] for i in units)
                drop = round(slope * cost + shift + rng.normal(0, noise_sd), 1)
                points.append(mp.Point(seed, cost, drop, "single" if len(units) == 1 else "last", None))
    return points


def test_the_slope_interval_covers_the_true_slope_in_about_95_percent_of_simulated_runs():
    rng = np.random.default_rng(17)
    covered, predicted = 0, 0
    for _ in range(200):
        cal = mp.calibrate(simulated_points(rng))
        low, high = cal.slope_interval
        covered += low <= SLOPE <= high
        cost = 2.1e-3  # a plan's cost (8444F's); one new run of it by a new seed
        new = round(SLOPE * cost + rng.normal(0, 0.15) + rng.normal(0, 0.2), 1)
        _, lower, upper = cal.predict(cost)
        predicted += lower <= new <= upper
    assert 0.90 <= covered / 200 <= 0.99, covered
    assert predicted / 200 >= 0.92, predicted  # the prediction interval is conservative (t with k - 1 df)


def test_a_fit_without_enough_cases_or_seeds_is_refused_with_no_number():
    one = mp.calibrate([mp.Point(0, 1e-3, 0.2, "single", None)])
    assert not one.fitted and one.reason == "too few measured cases to calibrate (1)"
    assert math.isnan(one.slope) and mp.calibrate([]).reason == "too few measured cases to calibrate (0)"
    one_seed = mp.calibrate([p for p in simulated_points(np.random.default_rng(0)) if p.seed == 0])
    assert not one_seed.fitted and one_seed.reason.startswith("too few seeds to calibrate (1)")
    assert mp.describe(one_seed).startswith("no calibration: too few seeds")


def test_a_noiseless_line_is_recovered_exactly_with_its_leave_one_seed_out_error():
    points = [mp.Point(s, c, 100.0 * c, "single", None) for s in range(3) for c in (1e-3, 2e-3, 5e-3)]
    cal = mp.calibrate(points)
    assert cal.slope == pytest.approx(100.0) and cal.slope_se == pytest.approx(0.0, abs=1e-9)
    assert cal.loo_rms == pytest.approx(0.0, abs=1e-9) and cal.zero_rms > 0.2
    assert cal.predict(2e-3) == pytest.approx((0.2, 0.2, 0.2))
    floored = mp.calibrate([mp.Point(p.seed, p.cost, p.drop, p.order, 0.04) for p in points])
    assert floored.scatter_sd == pytest.approx(0.2)  # the binomial variance of a paired drop is the floor


def unit_table():
    return [dict(index=i, kind="dense", weight_layer=name, members=[name], kernel_params=k, bias_params=b,
                 channels=b, kernels=1) for i, ((k, b), name) in enumerate(zip(MLP_SHAPES, LAYERS))]


def key(seed):
    return f"mlp-smoke-s{seed}-k{seed}"


def run_records(make_record, seeds=range(5), slope=SLOPE, rng_seed=3):
    """Sensitivity cases (all units, 8 and 4 bits; they carry the scores) and single-unit cases (they do not),
    per seed: each seed its own pre-trained model (scores times a factor), drops on the line plus noise."""
    rng, out = np.random.default_rng(rng_seed), []
    for seed in seeds:
        factor, suffix = 1.0 + 0.1 * seed, f"-s{seed}" if seed else ""
        for bits, scores in SCORES.items():
            units = [{"index": i, "weight_layer": n, "trace": 1.0, "trace_stderr": 0.1, "noise": 1e-3,
                      "score": factor * scores[i]} for i, n in enumerate(LAYERS)]
            field = {"bits": bits, "method": "hutchinson", "examples": 256, "probes": 16, "seed": 0,
                     "seconds": 0.5, "cached": False, "pretrained_key": key(seed), "units": units}
            for order, chosen in [("sensitivity", list(range(5)))] + [("single", [i]) for i in range(5)]:
                drop = round(slope * factor * sum(scores[i] for i in chosen) + rng.normal(0, 0.1), 1)
                n = len(chosen) if order == "sensitivity" else chosen[0]
                out.append(make_record(
                    model="mlp", order=order, n=n, weight_bits=bits, seed=seed, units_selected=chosen,
                    case_id=f"mlp-{'sens' if order == 'sensitivity' else 'single'}{n}-w{bits}a8{suffix}",
                    accuracy_drop_pp=drop, control_key=f"{key(seed)}-control-s{seed}-c", unit_table=unit_table(),
                    sensitivity=field if order == "sensitivity" else None))
    return out


def test_single_cases_take_the_scores_of_their_own_pretrained_model(make_record):
    found = run_records(make_record, seeds=(0, 1))
    ptq = make_record(model="mlp", order="single", n=0, method="ptq", units_selected=[0], accuracy_drop_pp=9.0,
                      case_id="mlp-single0-w8a8-ptq", control_key=f"{key(0)}-control-s0-c")
    repeat = dict(found[1], case_id="mlp-single0-w8a8-again", accuracy_drop_pp=found[1]["accuracy_drop_pp"] + 0.2)
    points = mp.calibration_points(found + [ptq, repeat], "mlp")
    assert len(points) == 24  # 2 seeds x 2 widths x 6 selections; the PTQ case is not QAT, the repeat averaged
    single = [p for p in points if p.seed == 1 and p.order == "single" and p.cost < 1e-4]
    assert sorted(p.cost for p in single) == pytest.approx(sorted(1.1 * s for s in SCORES[8]))
    again = next(p for p in points if p.seed == 0 and p.cost == pytest.approx(SCORES[8][0]))
    assert again.drop == pytest.approx(found[1]["accuracy_drop_pp"] + 0.1)


def plan_cli(*args):
    return subprocess.run([sys.executable, "-m", "harness", "plan", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def write_run(folder, items):
    for record in items:
        records.write_atomic(records.case_path(folder, record["case_id"]), record)
    return folder


def test_the_plan_cli_gives_the_selection_its_calibrated_drop_and_the_budget_verdict(tmp_path, make_record):
    run = write_run(tmp_path / "run", run_records(make_record))
    done = plan_cli("--results", run, "--budget", 0.5, "--size-budget", 150000)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "plan 8444F: predicted weight bytes 149,032 <= 150,000 (exact)" in out
    assert "predicted drop " in out and "(95% prediction interval of one run)" in out
    assert "mean of 5 seeds' slopes, t with 4 df" in out and "leave-one-seed-out RMS error" in out
    assert "accuracy budget 0.5 pp: upper 95% bound" in out and "within the budget" in out
    assert ("verify (mlp-mixed-b150k): pytest benchmarks -k mlp-mixed-b150k --qat-models mlp --qat-tier smoke "
            "--qat-orders mixed --qat-mixed-budgets 150000 --qat-seeds 0") in out
    tight = plan_cli("--results", run, "--budget", 0.05, "--size-budget", 150000)
    assert tight.returncode == 0 and "NOT within the budget" in tight.stdout
    assert plan_cli("--results", run, "--budget", 0.5, "--size-budget", 150000, "--order", "mixed").stdout == out


def test_the_answer_says_why_there_is_no_predicted_drop(make_record):
    few = run_records(make_record, seeds=(0,))
    answer = mp.mixed_answer(few, "mlp", 150_000, 0.5)
    assert answer.plan.tag == "8444F" and answer.predicted is None
    lines = mp.format_answer(answer)
    assert "  predicted drop: none (too few seeds to calibrate (1): the slope's interval is over seeds and needs two)" in lines
    assert "  accuracy budget 0.5 pp: not checked: no calibrated drop" in lines


def test_a_budget_no_plan_can_meet_is_said_plainly_and_a_roomier_plan_is_offered(make_record):
    answer = mp.mixed_answer(run_records(make_record), "mlp", 100_000, 1e-6)
    text = "\n".join(mp.format_answer(answer))
    assert "NOT within the budget" in text and "no plan up to the float weights is predicted within it" in text
    steep = mp.mixed_answer(run_records(make_record, slope=2000.0), "mlp", 100_000, 3.0)
    found = mp.roomier_plan(steep)
    assert found is not None and found[0] > 100_000 and found[2][2] <= 3.0 < steep.predicted[2]
    assert f"at --size-budget {found[0]}" in "\n".join(mp.format_answer(steep))


@pytest.mark.parametrize("budget, expected", [
    ("-0.5", "accuracy budget must be >= 0"),
    ("nan", "accuracy budget must be >= 0"),
    ("abc", "invalid float value"),
])
@pytest.mark.parametrize("extra", [(), ("--order", "mixed")])
def test_a_bad_accuracy_budget_with_the_mixed_plan_is_a_one_line_error(tmp_path, make_record, budget, expected, extra):
    run = write_run(tmp_path / "run", run_records(make_record, seeds=(0, 1)))
    done = plan_cli("--results", run, "--budget", budget, "--size-budget", 150000, *extra)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and expected in done.stderr


def test_both_budgets_give_the_last_n_table_then_the_mixed_plan(tmp_path, make_record):
    last = [make_record(model="mlp", order="last", n=n, seed=seed, units_selected=list(range(5 - n, 5)),
                        accuracy_drop_pp=0.1 * n, control_key=f"{key(seed)}-control-s{seed}-c", unit_table=unit_table())
            for seed in range(3) for n in range(1, 6)]
    run = write_run(tmp_path / "run", run_records(make_record) + last)
    done = plan_cli("--results", run, "--budget", 0.5, "--size-budget", 150000)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "plan: accuracy budget 0.5 pp, size budget 150,000 B" and lines[1].startswith("model")
    assert any(line.startswith("mixed plan: mlp, weight budget 150,000 B") for line in lines)
    assert "accuracy budget 0.5 pp: upper 95% bound" in done.stdout
