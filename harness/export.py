"""Keras -> TFLite flatbuffer bytes."""

from __future__ import annotations

from .backend import keras, tf
from .config import QuantConfig


class ConversionError(RuntimeError):
    """The TFLite converter refused a model; the message is one line."""


def to_tflite(model: "keras.Model", quantized: bool, quant: QuantConfig = QuantConfig()) -> bytes:
    """Convert a model. Float models get no optimizations: with Optimize.DEFAULT a model without
    fake-quant ops is silently dynamic-range quantized to INT8."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantized:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quant.deployment == "int8-storage":
            # 5-7 bit weights: without this private flag the interpreter's accuracy does not match Keras.
            converter._experimental_low_bit_qat = True
    try:
        return bytes(converter.convert())
    except Exception as exc:  # the converter raises many types with pages of MLIR
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(f"TFLite conversion failed ({quant.tag}): {first[:300]}") from exc
