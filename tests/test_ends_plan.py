"""Real TensorFlow: the literature's default plan (order ``ends8``: first and last unit at W8, every other
unit at W4; issue 32, item c), a Conv2D at a width of its own beside convs at the scheme's width, and the
``single`` order at QAT W8, QAT W4 and PTQ W8 (item a), each through the pipeline on cnn's smoke tier.

The end-to-end cases share one cache folder, so cnn is pre-trained once (seed 0) for the module."""

import numpy as np
import pytest

from harness.backend import keras
from harness.case import audit, export, pipeline, quantize
from harness.case.evaluate import tflite_predict
from harness.design import mixed, registry
from harness.design.config import Case, QuantConfig, Selection
from harness.models import zoo
from harness.models.quantizable import UnsupportedQuantization
from harness.results import gates, schema

pytestmark = pytest.mark.tf

WANT = {8: "INT8", 4: "INT4", mixed.FLOAT: "FLOAT32"}


def trained(model, units, choices, x):
    """The plan annotated and fitted to a learnable label (the image's brightness decile), so that the
    logits move well away from ties and the ranges from their [-6, 6] start."""
    bits_of = {u.index: c for u, c in zip(units, choices) if c != mixed.FLOAT}
    qat = quantize.annotate(model, [u for u in units if u.index in bits_of], QuantConfig(4), bits_of)
    qat.compile(optimizer=keras.optimizers.Adam(0.003), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    brightness = x.reshape(len(x), -1).mean(axis=1)
    y = np.searchsorted(np.quantile(brightness, np.linspace(0.1, 0.9, 9)), brightness)
    qat.fit(x, y, epochs=15, batch_size=32, verbose=0)
    return qat


STEP = 12 / 255  # one step of an 8-bit output range of width 12 (the [-6, 6] start; an EMA moves it slowly)


def assert_file_computes_what_keras_does(qat, content, x):
    """The .tflite's logits within three output steps of the fake-quant Keras model's, and the same argmax
    wherever Keras's top score leads by more than that (the toy's logits are near ties elsewhere). The
    end-to-end case below checks the accuracies on real data (gates: TFLite vs Keras within 0.5 pp)."""
    lite, simulated = tflite_predict(content, x), qat.predict(x, verbose=0)
    assert np.abs(lite - simulated).max() <= 3 * STEP
    ranked = np.sort(simulated, axis=-1)
    clear = ranked[:, -1] - ranked[:, -2] > 3 * STEP
    assert (lite.argmax(-1) == simulated.argmax(-1))[clear].all()


def test_cnn_ends_plan_deploys_its_first_conv_at_int8_beside_int4_convs():
    model = zoo.build_cnn()
    units = quantize.units_of(model)
    plan = mixed.ends_plan(units)
    assert plan.choices == (8, 4, 4, 4, 8)
    x = np.random.default_rng(0).random((96, 28, 28, 1), dtype=np.float32)
    qat = trained(model, units, plan.choices, x)
    content = export.to_tflite(qat, quantized=True, quant=QuantConfig(4))
    found = audit.inspect(content)
    assert [k.dtype for k in found.kernels] == [WANT[c] for c in plan.choices]
    assert found.weight_bytes == plan.weight_bytes  # BN folded into c1: its INT32 bias, as size.py counts
    assert_file_computes_what_keras_does(qat, content, x)


@pytest.mark.parametrize("name,tag", [("resnet20", "8" + "4" * 18 + "8"), ("minilm2", "84448")])
def test_the_ends_plan_deploys_exactly_on_resnet20_and_minilm2(name, tag):
    """ResNet-20: the stem conv at W8 beside 18 W4 convs (strided shortcuts, adds); MiniLM-2: attention and
    feed-forward blocks (QatBlocks) at their own widths. Every kernel as planned, bytes exact."""
    spec = registry.get(name)
    model = spec.builder.load()(spec.input_shape, 5 if name == "minilm2" else 10)
    units = quantize.units_of(model)
    plan = mixed.ends_plan(units)
    assert plan.tag == tag
    chosen = quantize.with_boundary_fixes(model, units, QuantConfig(4))
    qat = quantize.annotate(model, chosen, QuantConfig(4), dict(zip((u.index for u in units), plan.choices)))
    qat.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = (rng.integers(1, 1000, (32, *spec.input_shape)).astype("int32") if name == "minilm2"
         else rng.random((32, *spec.input_shape), dtype=np.float32))
    qat.fit(x, np.zeros(32, dtype="int64"), epochs=1, batch_size=16, verbose=0)
    found = audit.inspect(export.to_tflite(qat, quantized=True, quant=QuantConfig(4)))
    kernels_at = {8: sum(u.kernels for u, c in zip(units, plan.choices) if c == 8),
                  4: sum(u.kernels for u, c in zip(units, plan.choices) if c == 4)}
    assert found.kernel_dtypes == {"INT8": kernels_at[8], "INT4": kernels_at[4]}
    assert found.weight_bytes == plan.weight_bytes


def conv_bn_model():
    """conv+BN with no ReLU behind (ResNet's second conv of a block), then conv+BN+ReLU and a Dense."""
    layers = keras.layers
    inputs = keras.Input((12, 12, 1), name="image")
    x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="a_conv")(inputs)
    x = layers.BatchNormalization(name="a_bn")(x)
    x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="b_conv")(x)
    x = layers.BatchNormalization(name="b_bn")(x)
    x = layers.ReLU(name="b_relu")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, layers.Dense(10, name="logits")(x))


@pytest.mark.parametrize("choices", [(8, 4, 8), (4, 8, 4)])
def test_a_conv_at_its_own_width_folds_its_bn_with_or_without_a_relu_behind(choices):
    model = conv_bn_model()
    units = quantize.units_of(model)
    x = np.random.default_rng(1).random((96, 12, 12, 1), dtype=np.float32) ** 3
    qat = trained(model, units, choices, x)
    content = export.to_tflite(qat, quantized=True, quant=QuantConfig(4))
    found = audit.inspect(content)
    assert [k.dtype for k in found.kernels] == [WANT[c] for c in choices]
    assert found.weight_bytes == mixed.plan_bytes(units, choices)
    assert_file_computes_what_keras_does(qat, content, x)


def test_a_depthwise_conv_still_cannot_take_a_width_of_its_own():
    layers = keras.layers
    inputs = keras.Input((8, 8, 4))
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(inputs)
    x = layers.BatchNormalization(name="dw_bn")(x)
    x = layers.Conv2D(4, 1, use_bias=False, name="pw")(x)
    x = layers.BatchNormalization(name="pw_bn")(x)
    model = keras.Model(inputs, layers.Dense(3, name="logits")(layers.Flatten(name="flat")(x)))
    units = quantize.units_of(model)
    with pytest.raises(UnsupportedQuantization, match="Dense and Conv2D units and QatBlocks"):
        quantize.annotate(model, units[:2], QuantConfig(4), {units[0].index: 8, units[1].index: 4})


@pytest.fixture(scope="module")
def run_case(tmp_path_factory):
    env = pipeline.Environment(cache_dir=tmp_path_factory.mktemp("ends-cache"), threads=1)
    spec = registry.get("cnn")

    def run(selection: Selection, quant: QuantConfig) -> dict:
        case = Case("cnn", selection, quant, "smoke", 0)
        record = pipeline.measure_here(case, spec, env)
        record.pop(pipeline.PREDICTIONS)
        record.pop(pipeline.TFLITE)
        return {**pipeline.describe_case(case, spec), **record, "case_id": case.id}

    return run


def test_the_cnn_ends8_case_runs_its_plan_with_exact_audited_bytes(run_case):
    record = run_case(Selection("ends8"), QuantConfig(4))
    assert record["case_id"] == "cnn-ends8" and record["deployment"] == "int8+int4"
    plan = record["mixed_plan"]
    assert plan["plan"] == "ends8" and plan["tag"] == "84448"
    assert [u["choice"] for u in plan["units"]] == [8, 4, 4, 4, 8]
    assert plan["predicted_bytes"] == record["predicted_weight_bytes"] == record["weight_bytes"]
    assert record["size_error_rel"] == 0 and record["units_selected"] == [0, 1, 2, 3, 4]
    assert record["audit"]["kernel_dtypes"] == {"INT8": 2, "INT4": 3}
    assert gates.violations(record, registry.get("cnn").thresholds) == []
    assert schema.problems({k: v for k, v in record.items() if k in schema.FIELDS}) == []


@pytest.mark.parametrize("quant", [QuantConfig(8), QuantConfig(4), QuantConfig(8, method="ptq")],
                         ids=["qat-w8", "qat-w4", "ptq-w8"])
def test_single_first_conv_alone_at_qat_w8_w4_and_ptq_w8(run_case, quant):
    """The single order's first unit (cnn's 288-weight 1-channel conv): exactly that kernel quantized."""
    record = run_case(Selection("single", 0), quant)
    assert record["units_selected"] == [0] and record["selected_layers"] == ["c1_conv"]
    dtypes = {"INT8": 1, "FLOAT32": 4} if quant.weight_bits == 8 else {"INT4": 1, "FLOAT32": 4}
    assert record["audit"]["kernel_dtypes"] == dtypes
    assert record["weight_bytes"] == record["predicted_weight_bytes"] < record["control_weight_bytes"]
    assert gates.violations(record, registry.get("cnn").thresholds) == []
