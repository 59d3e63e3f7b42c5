"""Model builders. Every layer gets an explicit name so .tflite files are reproducible."""

from __future__ import annotations

from harness.backend import keras, tf
from harness.models.quantizable import NoOpQuantizeConfig, register_custom_object


def build_mlp(input_shape=(28, 28), num_classes=10) -> "keras.Model":
    """The seed's notebook model: Flatten, Dense 128/256, Dropout 0.2, Dense 128/128, Dense 10 (logits)."""
    layers = keras.layers
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Flatten(name="flatten")(inputs)
    x = layers.Dense(128, activation="relu", name="dense_1")(x)
    x = layers.Dense(256, activation="relu", name="dense_2")(x)
    x = layers.Dropout(0.2, name="dropout")(x)
    x = layers.Dense(128, activation="relu", name="dense_3")(x)
    x = layers.Dense(128, activation="relu", name="dense_4")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="mlp")


class ChannelPad(keras.layers.Layer):
    """Zero-pads channels: the parameter-free ('option A') shortcut of CIFAR ResNets."""

    def __init__(self, extra: int, **kwargs):
        super().__init__(**kwargs)
        self.extra = extra

    def call(self, x):
        return tf.pad(x, [[0, 0], [0, 0], [0, 0], [self.extra // 2, self.extra - self.extra // 2]])

    def get_config(self):
        return {**super().get_config(), "extra": self.extra}

    def qat_quantize_config(self, quant):
        return NoOpQuantizeConfig()


register_custom_object(ChannelPad)


def _conv_bn_relu(x, filters, name, strides=1, relu=True):
    layers = keras.layers
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False,
                      kernel_initializer="he_normal", name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def build_cnn(input_shape=(28, 28, 1), num_classes=10) -> "keras.Model":
    """A small Conv2D+BN+ReLU network: 3 conv units (32-64-128), a Dense unit and the logits."""
    layers = keras.layers
    inputs = keras.Input(shape=input_shape, name="image")
    x = _conv_bn_relu(inputs, 32, "c1")
    x = layers.MaxPooling2D(name="pool_1")(x)
    x = _conv_bn_relu(x, 64, "c2")
    x = layers.MaxPooling2D(name="pool_2")(x)
    x = _conv_bn_relu(x, 128, "c3")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(128, activation="relu", name="fc")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="cnn")


def build_resnet20(input_shape=(32, 32, 1), num_classes=10) -> "keras.Model":
    """CIFAR-style ResNet-20 (He et al. 2016): 3 stages x 3 basic blocks, parameter-free shortcuts.
    19 Conv2D + 1 Dense weight layers."""
    layers = keras.layers
    inputs = keras.Input(shape=input_shape, name="image")
    x = _conv_bn_relu(inputs, 16, "stem")
    for stage, filters in enumerate((16, 32, 64), start=1):
        for block in range(1, 4):
            name = f"s{stage}b{block}"
            strides = 2 if stage > 1 and block == 1 else 1
            y = _conv_bn_relu(x, filters, f"{name}a", strides)
            y = _conv_bn_relu(y, filters, f"{name}b", relu=False)
            if strides != 1:
                x = layers.MaxPooling2D(pool_size=1, strides=2, name=f"{name}_down")(x)
                x = ChannelPad(filters - x.shape[-1], name=f"{name}_pad")(x)
            x = layers.Add(name=f"{name}_add")([x, y])
            x = layers.ReLU(name=f"{name}_out")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="resnet20")


RESNET50_WEIGHTS_ENV = "QATBENCH_RESNET50_WEIGHTS"


def build_resnet50(input_shape=(32, 32, 3), num_classes=10) -> "keras.Model":
    """keras.applications ResNet-50 at 32x32x3 with a 10-class head (the seed's set-up).

    Weights: random by default; a Keras weights file named by $QATBENCH_RESNET50_WEIGHTS; or
    'imagenet' there (downloads: only for users with internet; backbone only, new head)."""
    import os

    choice = os.environ.get(RESNET50_WEIGHTS_ENV, "")
    if choice == "imagenet":
        base = keras.applications.ResNet50(include_top=False, weights="imagenet", input_shape=input_shape,
                                           pooling="avg")
        outputs = keras.layers.Dense(num_classes, name="predictions")(base.output)
        return keras.Model(base.input, outputs, name="resnet50")
    model = keras.applications.ResNet50(weights=None, input_shape=input_shape, classes=num_classes,
                                        classifier_activation=None)
    if choice:
        load_checked_weights(model, choice)
    return model


def load_checked_weights(model, path: str) -> None:
    """Load a Keras weights file; a mismatch is one line naming the first tensor that does not fit
    (Keras assigns in order and stops at the first mismatch, naming the variable and both shapes)."""
    try:
        model.load_weights(path)
    except (ValueError, OSError) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise ValueError(f"{path}: weights do not fit {model.name}: {detail[:400]}") from None
