"""Models from outside the package: a user's model file and data (--qat-model-file, --qat-data), the
pytest_qatbench_models hook a conftest implements, and the ``qatbench.models`` entry-point group.
Each becomes a ModelSpec in the registry, and then runs exactly like a zoo model."""

from __future__ import annotations

import dataclasses
from importlib import metadata

from harness import options
from harness.design import registry
from harness.design.config import RunOptions

ENTRY_POINT_GROUP = "qatbench.models"
HOOK_SOURCE = "pytest_qatbench_models hook"
BAD_INPUT = (ValueError, TypeError, ImportError)  # every one is the user's input: one line at start-up


def addoption(add) -> None:
    add("--qat-models", type=options.parse_model_names, default=(), metavar="A,B",
        help="comma-separated model names to run (the zoo's and registered ones; default: every model of the tier)")
    add("--qat-model-file", type=options.parse_model_file, default=None, metavar="PATH",
        help="your trained Keras 2 model (.keras, .h5 or a SavedModel folder) as the float baseline: the tier's "
             "grid runs on it (case ids <file stem>-last3-w8a8); needs --qat-data")
    add("--qat-data", type=options.parse_data_path, default=None, metavar="PATH",
        help="data for --qat-model-file: an .npz with x_train, y_train, x_test, y_test, or a folder of class "
             "sub-folders of images (optionally train/ and test/), resized to the model's input and scaled to [0, 1]")
    add("--qat-custom-objects", type=options.parse_object_ref, default=None, metavar="MODULE:NAME",
        help="custom layers of --qat-model-file: a class, a dict of classes, or a function returning one")
    add("--qat-max-drop", type=options.parse_max_drop, default=None, metavar="PP",
        help="the accuracy-drop target (pp, 0..100) of --qat-model-file at every bit width (default: the spec "
             "defaults, 1.5 at W8 and 3.0 at W4)")
    add("--qat-skip-unsupported", action="store_true", default=False,
        help="keep layers tfmot cannot quantize (e.g. LayerNormalization) float, with only their output quantized, "
             "and list them in the record (kept_float_layers), instead of a one-line error")
    add("--qat-trust-model-file", action="store_true", default=False,
        help="let --qat-model-file run code it holds (Lambda layers, unsafe deserialization); without it such a "
             "file is refused, whatever its format (.keras, .h5, SavedModel). Only for files you trust")


def run_options(get) -> dict:
    model_file, data = get("qat_model_file"), get("qat_data")
    return dict(models=get("qat_models") or (), model_file=str(model_file) if model_file else None,
                data=str(data) if data else None, custom_objects=get("qat_custom_objects"),
                max_drop=get("qat_max_drop"), skip_unsupported=bool(get("qat_skip_unsupported")),
                trust_model_file=bool(get("qat_trust_model_file")))


def _specs(result, source: str) -> list:
    if result is None:
        return []
    if isinstance(result, registry.ModelSpec):
        return [result]
    try:
        return list(result)
    except TypeError:
        raise TypeError(f"{source} returned {type(result).__name__}; return ModelSpecs (a list, or one)") from None


def _from_hooks(config) -> list:
    found = []
    hook = getattr(getattr(config, "hook", None), "pytest_qatbench_models", None)  # None: a stub config
    for result in (hook(config=config) if hook is not None else []):
        found += [(spec, HOOK_SOURCE) for spec in _specs(result, HOOK_SOURCE)]
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        source = f"entry point {entry.name} ({entry.value})"
        value = entry.load()
        result = value() if callable(value) and not isinstance(value, registry.ModelSpec) else value
        found += [(spec, source) for spec in _specs(result, source)]
    return found


def register_hooked(config) -> tuple:
    """Register the models of the pytest_qatbench_models hook and the entry points (light: no model is
    built); returns the names of every model registered from outside. Raises one of BAD_INPUT."""
    for spec, source in _from_hooks(config):
        registry.register(spec, source)
    return registry.outside_models()


def register_model_file(opts: RunOptions) -> RunOptions:
    """Register --qat-model-file (this loads the model: TensorFlow) and apply --qat-skip-unsupported;
    returns the options with --qat-models filled in for a model file. Raises one of BAD_INPUT."""
    if opts.model_file:
        from harness.external.checked import checked_spec  # loads the model: TensorFlow only here

        spec = checked_spec(opts.model_file, opts.data, opts.custom_objects or "", opts.max_drop,
                               opts.skip_unsupported, trust=opts.trust_model_file)
        registry.register(spec, f"--qat-model-file {opts.model_file}")
        if not opts.models:
            opts = dataclasses.replace(opts, models=(spec.name,))
    if opts.skip_unsupported:
        for name, spec in list(registry.REGISTRY.items()):
            registry.REGISTRY[name] = dataclasses.replace(spec, keep_unsupported_float=True)
    unknown = [name for name in opts.models if name not in registry.REGISTRY]
    if unknown:
        raise ValueError(f"--qat-models: unknown model {unknown[0]!r}; choose from: {', '.join(registry.REGISTRY)}")
    return opts
