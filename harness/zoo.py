"""Model builders. Every layer gets an explicit name so .tflite files are reproducible."""

from __future__ import annotations

from .backend import keras


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
