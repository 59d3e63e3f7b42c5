"""Annotate the selected units of a float Keras model with tfmot and apply QAT."""

from __future__ import annotations

import dataclasses
from typing import Sequence

from harness.case import fakequant  # noqa: F401  (installs the cheaper per-channel training gradient)
from harness.backend import QuantizeAwareActivation, keras, quantize
from harness.design.config import QuantConfig
from harness.design.mixed import UNIFORM_KINDS
from harness.design.units import LayerInfo, Unit, group_units
from harness.models.quantizable import (CUSTOM_OBJECTS, ConvWeightConfig, DenseWeightConfig, KeepFloatOutputConfig,
                                        NoOpQuantizeConfig, UnsupportedQuantization)

KIND_OF_CLASS = {"Dense": "dense", "Conv2D": "conv", "DepthwiseConv2D": "conv", "SeparableConv2D": "conv"}

# A weight layer with a fused swish (EfficientNet's *_se_reduce: Conv2D(activation="swish")): TFLite
# fuses no swish into CONV_2D, so the conv's own output must be quantized for an integer conv, but
# tfmot fake-quantizes swish only after the activation, and the converter kept such a conv FLOAT32 even
# in a whole-model QAT file (EfficientNetB0 last-5: 4 of 5 kernels INT8). Quantizing before the swish
# too, as tfmot does for sigmoid and tanh, makes every such kernel INT8 (tests/test_boundary.py).
# Models without a fused swish (every zoo model) are unchanged.
QuantizeAwareActivation._PRE_QUANT_ACTIVATIONS = QuantizeAwareActivation._PRE_QUANT_ACTIVATIONS | {"swish"}


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
        kernel_params, channels, kernels, extra_bias = _kernel_shape(layer, cls)
        bias = int(layer.bias.shape[0]) if getattr(layer, "use_bias", False) else 0
        folds_bn = any(type(c).__name__ == "BatchNormalization" for c in consumers.get(layer.name, ()))
        if not bias and (folds_bn or kind == "conv"):
            # the converter folds a BN into a new per-channel bias, and gives every CONV_2D and
            # DEPTHWISE_CONV_2D a (zero) bias anyway: a bias-free conv without BN was 4 B per channel
            # over the formula (a bias-free Dense without BN stays without one)
            bias = channels
        infos.append(LayerInfo(layer.name, cls, kind, kernel_params, bias + extra_bias, channels, inputs, kernels,
                               _reads_fixed_range(layer)))
    return tuple(infos)


# Activations whose output scale TFLite fixes (LOGISTIC, TANH, SOFTMAX): the converter quantizes their
# output without a fake-quant, so the weight layer reading them is INT8 whenever its own output is
# quantized (harness/design/units.py ties it to the unit reading that output).
FIXED_RANGE_ACTIVATIONS = frozenset({"sigmoid", "tanh", "softmax"})
SAME_SCALE_CLASSES = frozenset({"ZeroPadding2D", "Dropout"})


def _reads_fixed_range(layer) -> bool:
    """Whether ``layer``'s input is a fixed-range activation's output, directly or through a
    ZeroPadding2D or Dropout (layers that keep its scale; tests/test_boundary.py's sigmoid-pad)."""
    inbound = _inbound_layers(layer)
    while len(inbound) == 1 and type(inbound[0]).__name__ in SAME_SCALE_CLASSES:
        inbound = _inbound_layers(inbound[0])
    if len(inbound) != 1:
        return False
    producer = inbound[0]
    activation = "softmax" if type(producer).__name__ == "Softmax" else getattr(producer, "activation", None)
    return getattr(activation, "__name__", activation) in FIXED_RANGE_ACTIVATIONS


def _kernel_shape(layer, cls: str) -> tuple:
    """(kernel params, output channels, kernels in the .tflite, biases the converter adds)."""
    if cls == "SeparableConv2D":  # converted to a DEPTHWISE_CONV_2D (with a zero bias) + a CONV_2D
        depthwise, pointwise = layer.depthwise_kernel.shape, layer.pointwise_kernel.shape
        params = int(depthwise.num_elements() + pointwise.num_elements())
        return params, int(pointwise[-1]), 2, int(depthwise[-2] * depthwise[-1])
    if cls == "DepthwiseConv2D":
        kernel = layer.depthwise_kernel
        return int(kernel.shape.num_elements()), int(kernel.shape[-2] * kernel.shape[-1]), 1, 0
    return int(layer.kernel.shape.num_elements()), int(layer.kernel.shape[-1]), 1, 0


def units_of(model: "keras.Model") -> tuple:
    return group_units(layer_infos(model))


# Layers whose weights do not become weight-op kernels in the .tflite (elementwise constants, a
# gather table): they need no unit. Any other layer holding weights outside a unit would leave
# float kernels that no unit accounts for, and the size prediction could not be exact.
NO_KERNEL_CLASSES = frozenset({"BatchNormalization", "LayerNormalization", "GroupNormalization", "Embedding",
                               "PReLU", "Normalization"})


def unaccounted_weight_layers(model: "keras.Model") -> tuple:
    """(name, class) of layers that hold weights but are neither a unit's weight layer, a QatBlock,
    a float-only layer nor a layer without kernels (a stock MultiHeadAttention, a Conv1D, an LSTM)."""
    found = []
    for layer in model.layers:
        cls = type(layer).__name__
        if not layer.weights or cls in KIND_OF_CLASS or cls in NO_KERNEL_CLASSES:
            continue
        if hasattr(layer, "qat_unit") or getattr(layer, "qat_float", False):
            continue
        found.append((layer.name, cls))
    return tuple(found)


def unsupported_members(model: "keras.Model", chosen: Sequence[Unit], quant: QuantConfig) -> tuple:
    """(name, class) of layers in the chosen units that the tfmot scheme cannot annotate (no
    QuantizeConfig of their own): a LayerNormalization, a Lambda, a stock attention layer."""
    registry = scheme_for(quant).get_quantize_registry()
    by_name = {layer.name: layer for layer in model.layers}
    found = []
    for unit in chosen:
        for name in unit.members:
            layer = by_name[name]
            if type(layer).__name__ in KIND_OF_CLASS or type(layer).__name__ == "BatchNormalization":
                # weight layers and the BN behind them: tfmot's layout transforms handle them
                continue
            if hasattr(layer, "qat_quantize_config") or getattr(layer, "qat_float", False):
                continue
            if not registry.supports(layer):
                found.append((name, type(layer).__name__))
    return tuple(found)


def without_unsupported(model: "keras.Model", chosen: Sequence[Unit], quant: QuantConfig, keep_float: bool) -> tuple:
    """(chosen units minus the layers tfmot cannot annotate, with their boundary fixes, [(name, class)
    kept float]). Without ``keep_float`` such a layer is a one-line UnsupportedQuantization naming it and the ways out."""
    unsupported = unsupported_members(model, chosen, quant)
    if unsupported and not keep_float:
        name, cls = unsupported[0]
        raise UnsupportedQuantization(
            f"layer {name!r} ({cls}) in a selected unit is not supported by tfmot's quantization scheme: make "
            f"it a QatBlock with its own QuantizeConfig (harness.models.quantizable), load such a config with "
            f"--qat-custom-objects, or pass --qat-skip-unsupported to keep it float (the record says so)"
            + (f"; {len(unsupported) - 1} more such layer(s)" if len(unsupported) > 1 else ""))
    skip = {name for name, _ in unsupported}
    kept = tuple(dataclasses.replace(u, float_members=tuple(m for m in u.members if m in skip)) for u in chosen)
    return with_boundary_fixes(model, kept, quant), unsupported


def boundary_fixes(model: "keras.Model", chosen: Sequence[Unit], quant: QuantConfig) -> tuple:
    """((unit index, producer name), ...): the unselected layers feeding a selected layer whose input
    tfmot would leave float, each with the selected unit it feeds, in graph order.

    quantize_apply fake-quantizes the output of the unannotated layer right in front of an annotated
    one-input layer, but only through the registry's config for that producer (OutputOnlyConfig). A
    producer the registry does not support (a BatchNormalization with no activation behind it: the
    linear bottleneck of MBConv / inverted-residual blocks; a Multiply; a Lambda) or whose config has no
    output or activation quantizer (a ZeroPadding2D, Dropout, Reshape; a sigmoid Activation) is left
    as it is: the selected weight layer then reads a float tensor and the converter keeps its kernel
    FLOAT32 (issue 34). annotate() gives such producers the keep-float output config instead.
    (A layer with several inputs, an Add, quantizes its own output: tfmot marks none of its producers.)"""
    unit_of = {name: unit.index for unit in chosen for name in unit.members}
    if not unit_of:
        return ()
    registry = scheme_for(quant).get_quantize_registry()
    found = {}
    for layer in model.layers:
        inbound = _inbound_layers(layer) if layer.name in unit_of and _reaches_weight_layer(layer, unit_of) else []
        if len(inbound) != 1 or inbound[0].name in unit_of or inbound[0].name in found:
            continue
        producer = inbound[0]
        if type(producer).__name__ != "InputLayer" and not _quantizes_output(registry, producer):
            found[producer.name] = unit_of[layer.name]
    order = {layer.name: i for i, layer in enumerate(model.layers)}
    return tuple((index, name) for name, index in sorted(found.items(), key=lambda item: order[item[0]]))


def with_boundary_fixes(model: "keras.Model", chosen: Sequence[Unit], quant: QuantConfig) -> tuple:
    """``chosen`` with each unit's ``input_fixes`` filled in (what size.predict counts)."""
    by_name = {layer.name: layer for layer in model.layers}
    fixes: dict = {}
    for index, name in boundary_fixes(model, chosen, quant):
        layer = by_name[name]
        channels = int(layer.moving_mean.shape[-1]) if type(layer).__name__ == "BatchNormalization" else 0
        fixes.setdefault(index, []).append((name, type(layer).__name__, channels))
    return tuple(dataclasses.replace(u, input_fixes=tuple(fixes.get(u.index, ()))) for u in chosen)


def fixed_producers(chosen: Sequence[Unit]) -> list:
    """Names of the producers the boundary fixes of ``chosen`` quantize (the record's boundary_fixes)."""
    return [name for unit in chosen for name, _, _ in unit.input_fixes]


def _reaches_weight_layer(layer, unit_of: dict, depth: int = 4) -> bool:
    """Whether ``layer`` is a weight layer of its unit or feeds one through single-input layers of the
    same unit (a ZeroPadding2D or Dropout in front of a conv). Only such an input must be quantized: a
    fix in front of anything else (ResNet-20's strided shortcut, MaxPooling -> pad -> Add, where the Add
    quantizes) made the converter quantize the unselected conv that reads the same tensor."""
    if type(layer).__name__ in KIND_OF_CLASS or hasattr(layer, "qat_unit"):
        return True
    if depth == 0:
        return False
    consumers = [node.outbound_layer for node in layer._outbound_nodes]
    return any(unit_of.get(c.name) == unit_of[layer.name] and len(_inbound_layers(c)) == 1
               and _reaches_weight_layer(c, unit_of, depth - 1) for c in consumers)


def _inbound_layers(layer) -> list:
    """The layers feeding ``layer``'s first call, as tfmot's quantize_apply reads them."""
    if len(layer._inbound_nodes) != 1:
        return []  # tfmot marks no producer of a layer called several times (neither do we)
    inbound = layer._inbound_nodes[0].inbound_layers
    return list(inbound) if isinstance(inbound, (list, tuple)) else [inbound]


def _quantizes_output(registry, layer) -> bool:
    """Whether tfmot's OutputOnlyConfig for ``layer`` fake-quantizes its output (what quantize_apply
    does to the unannotated producer of an annotated layer)."""
    if not registry.supports(layer):
        return False
    try:
        config = registry.get_quantize_config(layer)
        return bool(config.get_output_quantizers(layer) or config.get_activations_and_quantizers(layer))
    except (ValueError, RuntimeError):  # an Activation whose function the config does not know
        return False


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


def _unit_config(layer, quant: QuantConfig, scheme_bits: int, own: dict):
    """The QuantizeConfig of ``layer`` at ``quant``'s width under a scheme of ``scheme_bits`` weights: a
    weight layer whose width differs from the scheme's needs a config of its own (mixed plans); ``own``:
    the configs of Conv2D layers at a width of their own and of the BN behind them (_own_width_convs)."""
    config = _config_for(layer, quant)
    if config is not None or quant.weight_bits == scheme_bits and layer.name not in own:
        return config
    if layer.name in own:
        return own[layer.name]
    cls = type(layer).__name__
    if cls == "Dense":
        return DenseWeightConfig(quant.weight_bits, bool(quant.per_channel))
    if cls in KIND_OF_CLASS:
        raise UnsupportedQuantization(
            f"{cls} {layer.name!r} at {quant.weight_bits} bits beside {scheme_bits}-bit units: it would need a "
            "QuantizeConfig of its own, and tfmot skips its Conv+BN folding for such a layer (the kernel would "
            "stay float); mixed widths work for Dense and Conv2D units and QatBlocks")
    return None  # a layer without weights (Dropout, an activation): the scheme's default


RELU_CLASSES = ("ReLU",)  # tfmot's Conv+BN+ReLU transforms: a ReLU layer, or an Activation("relu")


def _follows_with_relu(layer) -> bool:
    consumers = [node.outbound_layer for node in layer._outbound_nodes]
    if len(consumers) != 1:
        return False
    cls = type(consumers[0]).__name__
    return cls in RELU_CLASSES or (cls == "Activation" and consumers[0].get_config().get("activation") == "relu")


def _own_width_convs(model: "keras.Model", width: dict, scheme_bits: int) -> dict:
    """{layer name: QuantizeConfig} for each plain Conv2D at a width other than the scheme's, and for the
    BatchNormalization right behind it, doing by hand what tfmot's Conv+BN(+ReLU) transforms do for a
    conv at the scheme's width (they skip a layer with a config of its own): the conv's output is not
    fake-quantized, so the converter folds the BN into it; the BN quantizes its output unless a ReLU
    follows (then the ReLU does, with the scheme's config). Other conv classes keep _unit_config's error."""
    own = {}
    for layer in model.layers:
        if type(layer).__name__ != "Conv2D" or layer.name not in width or width[layer.name] == scheme_bits:
            continue
        consumers = [node.outbound_layer for node in layer._outbound_nodes]
        bn = consumers[0] if len(consumers) == 1 and type(consumers[0]).__name__ == "BatchNormalization" else None
        folds = bn is not None and layer.get_config().get("activation") == "linear" and bn.name in width
        own[layer.name] = ConvWeightConfig(width[layer.name], quantize_output=not folds)
        if folds:
            own[bn.name] = NoOpQuantizeConfig() if _follows_with_relu(bn) else KeepFloatOutputConfig()
    return own


def _scheme_bits(model: "keras.Model", width: dict, default: int) -> int:
    """The scheme's weight width for {layer name: bits}: that of the weight layers that cannot take a
    width of their own (Conv2D and kin: UNIFORM_KINDS), so that none needs its own config; with
    none of them, the narrowest. Conv layers at several widths: the narrowest; a plain Conv2D at another
    width gets a config of its own (_own_width_convs: the ``ends8`` plan's first conv), other conv classes
    are refused (_unit_config)."""
    tied = [width[layer.name] for layer in model.layers
            if layer.name in width and KIND_OF_CLASS.get(type(layer).__name__) in UNIFORM_KINDS
            and not hasattr(layer, "qat_quantize_config")]
    return min(tied or width.values(), default=default)


def _refuse_unwrappable(model: "keras.Model", names: set) -> None:
    """A one-line error for a TFOpLambda (a raw TensorFlow op in a functional model) that would need an
    output quantizer (kept float, or a boundary fix): tfmot's QuantizeWrapper hands it a list, and
    quantize_apply failed with "'list' object has no attribute 'dtype'" (MobileNetV3's hard-swish)."""
    for layer in model.layers:
        if layer.name in names and type(layer).__name__ == "TFOpLambda":
            raise UnsupportedQuantization(
                f"layer {layer.name!r} (TFOpLambda, {layer.get_config().get('function')}) needs an output quantizer "
                "(kept float, or read by a selected unit) but tfmot cannot wrap a TFOpLambda: write that op as a Keras "
                "layer (MobileNetV3's hard-swish is rewritten on load: harness/models/hard_swish.py)")


def annotate(model: "keras.Model", chosen: Sequence[Unit], quant: QuantConfig, bits_of=None) -> "keras.Model":
    """Clone ``model`` with the chosen units wrapped for QAT; weights are copied. Empty selection: a float
    clone. ``bits_of``: {unit index: weight bits} of a mixed plan, one width per unit (every chosen unit
    at quant.weight_bits when None); the scheme then takes the conv units' width when the plan quantizes
    any (a conv cannot take a width of its own: _unit_config), else the narrowest width."""
    names = {name for unit in chosen for name in unit.members}
    # a producer tfmot would leave unquantized: computed in float, its output fake-quantized
    kept_float = ({name for unit in chosen for name in unit.float_members}
                  | {name for _, name in boundary_fixes(model, chosen, quant)})
    _refuse_unwrappable(model, kept_float)
    width = {name: (bits_of or {}).get(unit.index, quant.weight_bits) for unit in chosen for name in unit.members}
    scheme_bits = _scheme_bits(model, width, quant.weight_bits)
    own = _own_width_convs(model, width, scheme_bits)
    wrapped = names | kept_float

    def clone(layer):
        fresh = layer.__class__.from_config(layer.get_config())
        if layer.name not in wrapped or getattr(layer, "qat_float", False):
            return fresh  # qat_float: a layer that must stay float (an int32-token embedding)
        # A member tfmot cannot quantize computes in float, but its output is fake-quantized, so the
        # weight layer it feeds still sees a quantized input and converts to an integer kernel.
        if layer.name in kept_float:
            config = KeepFloatOutputConfig()
        else:
            config = _unit_config(layer, dataclasses.replace(quant, weight_bits=width[layer.name]), scheme_bits, own)
        return quantize.quantize_annotate_layer(fresh, quantize_config=config)

    with quantize.quantize_scope(CUSTOM_OBJECTS):
        annotated = keras.models.clone_model(model, clone_function=clone)
        annotated.set_weights(model.get_weights())
        if not names:
            return annotated
        return quantize.quantize_apply(annotated, scheme=scheme_for(dataclasses.replace(quant, weight_bits=scheme_bits)))
