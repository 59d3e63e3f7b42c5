"""Real TensorFlow: a mixed INT8/INT4 plan runs as a case and deploys as one .tflite (issue 17, item 3).

The end-to-end case is mlp at 150 kB through the pipeline, with the smoke tier's pre-training and
fine-tuning steps: 150 kB is below the all-INT8 weights (186,152 B), so the plan must hold INT4 units.
The converter needs nothing beyond Optimize.DEFAULT: each Dense kernel keeps the width of its own
QuantizeConfig (tfmot-facts: per-layer configs under one quantize_apply)."""

import numpy as np
import pytest

from harness.backend import keras
from harness.case import audit, export, mixed_case, pipeline, quantize
from harness.models import zoo
from harness.models.quantizable import ConvWeightConfig
from harness.results import gates, schema
from harness.design import mixed, registry
from harness.design.config import Case, QuantConfig, Selection

pytestmark = pytest.mark.tf


@pytest.fixture(scope="module")
def mlp_record(tmp_path_factory):
    spec = registry.get("mlp")
    case = Case("mlp", Selection("mixed", 150_000), QuantConfig(4), "smoke", 0)
    env = pipeline.Environment(cache_dir=tmp_path_factory.mktemp("mixed-cache"), threads=1)
    record = pipeline.measure_here(case, spec, env)
    record.pop(pipeline.PREDICTIONS)
    return {**pipeline.describe_case(case, spec), **record, "case_id": case.id}


def test_the_mlp_mixed_case_deploys_its_plan_exactly(mlp_record):
    plan = mlp_record["mixed_plan"]
    choices = [u["choice"] for u in plan["units"]]
    assert 4 in choices and plan["budget_bytes"] == 150_000
    assert plan["predicted_bytes"] == mlp_record["predicted_weight_bytes"] == mlp_record["weight_bytes"] <= 150_000
    assert mlp_record["size_error_rel"] == 0
    dtypes = mlp_record["audit"]["kernel_dtypes"]
    expected = {"INT8": choices.count(8), "INT4": choices.count(4), "FLOAT32": choices.count("float")}
    assert dtypes == {k: v for k, v in expected.items() if v}
    assert gates.violations(mlp_record, registry.get("mlp").thresholds) == []
    assert schema.problems({k: v for k, v in mlp_record.items() if k in schema.FIELDS}) == []
    assert mlp_record["units_selected"] == [u["index"] for u in plan["units"] if u["choice"] != "float"]
    assert plan["chain"] is True and plan["uniform_kinds"] == []  # Dense units take widths of their own


def test_int8_and_int4_kernels_in_one_file_with_exact_bytes():
    """A forced plan with both widths and a float unit: each kernel stored as planned, bytes exact."""
    model = zoo.build_mlp()
    units = quantize.units_of(model)
    choices = (8, 4, 4, 8, mixed.FLOAT)
    bits_of = {u.index: c for u, c in zip(units, choices) if c != mixed.FLOAT}
    chosen = [u for u in units if u.index in bits_of]
    qat = quantize.annotate(model, chosen, QuantConfig(4), bits_of)
    qat.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).random((64, 28, 28), dtype=np.float32)
    qat.fit(x, np.zeros(64, dtype="int64"), epochs=1, batch_size=32, verbose=0)  # ranges leave [-6, 6]
    found = audit.inspect(export.to_tflite(qat, quantized=True, quant=QuantConfig(4)))
    assert [k.dtype for k in found.kernels] == ["INT8", "INT4", "INT4", "INT8", "FLOAT32"]
    plan = mixed.MixedPlan(choices, mixed.plan_bytes(units, choices), 0.0, 10 ** 6)
    assert found.weight_bytes == mixed_case.size_prediction(units, plan).weight_bytes == plan.weight_bytes


def test_a_conv_unit_at_a_width_of_its_own_gets_its_own_weight_config():
    """The scheme takes the narrowest conv width; a Conv2D at another width gets ConvWeightConfig and its BN
    (a ReLU behind) none, as tfmot's Conv+BN+ReLU transform would (deployment: tests/test_ends_plan.py)."""
    model = zoo.build_cnn()
    units = quantize.units_of(model)
    conv = [u for u in units if u.kind == "conv"][:2]
    qat = quantize.annotate(model, conv, QuantConfig(4), {conv[0].index: 8, conv[1].index: 4})
    configs = {layer.name: getattr(layer, "quantize_config", None) for layer in qat.layers}
    assert isinstance(configs["quant_c1_conv"], ConvWeightConfig) and configs["quant_c1_conv"].bits == 8
    assert not configs["quant_c1_conv"].quantize_output
    bn = configs["quant_c1_bn"]  # rebuilt by name: tfmot's NoOpQuantizeConfig or ours, both quantize nothing
    assert type(bn).__name__ == "NoOpQuantizeConfig" and bn.get_output_quantizers(None) == []
    assert not isinstance(configs["quant_c2_conv"], ConvWeightConfig)  # the scheme's 4-bit conv config


@pytest.mark.parametrize("choices", [(8, 8, 8, 4, 4), (mixed.FLOAT, 4, 4, 8, mixed.FLOAT)])
def test_cnn_plans_with_one_conv_width_deploy_exactly(choices):
    """The scheme takes the convs' width (Conv+BN folded as in a plain case); the Dense units at the other
    width get their own config: every kernel is stored as planned and the bytes are size.py's."""
    model = zoo.build_cnn()
    units = quantize.units_of(model)
    bits_of = {u.index: c for u, c in zip(units, choices) if c != mixed.FLOAT}
    qat = quantize.annotate(model, [u for u in units if u.index in bits_of], QuantConfig(4), bits_of)
    qat.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).random((64, 28, 28, 1), dtype=np.float32)
    qat.fit(x, np.zeros(64, dtype="int64"), epochs=1, batch_size=32, verbose=0)
    found = audit.inspect(export.to_tflite(qat, quantized=True, quant=QuantConfig(4)))
    want = {8: "INT8", 4: "INT4", mixed.FLOAT: "FLOAT32"}
    assert [k.dtype for k in found.kernels] == [want[c] for c in choices]
    assert found.weight_bytes == mixed.plan_bytes(units, choices)
