"""Small user inputs written by the tests: a trained functional model with the layer classes real
models use, saved as .keras and .h5, and its data as an .npz and as an image folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SHAPE, CLASSES = (16, 16, 3), 3


def images(count: int, seed: int) -> tuple:
    """Class k: channel k brighter, with noise; learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, count)
    x = rng.random((count, *SHAPE), dtype=np.float32) * 0.5
    x[np.arange(count), :, :, y] += 0.5
    return x, y.astype("int64")


def build(variant: str = "all"):
    """ZeroPadding2D, Conv2D+BN+ReLU6, DepthwiseConv2D+BN+relu6, SeparableConv2D, Add, Concatenate,
    GlobalAveragePooling2D, Reshape, LayerNormalization (variant "all"), a stock MultiHeadAttention
    (variant "mha"), Flatten, Dropout, Dense with a softmax output."""
    from harness.backend import keras

    layers = keras.layers
    inp = layers.Input(SHAPE, name="image")
    x = layers.ZeroPadding2D(1, name="pad")(inp)
    x = layers.Conv2D(8, 3, name="conv")(x)
    x = layers.ReLU(6.0, name="relu6")(layers.BatchNormalization(name="bn")(x))
    x = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = layers.Activation("relu6", name="act6")(layers.BatchNormalization(name="dwbn")(x))
    x = layers.Add(name="add")([x, layers.SeparableConv2D(8, 3, padding="same", name="sep")(x)])
    x = layers.Concatenate(name="cat")([x, layers.Conv2D(8, 1, name="pw")(x)])
    x = layers.Reshape((4, 4), name="reshape")(layers.GlobalAveragePooling2D(name="gap")(x))
    if variant in ("all", "mha"):
        x = layers.LayerNormalization(name="ln")(x)
    if variant == "mha":
        x = layers.MultiHeadAttention(num_heads=2, key_dim=4, name="mha")(x, x)
    x = layers.Dropout(0.1, name="drop")(layers.Flatten(name="flat")(x))
    x = layers.Dense(12, activation="relu", name="fc")(x)
    return keras.Model(inp, layers.Dense(CLASSES, activation="softmax", name="probs")(x))


def trained(variant: str = "all", epochs: int = 8):
    model = build(variant)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = images(600, seed=0)
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


def write_npz(path: Path, train: int = 600, test: int = 150, **override) -> Path:
    x_train, y_train = images(train, seed=0)
    x_test, y_test = images(test, seed=1)
    arrays = dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    arrays.update(override)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def write_image_folder(folder: Path, per_class: int = 40) -> Path:
    from PIL import Image

    x, y = images(per_class * CLASSES * 2, seed=3)
    for index, (pixels, label) in enumerate(zip(x, y)):
        target = folder / f"class{label}"
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray((np.clip(pixels, 0, 1) * 255).astype("uint8")).save(target / f"{index}.png")
    return folder
