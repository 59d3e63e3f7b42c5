"""Annotate the selected units of a float Keras model with tfmot and apply QAT."""

from __future__ import annotations

from typing import Sequence

from harness.case import fakequant  # noqa: F401  (installs the cheaper per-channel training gradient)
from harness.backend import keras, quantize
from harness.spec.config import QuantConfig
from harness.spec.units import LayerInfo, Unit, group_units
from harness.models.quantizable import CUSTOM_OBJECTS, DenseWeightConfig, UnsupportedQuantization

KIND_OF_CLASS = {"Dense": "dense", "Conv2D": "conv", "DepthwiseConv2D": "conv", "SeparableConv2D": "conv"}


def layer_infos(model: "keras.Model") -> tuple:
    """LayerInfo for every layer, in graph order, with kernel/bias counts (BN-folded bias included)."""
    infos = []
    consumers, inputs_of = {}, {}
    for layer in model.layers:
        for node in layer._inbound_nodes:
            for inbound in node.inbound_layers if isinstance(node.inbound_layers, list) else [node.inbound_layers]:
                consumers.setdefault(inbound.name, []).append(layer)
                inputs_of.setdefault(layer.name, []).append(inbound.name)
    for layer in model.layers:
        cls = type(layer).__name__
        inputs = tuple(inputs_of.get(layer.name, ()))
        if hasattr(layer, "qat_unit"):  # a custom block that is one unit on its own (see QatBlock)
            kind, kernel_params, bias_params, channels, kernels = layer.qat_unit()
            infos.append(LayerInfo(layer.name, cls, kind, kernel_params, bias_params, channels, inputs, kernels))
            continue
        kind = KIND_OF_CLASS.get(cls)
        if kind is None:
            infos.append(LayerInfo(layer.name, cls, inputs=inputs))
            continue
        kernel = getattr(layer, "depthwise_kernel", None) if cls == "DepthwiseConv2D" else layer.kernel
        channels = int(kernel.shape[-1]) if cls != "DepthwiseConv2D" else int(kernel.shape[-2] * kernel.shape[-1])
        bias = int(layer.bias.shape[0]) if getattr(layer, "use_bias", False) else 0
        folds_bn = any(type(c).__name__ == "BatchNormalization" for c in consumers.get(layer.name, ()))
        if folds_bn and not bias:
            bias = channels  # the converter folds BN into a new per-channel bias
        infos.append(LayerInfo(layer.name, cls, kind, int(kernel.shape.num_elements()), bias, channels, inputs))
    return tuple(infos)


def units_of(model: "keras.Model") -> tuple:
    return group_units(layer_infos(model))


def scheme_for(quant: QuantConfig):
    if quant.weight_bits == 8:
        return quantize.default_8bit.Default8BitQuantizeScheme()
    return quantize.experimental.default_n_bit.DefaultNBitQuantizeScheme(
        num_bits_weight=quant.weight_bits, num_bits_activation=quant.activation_bits)


def _config_for(layer, quant: QuantConfig):
    if hasattr(layer, "qat_quantize_config"):
        return layer.qat_quantize_config(quant)
    if type(layer).__name__ != "Dense":
        if quant.per_channel is False:
            raise UnsupportedQuantization(
                f"per-tensor weights for {type(layer).__name__} {layer.name!r} do not deploy: "
                "BN folding needs per-channel scales; use per_channel=None or True")
        return None
    if quant.weight_bits == 8 and not quant.per_channel:
        return None  # the default 8-bit scheme: per-tensor symmetric Dense kernels
    if quant.per_channel and quant.storage_bits == 4:
        raise UnsupportedQuantization(
            f"per-channel {quant.weight_bits}-bit Dense weights do not convert to TFLite "
            "(tfl.transpose mismatched quantized axes); use per-tensor")
    return DenseWeightConfig(quant.weight_bits, bool(quant.per_channel))


def annotate(model: "keras.Model", chosen: Sequence[Unit], quant: QuantConfig) -> "keras.Model":
    """Clone ``model`` with the chosen units wrapped for QAT; weights are copied. Empty selection: a float clone."""
    names = {name for unit in chosen for name in unit.members}

    def clone(layer):
        fresh = layer.__class__.from_config(layer.get_config())
        if layer.name not in names or getattr(layer, "qat_float", False):
            return fresh  # qat_float: a layer that must stay float (an int32-token embedding)
        return quantize.quantize_annotate_layer(fresh, quantize_config=_config_for(layer, quant))

    with quantize.quantize_scope(CUSTOM_OBJECTS):
        annotated = keras.models.clone_model(model, clone_function=clone)
        annotated.set_weights(model.get_weights())
        if not names:
            return annotated
        return quantize.quantize_apply(annotated, scheme=scheme_for(quant))
