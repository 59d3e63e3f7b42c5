"""Models and a conversion-only cut check for the unit-boundary tests (issue 34): tiny Keras models, one
per producer kind in front of a cut, the keras.applications mobile families at a small input, and
``convert_cut``: annotate -> quantize_apply -> convert -> audit, with no training."""

from __future__ import annotations

import numpy as np

SHAPE, CLASSES = (8, 8, 3), 4


def like_trained(model, seed: int = 0):
    """Give every constant-initialised weight (BN gamma/beta/mean/variance, zero biases) random values
    of the same sign, as training would. Why: the converter drops an all-zero bias, and an untrained
    BN folds to a per-channel constant scale, so a freshly built model's file is not what a user's
    trained model gives (a 10-class head's zero bias alone was 40 bytes off)."""
    rng = np.random.default_rng(seed)

    def fill(w):
        if w.size < 2 or w.std() > 0 or not np.issubdtype(w.dtype, np.floating):
            return w
        new = np.abs(w) * rng.uniform(0.5, 1.5, w.shape) if w.mean() > 0 else rng.normal(0, 0.2, w.shape)
        return new.astype(w.dtype)

    model.set_weights([fill(w) for w in model.get_weights()])
    return model


def tiny(producer: str):
    """conv -> [producer pattern] -> conv -> BN -> GAP -> Dense; the cut under test is in front of c2,
    and the layer right in front of c2's unit is named "p"."""
    from harness.backend import keras

    layers = keras.layers
    inp = layers.Input(SHAPE, name="image")
    if producer in OTHER_TINY:
        return like_trained(keras.Model(inp, OTHER_TINY[producer](layers, inp)))
    if producer == "dw-bn":
        x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="c1")(inp)
    else:
        x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="c1")(inp)
    x = layers.BatchNormalization(name="p")(x)
    if producer == "bn-relu":
        x = layers.ReLU(6.0, name="relu")(x)
    if producer == "add":
        x = layers.Add(name="add")([x, layers.Conv2D(x.shape[-1], 1, name="side")(inp)])
    if producer == "bn-pad":
        x = layers.ZeroPadding2D(1, name="pad")(x)
    if producer == "bn-dropout":
        x = layers.Dropout(0.1, name="drop")(x)
    x = layers.Conv2D(16, 3, use_bias=False, name="c2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(layers.BatchNormalization(name="bn2")(x))
    return like_trained(keras.Model(inp, layers.Dense(CLASSES, name="logits")(x)))


def _head(layers, x):
    return layers.Dense(CLASSES, name="logits")(layers.GlobalAveragePooling2D(name="gap")(x))


def _sigmoid(layers, inp, pad=False):
    """A plain sigmoid in front of c2 (behind it, c2 and the head are one unit: units.py)."""
    x = layers.BatchNormalization(name="bn1")(layers.Conv2D(8, 3, padding="same", use_bias=False, name="c1")(inp))
    x = layers.Activation("sigmoid", name="p")(x)
    if pad:
        x = layers.ZeroPadding2D(1, name="pad")(x)
    return _head(layers, layers.BatchNormalization(name="bn2")(layers.Conv2D(16, 3, use_bias=False, name="c2")(x)))


def _tanh_conv(layers, inp):
    """tanh -> c2 -> ReLU -> c3: c2 reads a fixed-range activation, so it shares c3's unit; the cut
    behind c3 is an ordinary one."""
    x = layers.Activation("tanh", name="p")(layers.Conv2D(8, 3, padding="same", name="c1")(inp))
    x = layers.ReLU(name="r2")(layers.Conv2D(16, 3, name="c2")(x))
    return _head(layers, layers.ReLU(name="r3")(layers.Conv2D(16, 1, name="c3")(x)))


def _squeeze_excite(layers, inp):
    """EfficientNet's gate in small: c2 reads Multiply(features, sigmoid(se_expand(...)))."""
    x = layers.BatchNormalization(name="bn1")(layers.Conv2D(8, 3, padding="same", use_bias=False, name="c1")(inp))
    x = layers.Activation("swish", name="act")(x)
    s = layers.Reshape((1, 1, 8), name="se_reshape")(layers.GlobalAveragePooling2D(name="se_squeeze")(x))
    s = layers.Conv2D(4, 1, activation="swish", name="se_reduce")(s)
    s = layers.Conv2D(8, 1, activation="sigmoid", name="se_expand")(s)
    x = layers.Multiply(name="p")([x, s])
    return _head(layers, layers.BatchNormalization(name="bn2")(layers.Conv2D(16, 1, use_bias=False, name="c2")(x)))


def _no_bias(layers, inp, depthwise=False):
    """Bias-free weight layers without a BN: the converter gives each conv a zero bias."""
    if depthwise:
        x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="c1")(inp)
        x = layers.Conv2D(16, 3, use_bias=False, name="c2")(layers.ReLU(name="p")(x))
    else:
        x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="c1")(inp)
        x = layers.SeparableConv2D(16, 3, use_bias=False, name="c2")(layers.ReLU(name="p")(x))
    return _head(layers, layers.ReLU(name="r2")(x))


OTHER_TINY = {"sigmoid": _sigmoid, "sigmoid-pad": lambda layers, inp: _sigmoid(layers, inp, pad=True),
              "tanh-conv": _tanh_conv, "se": _squeeze_excite, "no-bias": _no_bias,
              "dw-no-bias": lambda layers, inp: _no_bias(layers, inp, depthwise=True)}
TINY = ("bn", "bn-relu", "add", "bn-pad", "bn-dropout", "dw-bn") + tuple(OTHER_TINY)

MOBILE = {  # keras.applications' inverted-residual / MBConv families that build offline (weights=None)
    "efficientnetb0": lambda keras: keras.applications.EfficientNetB0(
        include_top=True, weights=None, classes=10, input_shape=(32, 32, 3)),
    "mobilenetv2": lambda keras: keras.applications.MobileNetV2(
        alpha=0.35, include_top=True, weights=None, classes=10, input_shape=(32, 32, 3)),
    "efficientnetv2b0": lambda keras: keras.applications.EfficientNetV2B0(
        include_top=True, weights=None, classes=10, input_shape=(32, 32, 3)),
    "mobilenetv3small": lambda keras: hard_swish_rewritten(mobilenet_v3(keras)),
}


def mobilenet_v3(keras):
    """As keras.applications builds it: hard-swish as TFOpLambda ops tfmot cannot wrap."""
    return keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None, classes=10,
                                               minimalistic=False, include_preprocessing=True)


def hard_swish_rewritten(model):
    from harness.models.hard_swish import rewrite_hard_activations

    return rewrite_hard_activations(model)


def mobile(name: str):
    from harness.backend import keras

    return like_trained(MOBILE[name](keras))


def cuts(order: str, count: int):
    return range(count) if order == "single" else range(1, count + 1)


def convert_cut(model, units, order: str, n: int, bits: int = 8):
    """(audit, SizePrediction, chosen units) of one cut, converted without training: tfmot's ranges
    start at [-6, 6], which is all the converter needs to decide which kernels are integer."""
    from harness.case import audit, export, quantize
    from harness.design import size
    from harness.design.config import QuantConfig, Selection
    from harness.design.select import select

    quant = QuantConfig(bits)
    chosen, _ = quantize.without_unsupported(model, select(units, Selection(order, n)), quant, True)
    found = audit.inspect(export.to_tflite(quantize.annotate(model, chosen, quant), quantized=True, quant=quant))
    return found, size.predict(units, chosen, quant), chosen


def float_audit(model):
    from harness.case import audit, export

    return audit.inspect(export.to_tflite(model, quantized=False))


def exact(found, predicted) -> bool:
    return (found.quantized_kernels, found.weight_bytes) == (predicted.quantized_kernels, predicted.weight_bytes)
