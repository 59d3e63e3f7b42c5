"""Hard-swish and hard-sigmoid as Keras layers that tfmot can annotate (MobileNetV3, issue 34).

keras.applications' MobileNetV3 writes ``hard_sigmoid(x) = ReLU(6)(x + 3) * (1/6)`` and
``hard_swish(x) = Multiply()([x, hard_sigmoid(x)])``: the ``+ 3`` and ``* (1/6)`` become TFOpLambda
layers, which tfmot cannot wrap (quantize_apply failed with "'list' object has no attribute 'dtype'"),
so no unit holding one could be selected. ``rewrite_hard_activations`` rebuilds such a model with one
HardSigmoid or HardSwish layer per chain. The layers run the same TensorFlow ops in the same order,
so the float outputs are bit-identical (tests/test_boundary.py), and they quantize their output like
an activation (units.py lets them join the weight layer in front, as a ReLU does).
"""

from __future__ import annotations

from harness.backend import keras, tf
from harness.models.quantizable import KeepFloatOutputConfig, register_custom_object


def _hard_sigmoid(x):
    # the ops of keras.applications.mobilenet_v3.hard_sigmoid, in its order: ReLU(6.0) is backend.relu
    return keras.backend.relu(x + 3.0, alpha=0.0, max_value=6.0, threshold=0.0) * (1.0 / 6.0)


class HardSigmoid(keras.layers.Layer):
    """relu6(x + 3) / 6; its output is fake-quantized when its unit is selected."""

    def call(self, inputs):
        return _hard_sigmoid(inputs)

    def qat_quantize_config(self, quant):
        return KeepFloatOutputConfig()  # no weights: only the output is quantized, as for an activation


class HardSwish(HardSigmoid):
    """x * relu6(x + 3) / 6 (a Multiply of x and its hard sigmoid in the original)."""

    def call(self, inputs):
        return inputs * _hard_sigmoid(inputs)


register_custom_object(HardSigmoid)
register_custom_object(HardSwish)


def _op(layer, name: str, constant: float):
    """Whether ``layer`` is a TFOpLambda ``name`` (e.g. "__operators__.add") of its tensor and ``constant``."""
    if type(layer).__name__ != "TFOpLambda" or layer.get_config().get("function") != name:
        return False
    node = layer._inbound_nodes[0]
    other = list(node.call_args[1:]) + [v for k, v in node.call_kwargs.items() if k in ("y", "b")]
    return len(other) == 1 and isinstance(other[0], float) and abs(other[0] - constant) < 1e-12


def _only_consumer(layer):
    consumers = [n.outbound_layer for n in layer._outbound_nodes]
    return consumers[0] if len(consumers) == 1 else None


def _chains(model) -> dict:
    """{name of the chain's first layer: (replacement class, the chain's input tensor, its last layer, the
    names of its layers)} for every hard-sigmoid chain (add 3 -> ReLU(6) -> multiply by 1/6), taken
    with the Multiply behind it as a hard-swish when that Multiply's other input is the chain's input."""
    found = {}
    for add in model.layers:
        if not _op(add, "__operators__.add", 3.0):
            continue
        relu, x = _only_consumer(add), add._inbound_nodes[0].call_args[0]
        scale = _only_consumer(relu) if relu is not None else None
        if (type(relu).__name__ != "ReLU" or relu.max_value != 6.0 or relu.threshold != 0.0
                or relu.negative_slope != 0.0 or scale is None or not _op(scale, "math.multiply", 1.0 / 6.0)):
            continue
        mul = _only_consumer(scale)
        inputs = mul._inbound_nodes[0].call_args[0] if type(mul).__name__ == "Multiply" else ()
        if len(inputs) == 2 and any(t is x for t in inputs):
            found[add.name] = (HardSwish, x, mul, {add.name, relu.name, scale.name, mul.name})
        else:
            found[add.name] = (HardSigmoid, x, scale, {add.name, relu.name, scale.name})
    return found


def rewrite_hard_activations(model):
    """``model`` with every hard-sigmoid/hard-swish TFOpLambda chain replaced by one layer; ``model``
    itself when it has none. Other layers are fresh copies with the same weights."""
    chains = _chains(model)
    if not chains:
        return model
    replaced = set().union(*(members for _, _, _, members in chains.values()))
    new = {}  # id of an original KerasTensor -> its tensor in the rebuilt model

    def mapped(structure):
        return tf.nest.map_structure(lambda t: new.get(id(t), t), structure)

    inputs = [keras.Input(shape=t.shape[1:], dtype=t.dtype, name=name) for t, name in zip(model.inputs, model.input_names)]
    new.update({id(old): fresh for old, fresh in zip(model.inputs, inputs)})
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        if layer.name in chains:
            cls, x, last, _ = chains[layer.name]
            new[id(last.output)] = cls(name=last.name)(new[id(x)])
        elif layer.name not in replaced:
            node = layer._inbound_nodes[0]
            copy = layer.__class__.from_config(layer.get_config())
            new[id(layer.output)] = copy(*mapped(node.call_args), **mapped(node.call_kwargs))
            copy.set_weights(layer.get_weights())
    return keras.Model(inputs, mapped(model.outputs), name=model.name)
