"""The ``mixed`` order around its plan (issue 17, item 3), without TensorFlow: case ids and the grid, the
option, the audit of storage types against the plan, the record migration to schema 4, and
``python -m harness plan --size-budget`` (a subprocess, as a user runs it)."""

import subprocess
import sys
from pathlib import Path

import pytest

from harness import options
from harness.results import gates, records, schema
from harness.design import grid, mixed, registry
from harness.design.config import Case, QuantConfig, RunOptions, Selection
from harness.design.units import Unit

ROOT = Path(__file__).resolve().parents[1]

# the mlp's units (784-128-256-128-128-10), as the unit table records them
MLP_SHAPES = [(100352, 128), (32768, 256), (32768, 128), (16384, 128), (1280, 10)]
LAYERS = ["dense_1", "dense_2", "dense_3", "dense_4", "logits"]
# HAWQ-V2 scores of a pre-trained mlp (smoke tier, seed 0), rounded
SCORES = {"8": [1.29e-5, 3.87e-6, 8.0e-7, 1.67e-6, 3.79e-6], "4": [4.23e-3, 1.28e-3, 2.65e-4, 5.41e-4, 1.23e-3]}


def mlp_units():
    return tuple(Unit(i, "dense", name, (name,), k, b, channels=b) for i, ((k, b), name) in enumerate(zip(MLP_SHAPES, LAYERS)))


def test_ids_budgets_and_grid():
    assert Selection("mixed", 150_000).id == "mixed-b150k" and Selection("mixed", 150_500).id == "mixed-b150500"
    assert Case("mlp", Selection("mixed", 150_000), QuantConfig(4), seed=2).id == "mlp-mixed-b150k-s2"
    with pytest.raises(ValueError, match="budget"):
        Selection("mixed", 0)
    smoke = [c.id for c in grid.cases_for(RunOptions(tier="smoke"))]
    assert len(smoke) == 51 and not any("mixed" in c for c in smoke)  # the CI-timed tier is untouched
    ref = [c for c in grid.cases_for(RunOptions(tier="reference")) if c.selection.order == "mixed"]
    assert sorted({c.id for c in ref if c.seed == 0}) == ["cnn-mixed-b100k", "cnn-mixed-b200k", "cnn-mixed-b57k",
                                                          "mlp-mixed-b140k", "mlp-mixed-b150k", "mlp-mixed-b300k"]
    assert {c.quant for c in ref} == {QuantConfig(4)} and {c.seed for c in ref} == set(registry.REFERENCE_SEEDS)
    picked = grid.cases_for(RunOptions(tier="smoke", orders=("mixed",), mixed_budgets=(200_000,), models=("mlp",),
                                       bits=(8,), methods=("qat", "ptq")))
    assert [c.id for c in picked] == ["mlp-mixed-b200k", "mlp-mixed-b200k-s1", "mlp-mixed-b200k-s2"]


def test_mlp_reference_budgets_lie_between_all_int4_and_float():
    units = mlp_units()
    float_bytes, int8, int4 = (mixed.plan_bytes(units, [c] * 5) for c in ("float", 8, 4))
    assert (float_bytes, int8, int4) == (736_808, 186_152, 94_376)
    budgets = registry.get("mlp").tier("reference").mixed_budgets
    assert all(int4 < b < float_bytes for b in budgets) and min(budgets) < int8 < max(budgets)


CNN_UNITS = tuple(Unit(i, kind, name, (name,), k, b, channels=b) for i, (kind, name, k, b) in enumerate(
    [("conv", "c1_conv", 288, 32), ("conv", "c2_conv", 18_432, 64), ("conv", "c3_conv", 73_728, 128),
     ("dense", "fc", 16_384, 128), ("dense", "logits", 1_280, 10)]))  # zoo.build_cnn's units


def test_cnn_reference_budgets_force_int4_and_a_choice_between_int8_and_float():
    float_bytes, int8, int4 = (mixed.plan_bytes(CNN_UNITS, [c] * 5) for c in ("float", 8, 4))
    assert (float_bytes, int8, int4) == (441_896, 111_560, 56_504)
    bracket, low, high = registry.get("cnn").tier("reference").mixed_budgets
    assert int4 < bracket < low < int8 < high < float_bytes and bracket == registry.ENDS8_BRACKET["cnn"]
    assert mixed.tied_kinds_of(CNN_UNITS) == ("conv",)
    costs = {8: [1.0] * 5, 4: [2.0] * 5}
    for budget, must in ((low, 4), (high, None)):
        plan = mixed.mixed_plan(CNN_UNITS, costs, budget, chain=True, tied_kinds=("conv",))
        conv_widths = {c for c in plan.choices[:3] if c != mixed.FLOAT}
        assert len(conv_widths) <= 1 and mixed.deployable(plan.choices) and plan.weight_bytes <= budget
        if must:  # at 100 kB the convs at INT8 leave no room: 93,344 B + the Dense units at INT4 > 100,000
            assert conv_widths == {must}


def test_the_reference_tiers_run_the_position_designs_and_leave_sensitivity_to_the_option():
    ids = {c.id for c in grid.cases_for(RunOptions(tier="reference", seeds=(0,)))}  # the tiers' own orders
    assert {"cnn-single0-w4a8", "cnn-lastin2-w4a8", "cnn-firstin1-w8a8-ptq", "cnn-ends8", "mlp-ends8",
            "resnet20-ends8", "minilm2-type-attention-w4a8", "minilm2-single0-w8a8"} <= ids
    assert not any("-sens" in i for i in ids)
    picked = grid.cases_for(RunOptions(tier="reference", seeds=(0,), orders=("sensitivity",), models=("cnn",)))
    assert "cnn-sens3-w4a8" in {c.id for c in picked}
    assert "sensitivity" not in registry.get("cnn").tier("smoke").orders


def test_the_budget_option_is_validated_when_parsed():
    assert options.parse_mixed_budgets("150000, 300000") == (150_000, 300_000)
    for bad in ("0", "150k", "-3", ""):
        with pytest.raises(options.Bad, match="mixed budgets"):
            options.parse_mixed_budgets(bad)
    with pytest.raises(options.Bad, match="needs the mixed order"):
        options.check_options(RunOptions(orders=("last",), mixed_budgets=(150_000,)))


def plan_field(choices):
    units = [{"index": i, "weight_layer": name, "choice": c, "bytes": 0, "cost": 0.0, "trace": 1.0, "trace_stderr": 0.1,
              "noise": {"8": 1e-4, "4": 1e-2}, "score": {b: SCORES[b][i] for b in SCORES}}
             for i, (name, c) in enumerate(zip(LAYERS, choices))]
    return {"budget_bytes": 150_000, "widths": [8, 4], "tag": "".join("F" if c == "float" else str(c) for c in choices),
            "predicted_cost": 0.0, "predicted_bytes": 0, "float_bytes": 736_808, "units": units,
            "scores": {"method": "hutchinson", "examples": 256, "probes": 16, "seed": 0, "seconds": 0.5,
                       "cached": False, "pretrained_key": "mlp-smoke-s0-abc"}}


def audit_of(dtypes):
    names = [f"mlp/quant_{n}/MatMul;mlp/quant_{n}/LastValueQuant/FakeQuantWithMinMaxVars" for n in LAYERS[:4]]
    names.append("mlp/logits/MatMul")
    return {"kernel_dtypes": {}, "kernels": [{"name": n, "dtype": d} for n, d in zip(names, dtypes)]}


def mixed_record(make_record, choices, dtypes):
    quantized = sum(c != "float" for c in choices)
    return make_record(model="mlp", order="mixed", n=150_000, weight_bits=4, deployment="int8+int4",
                       case_id="mlp-mixed-b150k", mixed_plan=plan_field(choices), audit=audit_of(dtypes),
                       quantized_kernels=quantized, selected_kernels=quantized, units_selected=list(range(quantized)))


def test_the_audit_reports_a_kernel_stored_otherwise_than_planned(make_record):
    choices = [8, 4, 4, 4, "float"]
    good = mixed_record(make_record, choices, ["INT8", "INT4", "INT4", "INT4", "FLOAT32"])
    assert gates.plan_mismatches(good) == [] and gates.violations(good, registry.get("mlp").thresholds) == []
    swapped = mixed_record(make_record, choices, ["INT4", "INT8", "INT4", "INT4", "FLOAT32"])
    found = gates.violations(swapped, registry.get("mlp").thresholds)
    assert found == ["audit: layer dense_1 stored as INT4, the mixed plan says INT8",
                     "audit: layer dense_2 stored as INT8, the mixed plan says INT4"]
    lost = mixed_record(make_record, choices, ["INT8", "INT4", "INT4", "INT4"])  # the logits kernel is missing
    assert gates.plan_mismatches(lost) == ["audit: layer logits (planned FLOAT32) has no kernel in the .tflite"]
    assert gates.plan_mismatches(make_record()) == []  # other orders have no plan


def test_a_version_three_record_is_migrated_with_no_plan(make_record):
    assert records.ADDED_IN[4] == ("mixed_plan",)
    old = {k: v for k, v in make_record().items() if k != "mixed_plan"}
    old["schema_version"] = 3
    new = records.upgrade(old)
    assert new["migrated_from"] == 3 and new["schema_version"] == schema.VERSION and new["mixed_plan"] is None
    assert schema.problems(new) == []
    assert schema.problems(mixed_record(make_record, [8, 4, 4, 4, "float"], ["INT8"] * 5)) == []


def unit_table():
    return [dict(index=u.index, kind=u.kind, weight_layer=u.weight_layer, members=list(u.members),
                 kernel_params=u.kernel_params, bias_params=u.bias_params, channels=u.channels, kernels=u.kernels)
            for u in mlp_units()]


def write_run(folder: Path, make_record) -> Path:
    for seed in (0, 1):
        record = mixed_record(make_record, [8, 4, 4, 4, "float"], ["INT8", "INT4", "INT4", "INT4", "FLOAT32"])
        record.update(seed=seed, case_id="mlp-mixed-b150k" + (f"-s{seed}" if seed else ""), unit_table=unit_table(),
                      accuracy_drop_pp=0.2 * (seed + 1))
        if seed:
            record["mixed_plan"]["scores"]["pretrained_key"] = "mlp-smoke-s1-def"
        records.write_atomic(records.case_path(folder, record["case_id"]), record)
    return folder


def plan_cli(*args):
    return subprocess.run([sys.executable, "-m", "harness", "plan", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_the_planner_prints_the_mixed_plan_and_its_pytest_command(tmp_path, make_record):
    run = write_run(tmp_path / "run", make_record)
    done = plan_cli("--results", run, "--size-budget", 150000)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    command = ("pytest benchmarks -k mlp-mixed-b150k --qat-models mlp --qat-tier smoke --qat-orders mixed "
               "--qat-mixed-budgets 150000 --qat-seeds 0")
    assert f"verify (mlp-mixed-b150k): {command}" in out
    # dense_1 is the costliest unit at INT4: under 150 kB it stays INT8, the others go INT4, logits float
    assert "plan 8444F" in out and "predicted weight bytes 149,032 <= 150,000" in out
    assert "mlp-smoke-s0-abc (seed 0)" in out and "mixed_plan of mlp-mixed-b150k" in out
    assert "mean drop 0.30 pp over 2 seed(s)" in out
    assert plan_cli("--results", run, "--size-budget", 150000, "--order", "mixed").stdout == out
    roomy = plan_cli("--results", run, "--size-budget", 300000)
    assert roomy.returncode == 0 and "plan 888FF" in roomy.stdout and "--qat-mixed-budgets 300000" in roomy.stdout


@pytest.mark.parametrize("budget, expected", [
    ("50000", "infeasible: the minimum achievable is 94376 bytes"),
    ("-5", "whole number of bytes"),
    ("1500.5", "whole number of bytes"),
])
def test_a_bad_size_budget_is_a_one_line_error(tmp_path, make_record, budget, expected):
    run = write_run(tmp_path / "run", make_record)
    done = plan_cli("--results", run, "--size-budget", budget)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and expected in done.stderr


def test_records_without_scores_say_what_to_run(tmp_path, make_record):
    record = make_record(model="mlp", unit_table=unit_table())
    records.write_atomic(records.case_path(tmp_path, record["case_id"]), record)
    done = plan_cli("--results", tmp_path, "--size-budget", 150000)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "--qat-orders mixed" in done.stderr


def test_the_planner_also_takes_two_sensitivity_cases_of_one_pretrained_model(make_record):
    from harness.analysis import mixed_planner

    def sens(bits):
        units = [{"index": i, "weight_layer": n, "trace": 1.0, "trace_stderr": 0.1, "noise": 1e-3,
                  "score": SCORES[str(bits)][i]} for i, n in enumerate(LAYERS)]
        field = {"bits": bits, "method": "hutchinson", "examples": 256, "probes": 16, "seed": 0, "seconds": 0.5,
                 "cached": False, "pretrained_key": "mlp-full-s1-xyz", "units": units}
        return make_record(model="mlp", order="sensitivity", n=3, weight_bits=bits, seed=1, tier="full",
                           case_id=f"mlp-sens3-w{bits}a8-s1", sensitivity=field, unit_table=unit_table())
    answer = mixed_planner.mixed_answer([sens(8), sens(4)], "mlp", 150_000)
    assert answer.plan.tag == "8444F" and "sensitivity of mlp-sens3-w4a8-s1, mlp-sens3-w8a8-s1" in answer.scores.source
    assert answer.command.endswith("--qat-tier full --qat-orders mixed --qat-mixed-budgets 150000 --qat-seeds 1")
    with pytest.raises(ValueError, match="no sensitivity scores at 8 and 4 bits"):
        mixed_planner.mixed_answer([sens(8)], "mlp", 150_000)


def test_the_mixed_order_without_any_budget_is_a_one_line_error():
    from harness.design import grid
    from harness.design.config import RunOptions

    with pytest.raises(ValueError, match="--qat-mixed-budgets") as caught:
        grid.check_mixed_budgets(RunOptions(tier="smoke", orders=("mixed",), models=("cnn",)))
    assert "\n" not in str(caught.value)
    grid.check_mixed_budgets(RunOptions(tier="reference", orders=("mixed",), models=("mlp",)))  # the tier's
    grid.check_mixed_budgets(RunOptions(tier="smoke", orders=("mixed",), models=("cnn",), mixed_budgets=(90_000,)))
    assert not [c for c in grid.cases_for(RunOptions(tier="smoke", orders=("mixed",), models=("cnn",)))]
