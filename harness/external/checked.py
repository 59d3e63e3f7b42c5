"""Turn --qat-model-file / --qat-data into a registered ModelSpec, checking everything a case would
trip over later (inputs, outputs, units, weights no unit accounts for, data shapes and labels), so
bad input is one line at start-up, before any case runs."""

from __future__ import annotations

import numpy as np

from harness.case import quantize
from harness.external import data_files, model_file
from harness.models.quantizable import UnsupportedQuantization
from harness.external import tiers
from harness.design.registry import ModelSpec

INPUT_ERRORS = (model_file.BadModel, data_files.BadData, UnsupportedQuantization)


def checked_spec(model_path, data_path, custom: str = "", max_drop_pp=None, keep_float: bool = False,
                 trust: bool = False) -> ModelSpec:
    """The checked spec of a user's model file and data; raises one of INPUT_ERRORS (one line).
    ``trust`` (--qat-trust-model-file): the file may run code (a Lambda layer)."""
    model = model_file.build(model_path, custom, trust=trust)
    input_shape, num_classes = model_file.check(model, model_path)
    units = _units(model, model_path)
    data = data_files.load(data_path, input_shape, num_classes)
    majority = float(np.bincount(data.y_test, minlength=num_classes).max() / len(data.y_test))
    limits = tiers.thresholds(max_drop_pp, num_classes, majority, len(data.y_test))
    return tiers.spec_from_counts(model_path, data_path, custom, input_shape, num_classes, len(units),
                                tuple(sorted({u.kind for u in units})), limits, keep_float, trust=trust)


def _units(model, path) -> tuple:
    unaccounted = quantize.unaccounted_weight_layers(model)
    if unaccounted:
        name, cls = unaccounted[0]
        raise UnsupportedQuantization(
            f"--qat-model-file {path}: layer {name!r} ({cls}) holds weights that no unit accounts for, so the "
            "size and the audit could not be exact: make it a QatBlock (harness.models.quantizable) that reports "
            "its kernels, loaded with --qat-custom-objects")
    for layer in model.layers:
        if type(layer).__name__ == "Dense" and len(layer.input_shape) > 2:
            raise UnsupportedQuantization(
                f"--qat-model-file {path}: layer {layer.name!r} (Dense) reads a rank-{len(layer.input_shape)} "
                f"tensor {tuple(layer.input_shape)}: the converter lowers it to a reshaped matmul whose kernel stays "
                "FLOAT32 when quantized; Flatten or Reshape to (batch, features) first, or make it an EinsumDense "
                "QatBlock (harness/models/transformer.py)")
    try:
        return quantize.units_of(model)
    except ValueError as exc:  # group_units: "model has no quantizable weight layer"
        raise model_file.BadModel(f"--qat-model-file {path}: {exc} (Dense, Conv2D, DepthwiseConv2D, "
                                  "SeparableConv2D or a QatBlock)") from None
