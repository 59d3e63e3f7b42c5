"""A user's own trained Keras model from a file (--qat-model-file): loaded, checked and turned into
the float baseline of the suite's cases. Every problem is one line naming the file and the value."""

from __future__ import annotations

import importlib
import inspect
import json
import sys
import types
import zipfile
from pathlib import Path

from harness.backend import keras, quantize, safe_mode_scope
from harness.models.quantizable import CUSTOM_OBJECTS, register_custom_object
from harness.models.hard_swish import rewrite_hard_activations

MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")


class BadModel(ValueError):
    """The model file cannot be benchmarked; the message names the file and says what to do."""


TRUST_OPTION = "--qat-trust-model-file"
# Class names tf_keras writes besides those of keras.layers & co.: its tf.* op wrappers (they resolve
# TensorFlow API symbols by name, never Python code from the file), model classes, and a SavedModel's
# shape and spec encodings (read as data).
KERAS_OP_LAYERS = ("TFOpLambda", "SlicingOpLambda", "Functional", "Sequential", "Model", "Policy", "TensorShape",
                   "TypeSpec")


def custom_objects(target: str) -> dict:
    """``module:name`` -> {class name: class}: a class, a dict of classes, or a function of no arguments
    defined in that module that returns one. Nothing else is called (never a builtin or a standard
    library function: ``os:system`` is refused). Each class is also registered for cloning and
    quantization (harness.models.quantizable)."""
    if not target:
        return {}
    module_name, _, name = target.partition(":")
    if module_name.split(".")[0] in sys.stdlib_module_names:
        raise BadModel(f"--qat-custom-objects {target}: {module_name} is a standard-library module; name the "
                       "module that defines your layers (module:Class, module:DICT or module:function)")
    try:
        module = importlib.import_module(module_name)
        value = getattr(module, name)
    except (ImportError, AttributeError) as exc:
        raise BadModel(f"--qat-custom-objects {target}: cannot import it ({type(exc).__name__}: {exc})") from None
    if isinstance(value, types.FunctionType) and value.__module__ == module.__name__ and not _required(value):
        value = value()
    elif not isinstance(value, (type, dict)):
        raise BadModel(f"--qat-custom-objects {target}: a {type(value).__name__}, not a class, a dict of classes or "
                       f"a function of no arguments defined in {module_name} returning one; it was not called")
    objects = value if isinstance(value, dict) else {getattr(value, "__name__", ""): value}
    bad = [key for key, cls in objects.items() if not isinstance(key, str) or not isinstance(cls, type)]
    if bad:
        raise BadModel(f"--qat-custom-objects {target}: {bad[0]!r} is not a class name mapped to a class")
    for cls in objects.values():
        register_custom_object(cls)
    return dict(objects)


def _required(function) -> list:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return ["?"]
    return [p for p in parameters if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


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


def read(path, custom: str = "", trust: bool = False) -> "keras.Model":
    """The model in ``path`` (a .keras/.h5 file or a SavedModel folder), loaded with tf_keras. Unless
    ``trust`` (--qat-trust-model-file), no code from the file runs: a Lambda layer (Python bytecode)
    or a layer class neither Keras's nor named by --qat-custom-objects is refused before loading, and
    the loading itself runs in tf_keras's safe mode, for every format alike."""
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
    if not trust:
        refuse_code(path, objects)
    try:
        with quantize.quantize_scope(objects), safe_mode_scope(not trust):
            model = keras.models.load_model(str(path), custom_objects=objects, compile=False, safe_mode=not trust)
    except Exception as exc:  # noqa: BLE001 - h5py, zipfile, SavedModel and Keras each raise their own
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        unknown = [name for name in _layer_classes(path) if not _builtin(name) and name not in objects]
        if unknown:
            raise BadModel(f"--qat-model-file {path}: layer class {unknown[0]!r} is not a Keras layer: load it with "
                           f"--qat-custom-objects module:name (the module that defines {unknown[0]})") from None
        raise BadModel(f"--qat-model-file {path}: not a Keras model tf_keras can load "
                       f"({type(exc).__name__}: {first})") from None
    if not isinstance(model, keras.Model) or not hasattr(model, "layers"):
        raise BadModel(f"--qat-model-file {path}: loaded a {type(model).__name__}, not a Keras model with layers "
                       "(a SavedModel written by tf.saved_model or model.export() has no Keras layers)")
    return model


def _configs(path: Path) -> list:
    """The Keras configs a model file holds (JSON objects): a .keras archive's config.json, an .h5's
    model_config attribute, a SavedModel's keras_metadata.pb (one per saved object). Empty when there
    is none or it cannot be read (loading then fails, or runs in safe mode)."""
    try:
        if path.is_dir():
            from tf_keras.protobuf import saved_metadata_pb2

            metadata = saved_metadata_pb2.SavedMetadata()
            metadata.ParseFromString((path / "keras_metadata.pb").read_bytes())
            return [json.loads(node.metadata) for node in metadata.nodes]
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return [json.loads(archive.read("config.json"))]
        import h5py

        with h5py.File(path, "r") as handle:
            raw = handle.attrs.get("model_config", "{}")
            return [json.loads(raw.decode() if isinstance(raw, bytes) else raw)]
    except (OSError, ValueError, KeyError, ImportError, RuntimeError):
        return []


def _class_names(config) -> list:
    """Every class_name anywhere in a config (nested models, wrappers, initializers), in order."""
    found, stack = [], [config]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("class_name"), str):
                found.append(item["class_name"])
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            stack.extend(reversed(item))
    return list(dict.fromkeys(found))


def _builtin(name: str) -> bool:
    name = name.rpartition(">")[2]  # a registered name, "Custom>Adam": Keras's own optimizers are written so
    return name.startswith("__") or name in KERAS_OP_LAYERS or any(
        hasattr(namespace, name) for namespace in (keras.layers, keras.initializers, keras.regularizers,
                                                   keras.constraints, keras.optimizers, keras.losses, keras.metrics))


def refuse_code(path: Path, objects: dict) -> None:
    """BadModel (one line) if the file's config holds a Lambda layer or a class that is neither a Keras
    built-in nor one of ``objects``: read before anything in the file is deserialized."""
    names = _layer_classes(path)
    if "Lambda" in names:
        raise BadModel(f"--qat-model-file {path}: holds a Lambda layer, whose Python code would run when it is "
                       f"loaded; refused. If you trust this file, pass {TRUST_OPTION}")
    unknown = [name for name in names if not _builtin(name) and name.rpartition(">")[2] not in objects
               and name not in objects]
    if unknown:
        raise BadModel(f"--qat-model-file {path}: layer class {unknown[0]!r} is not a Keras layer: load it with "
                       f"--qat-custom-objects module:name (the module that defines {unknown[0]})")


def _layer_classes(path: Path) -> list:
    """The class names a model file's config names (empty when it cannot be read)."""
    return list(dict.fromkeys(name for config in _configs(path) for name in _class_names(config)))


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


def build(path, custom: str, input_shape=None, num_classes=None, trust: bool = False) -> "keras.Model":
    """The registry's builder for a model file: (input_shape, num_classes) are checked, not used. A
    MobileNetV3-style hard-swish written as TFOpLambda ops becomes one layer (bit-identical outputs;
    harness/models/hard_swish.py), which tfmot can annotate."""
    model = rewrite_hard_activations(as_logits(read(path, custom, trust)))
    found = check(model, path)
    if input_shape is not None and (tuple(input_shape), num_classes) != found:
        raise BadModel(f"--qat-model-file {path}: model is {found}, the spec expects {(tuple(input_shape), num_classes)}")
    return model


def build_trusted(path, custom: str, input_shape=None, num_classes=None) -> "keras.Model":
    """The builder of a model file loaded with --qat-trust-model-file (its own target, so the spec says so)."""
    return build(path, custom, input_shape, num_classes, trust=True)
