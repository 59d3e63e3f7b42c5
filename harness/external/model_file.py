"""A user's own trained Keras model from a file (--qat-model-file): loaded, checked and turned into
the float baseline of the suite's cases. Every problem is one line naming the file and the value."""

from __future__ import annotations

import importlib
import json
import zipfile
from pathlib import Path

from harness.backend import keras, quantize
from harness.models.quantizable import CUSTOM_OBJECTS, register_custom_object

MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")


class BadModel(ValueError):
    """The model file cannot be benchmarked; the message names the file and says what to do."""


def custom_objects(target: str) -> dict:
    """``module:name`` -> {class name: class}: a class, a function returning classes, or a dict.
    Each class is also registered for cloning and quantization (harness.models.quantizable)."""
    if not target:
        return {}
    module_name, _, name = target.partition(":")
    try:
        value = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise BadModel(f"--qat-custom-objects {target}: cannot import it ({type(exc).__name__}: {exc})") from None
    if callable(value) and not isinstance(value, type):
        value = value()
    objects = value if isinstance(value, dict) else {value.__name__: value}
    for cls in objects.values():
        register_custom_object(cls)
    return dict(objects)


def keras3_version(path: Path) -> str:
    """The Keras 3 version that wrote ``path``, or "" if Keras 2 (tf_keras) wrote it."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                if "metadata.json" in archive.namelist():
                    version = json.loads(archive.read("metadata.json")).get("keras_version", "")
                    return version if version.startswith("3") else ""
        elif path.suffix in (".h5", ".hdf5"):
            import h5py

            with h5py.File(path, "r") as handle:
                version = handle.attrs.get("keras_version", "")
                version = version.decode() if isinstance(version, bytes) else str(version)
                return version if version.startswith("3") else ""
    except (OSError, ValueError, KeyError):
        return ""
    return ""


def read(path, custom: str = "") -> "keras.Model":
    """The model in ``path`` (a .keras/.h5 file or a SavedModel folder), loaded with tf_keras."""
    path = Path(path)
    if not path.exists():
        raise BadModel(f"--qat-model-file {path}: no such file or folder")
    if path.is_file() and path.suffix not in MODEL_SUFFIXES:
        raise BadModel(f"--qat-model-file {path}: not a model file (expected .keras, .h5 or a SavedModel folder)")
    version = keras3_version(path)
    if version:
        raise BadModel(f"--qat-model-file {path} was written by Keras {version}; tfmot needs Keras 2: rebuild the "
                       "model under TF_USE_LEGACY_KERAS=1 (import tf_keras), copy the weights with "
                       "set_weights(keras3_model.get_weights()), and save it with model.save('model.h5')")
    objects = {**CUSTOM_OBJECTS, **custom_objects(custom)}
    try:
        with quantize.quantize_scope(objects):
            model = keras.models.load_model(str(path), custom_objects=objects, compile=False)
    except Exception as exc:  # noqa: BLE001 - h5py, zipfile, SavedModel and Keras each raise their own
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        unknown = [name for name in _layer_classes(path) if not hasattr(keras.layers, name) and name not in objects]
        if unknown:
            raise BadModel(f"--qat-model-file {path}: layer class {unknown[0]!r} is not a Keras layer: load it with "
                           f"--qat-custom-objects module:name (the module that defines {unknown[0]})") from None
        raise BadModel(f"--qat-model-file {path}: not a Keras model tf_keras can load "
                       f"({type(exc).__name__}: {first})") from None
    if not isinstance(model, keras.Model) or not hasattr(model, "layers"):
        raise BadModel(f"--qat-model-file {path}: loaded a {type(model).__name__}, not a Keras model with layers "
                       "(a SavedModel written by tf.saved_model or model.export() has no Keras layers)")
    return model


def _layer_classes(path: Path) -> list:
    """The layer class names a .keras or .h5 file's config names (empty when it cannot be read)."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                config = json.loads(archive.read("config.json"))
        else:
            import h5py

            with h5py.File(path, "r") as handle:
                raw = handle.attrs.get("model_config", "{}")
                config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except (OSError, ValueError, KeyError):
        return []
    layers = (config.get("config") or {}).get("layers") or []
    return list(dict.fromkeys(layer.get("class_name", "") for layer in layers if isinstance(layer, dict)))


def check(model: "keras.Model", path) -> tuple:
    """(input shape without batch, number of classes) of a one-input classifier, else BadModel."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise BadModel(f"--qat-model-file {path}: the model has {len(model.inputs)} inputs and {len(model.outputs)} "
                       "outputs; the suite benchmarks a classifier with exactly one of each")
    output = tuple(model.outputs[0].shape)
    if len(output) != 2 or output[1] is None or output[1] < 2:
        raise BadModel(f"--qat-model-file {path}: output shape {output} is not a classification output "
                       "(batch, classes >= 2); regression, sequence and 1-unit sigmoid outputs are not supported")
    input_shape = tuple(model.inputs[0].shape)[1:]
    if any(dim is None for dim in input_shape):
        raise BadModel(f"--qat-model-file {path}: input shape {input_shape} has a free dimension; the .tflite "
                       "needs a fixed one (save the model with a fixed-size Input)")
    return input_shape, int(output[1])


def as_logits(model: "keras.Model") -> "keras.Model":
    """The model with a final softmax removed: the suite trains on logits with the same cross-entropy,
    and the predicted classes are the same."""
    last = model.layers[-1]
    cls = type(last).__name__
    if cls == "Softmax" or (cls == "Activation" and last.get_config().get("activation") == "softmax"):
        return keras.Model(model.inputs, last.input, name=model.name)
    if getattr(last, "activation", None) is not None and getattr(last.activation, "__name__", "") == "softmax":
        def clone(layer):
            config = layer.get_config()
            if layer is last:
                config["activation"] = "linear"
            return layer.__class__.from_config(config)

        with quantize.quantize_scope(CUSTOM_OBJECTS):
            logits = keras.models.clone_model(model, clone_function=clone)
        logits.set_weights(model.get_weights())
        return logits
    return model


def build(path, custom: str, input_shape=None, num_classes=None) -> "keras.Model":
    """The registry's builder for a model file: (input_shape, num_classes) are checked, not used."""
    model = as_logits(read(path, custom))
    found = check(model, path)
    if input_shape is not None and (tuple(input_shape), num_classes) != found:
        raise BadModel(f"--qat-model-file {path}: model is {found}, the spec expects {(tuple(input_shape), num_classes)}")
    return model
