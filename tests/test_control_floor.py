"""A tier's control floor (issue 32, "trained models"): a tier may state the float control accuracy its models
must reach (TierConfig.min_control_accuracy), in place of the model's collapse floor; a control below it fails
its case with one line naming the floor, and the report says so."""

import pytest

from harness.analysis import report
from harness.design.config import TierConfig
from harness.design.registry import ModelSpec, Ref
from harness.design.thresholds import Thresholds
from harness.results import gates

TIER = dict(train_size=None, test_size=None, pretrain_epochs=1, finetune_steps=1)


def record(control, case_id="cnn-last1-w8a8", **fields):
    base = dict(case_id=case_id, model="cnn", order="last", n=1, weight_bits=8, method="qat", seed=0,
                deployment="int8", status="passed", control_accuracy=control, quant_accuracy=control - 0.001,
                quant_accuracy_keras=control - 0.001, accuracy_drop_pp=0.1, quantized_kernels=1, selected_kernels=1,
                size_error_rel=0.0, units_total=5, tflite_bytes=500, control_tflite_bytes=1000, weight_bytes=300,
                control_weight_bytes=900, predicted_weight_bytes=300, audit={"kernel_dtypes": {"INT8": 1}})
    return dict(base, **fields)


MODEL = Thresholds(min_control_accuracy=0.75)


def test_a_tier_floor_replaces_the_models_and_a_tier_without_one_keeps_it():
    reference = MODEL.for_tier("reference", TierConfig(**TIER, min_control_accuracy=0.90))
    assert reference.min_control_accuracy == 0.90 and reference.floor_text() == "the reference tier's floor 0.9"
    smoke = MODEL.for_tier("smoke", TierConfig(**TIER))
    assert smoke is MODEL and smoke.floor_text() == "the model's floor 0.75"
    assert MODEL.for_tier("smoke", None) is MODEL  # a record of a tier the model no longer has
    assert reference.max_drop_pp == MODEL.max_drop_pp  # only the floor changes


def test_a_control_below_its_tiers_floor_fails_with_one_line_naming_it():
    thresholds = MODEL.for_tier("reference", TierConfig(**TIER, min_control_accuracy=0.90))
    (line,) = gates.violations(record(0.8712), thresholds)
    assert line == ("float control accuracy 0.8712 < the reference tier's floor 0.9 (under-trained: its drops "
                    "would measure training, not quantization)")
    assert "\n" not in line
    assert gates.violations(record(0.9012), thresholds) == []
    # the same control passes the model's own collapse floor
    assert gates.violations(record(0.8712), MODEL) == []
    (collapsed,) = gates.violations(record(0.11), MODEL)
    assert collapsed.startswith("float control accuracy 0.1100 < the model's floor 0.75 (training collapsed")


@pytest.mark.parametrize("floor", [1.5, -0.1, True, "0.9"])
def test_a_floor_must_be_an_accuracy(floor):
    with pytest.raises(ValueError, match="min_control_accuracy must be an accuracy in"):
        TierConfig(**TIER, min_control_accuracy=floor)


def test_the_floor_shapes_no_model_so_no_hash_moves():
    def spec(floor):
        return ModelSpec(name="tiny", builder=Ref("m:b"), dataset=Ref("m:d"), input_shape=(2,), num_units=1,
                         unit_kinds=("dense",), thresholds=MODEL,
                         tiers={"reference": TierConfig(**TIER, min_control_accuracy=floor)})
    assert spec(None).fingerprint("reference") == spec(0.9).fingerprint("reference")


def test_the_report_names_the_cases_below_their_floor(tmp_path):
    thresholds = MODEL.for_tier("reference", TierConfig(**TIER, min_control_accuracy=0.90))
    rows = [record(0.8712, "cnn-last1-w8a8"), record(0.9300, "cnn-last2-w8a8", n=2), record(0.8650, "cnn-first1-w8a8")]
    for r in rows:
        r["violations"] = gates.violations(r, thresholds)
        r["status"] = "failed" if r["violations"] else "passed"
    assert [case for case, _ in gates.below_floor(rows)] == ["cnn-last1-w8a8", "cnn-first1-w8a8"]
    text = report.write_report(rows, tmp_path).path.read_text()
    assert "**Control below its floor.** 2 of 3 cases failed" in text
    assert "`cnn-last1-w8a8`: float control accuracy 0.8712 < the reference tier's floor 0.9" in text
    assert "- `cnn-first1-w8a8` — failed: float control accuracy 0.8650 < the reference tier's floor 0.9" in text
    assert "Control below its floor" not in report.write_report(rows[1:2], tmp_path / "ok").path.read_text()


class StubConfig:
    """The pytest options a QatSession reads (as tests/test_hardening.py's)."""

    def __init__(self, tmp_path, **values):
        self.values = {"qat_tier": "smoke", "qat_bits": (), "qat_orders": (), "qat_seeds": (), "qat_methods": (),
                       "qat_strategy": "default", "qat_workers": 1, "qat_results": tmp_path / "results",
                       "qat_run_id": "r", "qat_cache": tmp_path / "cache", "qat_timeout": 0.0, **values}
        self.option, self.args = type("O", (), {})(), []

    def getoption(self, name):
        return self.values.get(name)


@pytest.mark.tf
def test_the_session_judges_a_case_by_its_tiers_floor(tmp_path, monkeypatch):
    from harness import session as session_module
    from harness.design import registry
    from harness.design.config import Case, QuantConfig, Selection
    from harness.results import rescue

    monkeypatch.setenv(rescue.RESCUE_ENV, str(tmp_path / "rescue"))
    tiers = {"smoke": TierConfig(**TIER), "reference": TierConfig(**TIER, min_control_accuracy=0.9)}
    registry.register(ModelSpec(name="floored", builder=Ref("harness.models.zoo:build_mlp"),
                                dataset=Ref("harness.models.data:mnist_5k"), input_shape=(28, 28), num_units=5,
                                unit_kinds=("dense",), thresholds=MODEL, tiers=tiers), "test_control_floor")
    try:
        def measured(case, spec, env):
            return {k: v for k, v in record(0.8712).items() if k not in ("case_id", "status", "model", "seed")}
        for tier, want in (("reference", "failed"), ("smoke", "passed")):
            session = session_module.QatSession(StubConfig(tmp_path / tier, qat_tier=tier))
            got, problems, _ = session.run(Case("floored", Selection("last", 1), QuantConfig(8), tier), runner=measured)
            assert got["status"] == want, got.get("violations")
        assert got["violations"] == []
    finally:
        del registry.REGISTRY["floored"]
        registry._SOURCES.pop("floored", None)
