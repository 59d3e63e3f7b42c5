"""Real TensorFlow: the fast converter path and selective PTQ."""

import numpy as np
import pytest

from harness.case import audit, export, quantize
from harness.models import zoo
from harness.backend import tf
from harness.design.config import QuantConfig, Selection
from harness.case.evaluate import tflite_predict
from harness.design.select import select

pytestmark = pytest.mark.tf

X = np.random.default_rng(0).random((64, 28, 28), dtype=np.float32)


@pytest.fixture(scope="module")
def mlp():
    return zoo.build_mlp()


@pytest.fixture(scope="module")
def units(mlp):
    return quantize.units_of(mlp)


def trained_qat(mlp, chosen, bits):
    qat = quantize.annotate(mlp, chosen, QuantConfig(bits))
    qat.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    qat.train_on_batch(X[:32], np.zeros(32, dtype=np.int64))  # ranges leave their start values
    return qat


def keras_savedmodel_path(model, quantized, quant):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantized:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return bytes(converter.convert())


@pytest.mark.parametrize("bits,n", [(None, 0), (8, 2), (4, 5)])
def test_frozen_function_path_stores_and_computes_what_from_keras_model_does(mlp, units, bits, n):
    model = mlp if bits is None else trained_qat(mlp, select(units, Selection("last", n)), bits)
    quant = QuantConfig(bits or 8)
    fast = export.to_tflite(model, quantized=bits is not None, quant=quant)
    slow = keras_savedmodel_path(model, bits is not None, quant)
    fast_audit, slow_audit = audit.inspect(fast), audit.inspect(slow)
    assert fast_audit.kernel_dtypes == slow_audit.kernel_dtypes
    assert fast_audit.weight_bytes == slow_audit.weight_bytes
    assert fast_audit.quantized_kernels == slow_audit.quantized_kernels == n
    np.testing.assert_array_equal(tflite_predict(fast, X), tflite_predict(slow, X))


def kernel_dtypes_by_layer(content, units):
    kernels = audit.inspect(content).kernels
    return {u.weight_layer: [k.dtype for k in kernels if f"/{u.weight_layer}/" in k.name] for u in units}


@pytest.mark.parametrize("selection", [Selection("last", 2), Selection("first", 1), Selection("single", 1),
                                       Selection("single", 3), Selection("last", 5)])
def test_selective_ptq_quantizes_exactly_the_selected_kernels(mlp, units, selection):
    chosen = select(units, selection)
    float_layers = [name for unit in units if unit not in chosen for name in unit.members]
    content = export.to_tflite_ptq(mlp, X, float_layers, QuantConfig(8))
    dtypes = kernel_dtypes_by_layer(content, units)
    assert dtypes == {u.weight_layer: ["INT8" if u in chosen else "FLOAT32"] for u in units}


def test_a_layers_ops_do_not_include_the_next_layer_that_reads_its_output(mlp):
    touched = export.ops_touching(export.to_tflite(mlp, quantized=False), {"dense_3"})
    assert touched and all("dense_4" not in name for name in touched)


def test_ptq_below_8_bits_is_a_one_line_error(mlp):
    with pytest.raises(export.ConversionError, match="8-bit only"):
        export.to_tflite_ptq(mlp, X, [], QuantConfig(4))


def test_selective_ptq_with_the_callers_float_conversion_is_the_same_file(mlp, units):
    chosen = select(units, Selection("last", 2))
    float_layers = [name for unit in units if unit not in chosen for name in unit.members]
    given = export.to_tflite_ptq(mlp, X, float_layers, QuantConfig(8), float_tflite=export.to_tflite(mlp, quantized=False))
    assert kernel_dtypes_by_layer(given, units) == kernel_dtypes_by_layer(
        export.to_tflite_ptq(mlp, X, float_layers, QuantConfig(8)), units)
