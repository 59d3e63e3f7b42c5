"""What a model declares about quantization: the QatBlock protocol for custom layers that form one
unit, the QuantizeConfigs they use, and the registry of custom objects that a quantized model needs to
be rebuilt. Builders (zoo, transformer, a user's model) import this; case/quantize.py applies it."""

from __future__ import annotations

from harness.backend import quantize
from harness.design.config import QuantConfig

_quantizers = quantize.quantizers


class UnsupportedQuantization(ValueError):
    """A (layer, bit width, granularity) combination that cannot be trained or converted."""


class QatBlock:
    """Protocol for custom layers that form one unit (e.g. a self-attention block with four kernels).

    ``qat_unit()`` returns (kind, kernel_params, bias_params, channels, kernels): what the unit
    stores and how many weight tensors become quantized kernels in the .tflite.
    ``qat_quantize_config(quant)`` returns the tfmot QuantizeConfig for that bit width; its class
    must be registered in CUSTOM_OBJECTS (``register_custom_object``).
    """

    def qat_unit(self) -> tuple:  # pragma: no cover - protocol
        raise NotImplementedError

    def qat_quantize_config(self, quant: QuantConfig):  # pragma: no cover - protocol
        raise NotImplementedError


def register_custom_object(obj) -> None:
    CUSTOM_OBJECTS[obj.__name__] = obj


class DenseWeightConfig(quantize.QuantizeConfig):
    """Dense kernel at ``bits`` bits (symmetric, narrow range), output activation at 8 bits."""

    def __init__(self, bits: int = 4, per_channel: bool = False):
        self.bits = bits
        self.per_channel = per_channel

    def get_weights_and_quantizers(self, layer):
        return [(layer.kernel, _quantizers.LastValueQuantizer(
            num_bits=self.bits, per_axis=self.per_channel, symmetric=True, narrow_range=True))]

    def get_activations_and_quantizers(self, layer):
        return [(layer.activation, _quantizers.MovingAverageQuantizer(
            num_bits=8, per_axis=False, symmetric=False, narrow_range=False))]

    def set_quantize_weights(self, layer, quantize_weights):
        layer.kernel = quantize_weights[0]

    def set_quantize_activations(self, layer, quantize_activations):
        layer.activation = quantize_activations[0]

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {"bits": self.bits, "per_channel": self.per_channel}


class NoOpQuantizeConfig(quantize.QuantizeConfig):
    """Quantizes nothing: a pass-through or float helper layer inside a selected unit."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {}


CUSTOM_OBJECTS = {"DenseWeightConfig": DenseWeightConfig, "NoOpQuantizeConfig": NoOpQuantizeConfig}


class KeepFloatOutputConfig(NoOpQuantizeConfig):
    """A layer kept float (--qat-skip-unsupported): no weight quantizer, its output fake-quantized at
    8 bits, so the layer after it reads a quantized tensor."""

    def get_output_quantizers(self, layer):
        return [_quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)]


register_custom_object(KeepFloatOutputConfig)


class ConvWeightConfig(quantize.QuantizeConfig):
    """A Conv2D at a width of its own beside convs at the scheme's width (the ``ends8`` plan: the first
    conv at 8 bits, the others at 4): per-channel symmetric narrow-range kernel at ``bits``, as tfmot's
    conv weight quantizer. With ``quantize_output`` False (a BatchNormalization follows) the conv's
    output is not fake-quantized, which is what tfmot's Conv+BN transforms do for a conv without a
    config of its own (they skip any layer that has one): the converter then folds the BN into the conv
    through its per-channel scales, and the BN's own config (harness/case/quantize.py) quantizes behind
    it. Measured: cnn with c1 at 8 and c2/c3 at 4 bits converted to an INT8 c1 (BN folded, INT32 bias)
    and INT4 c2, c3 (tests/test_ends_plan.py)."""

    def __init__(self, bits: int = 8, quantize_output: bool = False):
        self.bits = bits
        self.quantize_output = quantize_output

    def get_weights_and_quantizers(self, layer):
        return [(layer.kernel, _quantizers.LastValueQuantizer(
            num_bits=self.bits, per_axis=True, symmetric=True, narrow_range=True))]

    def get_activations_and_quantizers(self, layer):
        if not self.quantize_output:
            return []
        return [(layer.activation, _quantizers.MovingAverageQuantizer(
            num_bits=8, per_axis=False, symmetric=False, narrow_range=False))]

    def set_quantize_weights(self, layer, quantize_weights):
        layer.kernel = quantize_weights[0]

    def set_quantize_activations(self, layer, quantize_activations):
        if quantize_activations:
            layer.activation = quantize_activations[0]

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {"bits": self.bits, "quantize_output": self.quantize_output}


register_custom_object(ConvWeightConfig)
