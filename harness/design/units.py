"""Quantizable units: what N counts. Pure: works on layer descriptions, not Keras objects.

A unit is one weight layer (Dense, Conv2D, an attention block, ...) together with
- the pass-through layers in front of it back to the previous unit (Flatten, Dropout,
  pooling), so that annotating the unit always quantizes the weight layer's input, and
- the BatchNormalization / activation layers right behind it, so that a cut never falls
  between a Conv2D and its BatchNorm (which would leave the conv FLOAT32 in the .tflite), and
- a one-input pass-through layer that reads the same tensor as an earlier unit's weight layer (the
  strided shortcut of a ResNet block reads the block input, as the block's first conv does): that
  tensor is fake-quantized when either consumer is, and the converter then quantizes every weight
  layer reading it, so both consumers must be in one unit. (Grouped with the later unit instead,
  resnet20-last6 held 7 quantized kernels for 6 selected.)
- every weight layer reading the output of a weight layer that itself reads a fixed-range activation
  (sigmoid, tanh, softmax: ``LayerInfo.reads_fixed_range``). The converter knows such an activation's
  output scale without a fake-quant, so the weight layer behind it became INT8 whenever its own output
  was quantized, i.e. whenever the unit reading that output was selected (tiny tanh pattern: last-2 held
  3 INT8 kernels for 2 selected). One unit with both weight layers never splits them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

# Layers that belong to the weight layer in front of them (HardSwish/HardSigmoid: MobileNetV3's
# activations as harness/models/hard_swish.py rewrites them).
TRAILING_CLASSES = frozenset({"BatchNormalization", "Activation", "ReLU", "Softmax", "HardSwish", "HardSigmoid"})
# A TFLite CONCATENATION shares one scale between its inputs and its output, and so do the
# reshaping and max-pooling ops behind it: a cut anywhere in that chain fake-quantizes the output
# of the conv feeding the Concatenate, and the converter quantizes that conv too (3 INT8 kernels for
# 2 selected). So a Concatenate whose inputs all lie in one unit joins that unit, with the
# scale-preserving layers behind it and the first layer that re-quantizes (a pooling mean, say):
# the cut then falls behind a fresh scale. (Measured on tests/user_files.py's model.)
MERGE_CLASSES = frozenset({"Concatenate"})
SCALE_PRESERVING = frozenset({"Reshape", "Flatten", "Dropout", "MaxPooling1D", "MaxPooling2D", "ZeroPadding2D",
                              "Cropping2D", "Permute"})


@dataclass(frozen=True)
class LayerInfo:
    """What unit grouping needs to know about one layer, in graph order."""

    name: str
    class_name: str
    kind: Optional[str] = None  # dense/conv/attention/ffn/head for weight layers, None otherwise
    kernel_params: int = 0  # weights stored per-element at the quantized bit width
    bias_params: int = 0  # stored as int32 (quantized) or float32
    channels: int = 0  # output channels: number of per-channel scales
    inputs: tuple = ()  # names of the layers feeding this one
    kernels: int = 1  # weight tensors that become quantized kernels (a self-attention block has 4)
    reads_fixed_range: bool = False  # a weight layer whose input is a sigmoid/tanh/softmax output


@dataclass(frozen=True)
class Unit:
    index: int
    kind: str
    weight_layer: str
    members: tuple  # every layer name in the unit, weight layer included, graph order
    kernel_params: int
    bias_params: int
    channels: int = 0
    kernels: int = 1  # weight tensors that become quantized kernels (attention has 4)
    float_members: tuple = ()  # members kept float by --qat-skip-unsupported (only their output is quantized)
    # unselected producers of this (selected) unit's input that tfmot would leave unquantized, given an
    # output quantizer instead (issue 34): ((layer name, class name, channels), ...)
    input_fixes: tuple = ()
    # weight layers after the first that the unit holds because the first reads a fixed-range activation
    # (see the module docstring); their kernels are in kernel_params/bias_params/kernels
    tied_weight_layers: tuple = ()

    @property
    def weight_layers(self) -> tuple:
        return (self.weight_layer,) + self.tied_weight_layers

    @property
    def params(self) -> int:
        return self.kernel_params + self.bias_params


def group_units(layers: Sequence[LayerInfo]) -> tuple:
    """Group layers (in graph order) into units. InputLayers belong to no unit.

    A BatchNorm/activation joins the unit whose weight layer (or whose BN/activation) feeds it;
    with no graph edges known (``inputs`` empty) it joins the unit right before it.
    """
    groups: list = []  # [[weight LayerInfo, ...], members list]
    chain_of = {}  # weight layer or trailing member name -> group index
    read_by_weights = {}  # tensor (layer name) that a weight layer reads -> that weight layer's group
    member_of, tied = {}, {}  # layer -> its unit; a Concatenate's scale chain -> its unit
    fixed_out = {}  # output of a weight layer reading a fixed-range activation (and its trailing chain) -> unit
    pending: list = []
    for layer in layers:
        if layer.class_name == "InputLayer":
            continue
        if layer.kind is not None:
            owner = next((fixed_out[name] for other in pending + [layer] for name in other.inputs
                          if name in fixed_out), None) if fixed_out else None
            if owner is None:
                groups.append([[], []])
                owner = len(groups) - 1
            groups[owner][0].append(layer)
            groups[owner][1].extend([p.name for p in pending] + [layer.name])
            chain_of[layer.name] = owner
            member_of.update({p.name: owner for p in pending} | {layer.name: owner})
            read_by_weights.update({name: owner for name in layer.inputs})
            if layer.reads_fixed_range:
                fixed_out[layer.name] = owner
            pending = []
            continue
        owner = _trailing_owner(layer, chain_of, groups, pending)
        if owner is None and len(layer.inputs) == 1:
            owner = read_by_weights.get(layer.inputs[0])
        if owner is None:
            owner = _tied_owner(layer, member_of, tied)
        if owner is None:
            pending.append(layer)
            continue
        groups[owner][1].append(layer.name)
        chain_of[layer.name] = owner
        member_of[layer.name] = owner
        if layer.class_name in TRAILING_CLASSES and layer.inputs and layer.inputs[0] in fixed_out:
            fixed_out[layer.name] = owner  # the BN/activation behind it: still that weight layer's output
    if not groups:
        raise ValueError("model has no quantizable weight layer")
    if pending:  # e.g. a final Softmax or Flatten behind the last weight layer
        groups[-1][1].extend(p.name for p in pending)
    return tuple(_unit(i, infos, members) for i, (infos, members) in enumerate(groups))


def _unit(index: int, infos: list, members: list) -> Unit:
    """The unit of one or more weight layers (the first names it and gives its kind) and their members."""
    return Unit(index=index, kind=infos[0].kind, weight_layer=infos[0].name, members=tuple(members),
                kernel_params=sum(i.kernel_params for i in infos), bias_params=sum(i.bias_params for i in infos),
                channels=sum(i.channels for i in infos), kernels=sum(i.kernels for i in infos),
                tied_weight_layers=tuple(i.name for i in infos[1:]))


def _tied_owner(layer: LayerInfo, member_of: dict, tied: dict) -> Optional[int]:
    """The unit a layer joins because its scale is tied to it (see MERGE_CLASSES), else None."""
    if layer.class_name in MERGE_CLASSES and layer.inputs:
        owners = {member_of.get(name) for name in layer.inputs}
        owner = owners.pop() if len(owners) == 1 else None
        if owner is not None:
            tied[layer.name] = owner
        return owner
    if len(layer.inputs) == 1 and layer.inputs[0] in tied:
        owner = tied[layer.inputs[0]]
        if layer.class_name in SCALE_PRESERVING:  # still the same scale: the chain goes on
            tied[layer.name] = owner
        return owner
    return None


def _trailing_owner(layer: LayerInfo, chain_of: dict, groups: list, pending: list) -> Optional[int]:
    if layer.class_name not in TRAILING_CLASSES or not groups:
        return None
    if layer.inputs:
        return chain_of.get(layer.inputs[0]) if len(layer.inputs) == 1 else None
    last = groups[-1][1][-1]
    return chain_of.get(last) if not pending else None


def unit_kinds(units: Sequence[Unit]) -> tuple:
    return tuple(sorted({u.kind for u in units}))
