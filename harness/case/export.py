"""Keras -> TFLite flatbuffer bytes."""

from __future__ import annotations

from harness.backend import keras, tf
from harness.errors import one_line
from harness.design.config import QuantConfig


class ConversionError(RuntimeError):
    """The TFLite converter refused a model; the message is one line."""


def converter_for(model: "keras.Model") -> "tf.lite.TFLiteConverter":
    """A converter for the model's inference function, frozen directly.

    ``TFLiteConverter.from_keras_model`` first writes a Keras SavedModel, which traces every layer's
    call functions: 24 of 25 s of converting a QAT ResNet-20 here. Freezing one concrete function
    gives the same weights, kernels and interpreter outputs in 1.4 s (tests/test_export.py).
    """
    signature = [tf.TensorSpec((None, *tensor.shape[1:]), tensor.dtype, name=tensor.name.split(":")[0])
                 for tensor in model.inputs]
    function = tf.function(lambda *x: model(x[0] if len(x) == 1 else list(x), training=False),
                           input_signature=signature)
    holder = tf.Module()
    holder.model, holder.function = model, function  # keeps the variables alive during conversion
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], holder)
    converter.experimental_lower_to_saved_model = False
    return converter


def to_tflite(model: "keras.Model", quantized: bool, quant: QuantConfig = QuantConfig()) -> bytes:
    """Convert a model. Float models get no optimizations: with Optimize.DEFAULT a model without
    fake-quant ops is silently dynamic-range quantized to INT8."""
    converter = converter_for(model)
    if quantized:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quant.deployment == "int8-storage":
            # 5-7 bit weights: without this private flag the interpreter's accuracy does not match Keras.
            converter._experimental_low_bit_qat = True
    try:
        return bytes(converter.convert())
    except Exception as exc:  # the converter raises many types with pages of MLIR
        raise ConversionError(f"TFLite conversion failed ({quant.tag}): {one_line(exc, 300)}") from exc


def ops_touching(content: bytes, layers) -> list:
    """Output tensor names of the ops that belong to one of ``layers``: their output or one of their
    constant inputs (kernel, bias) is named after the layer. A model's last op is named after the
    model's output, so its kernel's name is what identifies it; activations coming in from the
    previous layer do not count."""
    from harness.backend import tflite_schema as S

    marks = tuple(f"/{layer}/" for layer in layers)
    model = S.Model.GetRootAs(content, 0)

    def is_constant(tensor) -> bool:
        return model.Buffers(tensor.Buffer()).DataLength() > 0

    found = []
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            outputs = [graph.Tensors(int(t)).Name().decode() for t in op.OutputsAsNumpy()]
            weights = [graph.Tensors(int(t)) for t in op.InputsAsNumpy() if t >= 0]
            names = outputs + [t.Name().decode() for t in weights if is_constant(t)]
            if any(mark in name for name in names for mark in marks):
                found += outputs
    return found


def to_tflite_ptq(model: "keras.Model", representative_x, float_layers, quant: QuantConfig,
                  float_tflite: bytes | None = None) -> bytes:
    """Selective post-training quantization: full-integer (INT8 weights and activations) for every op
    except those of ``float_layers``, which the TFLite quantization debugger's denylist keeps float.
    ``float_tflite``: the model's float conversion, if the caller has it (op names come from it)."""
    if quant.weight_bits != 8:
        raise ConversionError(f"PTQ in TFLite is 8-bit only; {quant.weight_bits}-bit weights need QAT")

    def representative():
        for i in range(len(representative_x)):
            yield [representative_x[i:i + 1].astype("float32")]

    denylist = ops_touching(float_tflite or to_tflite(model, quantized=False), set(float_layers))
    converter = converter_for(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    try:
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=representative,
            debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=denylist))
        return bytes(debugger.get_nondebug_quantized_model())
    except Exception as exc:
        raise ConversionError(f"selective PTQ failed: {one_line(exc, 300)}") from exc
