"""A cheaper training gradient for tfmot's per-channel weight fake-quant (same numbers, less time).

Profile of one whole-model QAT ResNet-50 train step (32x32, batch 32, 2 threads, TF profiler):
``FakeQuantWithMinMaxVarsPerChannelGradient`` took 46% of all op time, more than every conv
forward and backward together. That kernel computes three gradients: wrt the weights, and wrt the
per-channel min and max. tfmot's ``LastValueQuantizer`` (the weight quantizer of every Conv2D, and
of per-channel Dense) assigns min/max from the kernel each step; they are non-trainable, so the last
two gradients are thrown away. Here the weight gradient alone is computed, exactly as the kernel
does it: upstream gradient where nudged_min <= w <= nudged_max, else 0 (tests/test_fakequant.py
checks it equals TensorFlow's gradient element for element). The forward op is TensorFlow's own, and
inference graphs (what the TFLite converter sees) are untouched: only ``is_training=True`` calls
change. ``QATBENCH_FAST_FAKEQUANT_GRAD=0`` turns it off; records carry the setting in ``env.numerics``.

With it on, the forward is TensorFlow 2.21's kernel arithmetic written as elementwise ops and compiled
by XLA on its own, with the gradient mask from the same fused function (``QATBENCH_XLA_FAKEQUANT=0``:
TensorFlow's op as forward, mask recomputed in the backward). The stock kernel loops over channels
with strided access. Whole-model ResNet-50 W8 train step on a 2-core Xeon: 0.68x the time of the
non-XLA path, measured side by side; small models unchanged within noise (docs/performance.md).
Outputs and gradients are bit-identical to TensorFlow's op, rounding ties included (tests).

Per-tensor fake-quants (activations, per-tensor Dense weights) keep TensorFlow's op. The same
straight-through gradient for them was tried on the Intel Xeon (its FakeQuantWithMinMaxVarsGradient was
12% of a whole-model resnet20 W8 step's op time) and timed side by side: no gain (resnet20 1.43 vs 1.38
with TensorFlow's op, mlp 1.47 vs 1.32, in the same rounds), so it was not kept (docs/performance.md).

It replaces private tfmot names, so it is installed only on a tfmot version it was tested against
and only if those names have the signatures it was written for; otherwise one warning says so and
tfmot's stock gradient is used (slower, same numbers).
"""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
import os
import warnings

from harness.backend import quant_ops, tf
from harness.case import weight_ranges

# The versions this patch was written and tested against: requirements.txt pins
# tensorflow-model-optimization==0.8.1 (tests/test_fakequant.py keeps the two in step). Deliberately
# not read from requirements.txt: bumping the pin must not switch on an untested patch.
TESTED_TFMOT_VERSIONS = ("0.8.1",)
# quant_ops' private names this module replaces or calls, and their signatures in those versions
EXPECTED_SIGNATURES = {
    "LastValueQuantize": "(inputs, min_var, max_var, per_channel=False, name_prefix='LastValueQuant', "
                         "is_training=True, num_bits=8, narrow_range=False, symmetric=False)",
    "_FakeQuantWithMinMaxVars": "(inputs, min_var, max_var, per_channel, num_bits, narrow_range)",
}

_ORIGINAL_LAST_VALUE = getattr(quant_ops, "LastValueQuantize", None)
_ORIGINAL_FAKE_QUANT = getattr(quant_ops, "_FakeQuantWithMinMaxVars", None)


def nudged_range(min_value, max_value, num_bits: int, narrow_range: bool) -> tuple:
    """TensorFlow's Nudge(): the range the fake-quant op really clamps to (zero exactly representable)."""
    quant_min = 1.0 if narrow_range else 0.0
    quant_max = float(2 ** num_bits - 1)
    # DivNoNan, not "/": grappler rewrites division by a constant into a multiplication by its
    # reciprocal, which moves nudged_max by an ulp and masks the largest weight of a channel.
    scale = tf.math.divide_no_nan(max_value - min_value, tf.fill(tf.shape(max_value), quant_max - quant_min))
    zero_point = tf.clip_by_value(tf.floor(quant_min - min_value / scale + 0.5), quant_min, quant_max)
    return (quant_min - zero_point) * scale, (quant_max - zero_point) * scale


def per_channel_fake_quant(inputs, min_value, max_value, num_bits: int, narrow_range: bool):
    """TensorFlow's per-channel fake-quant forward, with a straight-through gradient wrt ``inputs`` only."""

    @tf.custom_gradient
    def fake_quant(x, low, high):
        y = tf.quantization.fake_quant_with_min_max_vars_per_channel(
            x, low, high, num_bits=num_bits, narrow_range=narrow_range)

        def grad(dy):
            nudged_min, nudged_max = nudged_range(low, high, num_bits, narrow_range)
            inside = tf.logical_and(x >= nudged_min, x <= nudged_max)
            return tf.where(inside, dy, tf.zeros_like(dy)), None, None

        return y, grad

    return fake_quant(inputs, tf.convert_to_tensor(min_value), tf.convert_to_tensor(max_value))


def _elementwise_fake_quant(x, low, high, span, num_bits: int, narrow_range: bool):
    """TensorFlow 2.21's FakeQuantWithMinMaxVarsPerChannel CPU kernel (fake_quant_ops_functor.h), step
    for step as broadcast elementwise ops, plus its gradient mask. ``span`` (quant_max - quant_min) is
    an argument, not a constant: grappler and XLA rewrite x / constant into x * (1 / constant), which
    moves the scale by an ulp. Returns (outputs, where the gradient passes)."""
    quant_min = 1.0 if narrow_range else 0.0
    quant_max = float(2 ** num_bits - 1)
    scale = (high - low) / span
    inv_scale = span / (high - low)  # the kernel's own inverse, not 1 / scale
    zero_point_from_min = quant_min - low / scale
    below = tf.floor(zero_point_from_min)  # std::round (half away from zero) of a value >= quant_min >= 0
    rounded = tf.where(zero_point_from_min - below >= 0.5, below + 1.0, below)
    zero_point = tf.where(zero_point_from_min < quant_min, quant_min,
                          tf.where(zero_point_from_min > quant_max, quant_max, rounded))
    nudged_min = (quant_min - zero_point) * scale
    nudged_max = (quant_max - zero_point) * scale
    # max(., 0) changes no value (both products are >= 0); it keeps XLA from fusing the product and the
    # following addition into one FMA, which rounds once instead of twice and moves rounding ties
    quant_zero = tf.floor(tf.maximum(-nudged_min * inv_scale, 0.0) + 0.5)
    shifted = tf.maximum((tf.clip_by_value(x, nudged_min, nudged_max) - nudged_min) * inv_scale, 0.0)
    both_zero = tf.logical_and(tf.equal(low, 0.0), tf.equal(high, 0.0))  # the kernel outputs 0, passes dy
    outputs = tf.where(both_zero, 0.0, tf.floor(shifted - quant_zero + 0.5) * scale)
    inside = tf.logical_or(both_zero, tf.logical_and(x >= nudged_min, x <= nudged_max))
    return outputs, inside


@functools.lru_cache(maxsize=None)
def _compiled_fake_quant(num_bits: int, narrow_range: bool):
    """The elementwise fake-quant compiled by XLA on its own (not the model, which would lose oneDNN's
    convolutions): one fused loop instead of the stock kernel's strided per-channel loop."""
    return tf.function(functools.partial(_elementwise_fake_quant, num_bits=num_bits, narrow_range=narrow_range),
                       jit_compile=True, reduce_retracing=True)


def per_channel_fake_quant_xla(inputs, min_value, max_value, num_bits: int, narrow_range: bool):
    """``per_channel_fake_quant`` with the forward and the gradient mask from one XLA-compiled function."""
    span = tf.constant(float(2 ** num_bits - 1) - (1.0 if narrow_range else 0.0))

    @tf.custom_gradient
    def fake_quant(x, low, high):
        y, inside = _compiled_fake_quant(num_bits, narrow_range)(x, low, high, span)

        def grad(dy):
            return tf.where(inside, dy, tf.zeros_like(dy)), None, None

        return y, grad

    return fake_quant(inputs, tf.convert_to_tensor(min_value), tf.convert_to_tensor(max_value))


# Kernels smaller than this keep TensorFlow's forward op: an XLA launch has a fixed cost that the fused
# loop only pays back on large kernels (resnet20's 2k-37k-element kernels vs ResNet-50's up to 2.4M).
XLA_MIN_ELEMENTS = 1 << 17


def uses_xla(inputs) -> bool:
    """Whether the per-channel forward of ``inputs`` (a kernel of static shape) goes through XLA."""
    elements = inputs.shape.num_elements()
    return bool(_XLA["on"]) and (elements is None or elements >= _XLA["min_elements"])


def _fake_quant_for_training(inputs, min_var, max_var, per_channel, num_bits, narrow_range):
    if not per_channel:
        return _ORIGINAL_FAKE_QUANT(inputs, min_var, max_var, per_channel, num_bits, narrow_range)
    quantize = per_channel_fake_quant_xla if uses_xla(inputs) else per_channel_fake_quant
    return quantize(inputs, min_var, max_var, num_bits, narrow_range)


def _trainable(variable) -> bool:
    return bool(getattr(variable, "trainable", True))


def _last_value_quantize(inputs, min_var, max_var, per_channel=False, name_prefix="LastValueQuant",
                         is_training=True, num_bits=8, narrow_range=False, symmetric=False):
    kwargs = dict(per_channel=per_channel, name_prefix=name_prefix, is_training=is_training,
                  num_bits=num_bits, narrow_range=narrow_range, symmetric=symmetric)
    if is_training is True and weight_ranges.skippable(inputs, min_var, max_var, per_channel, symmetric, narrow_range):
        # tfmot's range and fake-quant without the per-step assign; train.fit_steps assigns it at the end
        with tf.name_scope(name_prefix):
            range_min, range_max = weight_ranges.last_value_range(inputs, per_channel, num_bits, narrow_range, symmetric)
            weight_ranges.mark(min_var)
            return _fake_quant_for_training(inputs, range_min, range_max, per_channel, num_bits, narrow_range)
    # the range gradients this route drops matter only if the range variables train (tfmot's never do;
    # a user's quantizer might), so a trainable range keeps TensorFlow's op and all its gradients
    if is_training is not True or not per_channel or _trainable(min_var) or _trainable(max_var):
        return _ORIGINAL_LAST_VALUE(inputs, min_var, max_var, **kwargs)
    # tfmot's range bookkeeping, with the fake-quant call swapped for the duration of this trace
    quant_ops._FakeQuantWithMinMaxVars = _fake_quant_for_training
    try:
        return _ORIGINAL_LAST_VALUE(inputs, min_var, max_var, **kwargs)
    finally:
        quant_ops._FakeQuantWithMinMaxVars = _ORIGINAL_FAKE_QUANT


def enabled() -> bool:
    return os.environ.get("QATBENCH_FAST_FAKEQUANT_GRAD", "1") != "0"


def xla_enabled() -> bool:
    return os.environ.get("QATBENCH_XLA_FAKEQUANT", "1") != "0"


# read at trace time: a traced train step keeps the variant it was traced with
_XLA = {"on": xla_enabled(), "min_elements": XLA_MIN_ELEMENTS}


def installed_tfmot_version() -> str:
    try:
        return importlib.metadata.version("tensorflow-model-optimization")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _signature(function) -> str:
    try:
        return str(inspect.signature(function))
    except (TypeError, ValueError):
        return "(unreadable signature)"


def unsupported_reason() -> str | None:
    """Why the patch must not be installed in this environment, or None if it may."""
    version = installed_tfmot_version()
    if version not in TESTED_TFMOT_VERSIONS:
        return (f"tensorflow-model-optimization {version} is not a tested version "
                f"({', '.join(TESTED_TFMOT_VERSIONS)})")
    originals = {"LastValueQuantize": _ORIGINAL_LAST_VALUE, "_FakeQuantWithMinMaxVars": _ORIGINAL_FAKE_QUANT}
    for name, function in originals.items():
        if function is None:
            return f"tensorflow-model-optimization {version} has no quant_ops.{name}"
        if _signature(function) != EXPECTED_SIGNATURES[name]:
            return (f"tensorflow-model-optimization {version}: quant_ops.{name}{_signature(function)} "
                    f"is not the expected {name}{EXPECTED_SIGNATURES[name]}")
    code = getattr(_ORIGINAL_LAST_VALUE, "__code__", None)
    if code is None or "_FakeQuantWithMinMaxVars" not in code.co_names:  # what the patch swaps per call
        return f"tensorflow-model-optimization {version}: LastValueQuantize does not call _FakeQuantWithMinMaxVars"
    return None


def install(on: bool = True, xla: bool | None = None, xla_min_elements: int = XLA_MIN_ELEMENTS) -> bool:
    """Patch tfmot (on) or put its own function back (off); returns whether the patch is in place.
    ``xla``: the XLA-compiled forward for the train steps traced from now on (None: the environment),
    for kernels of at least ``xla_min_elements`` elements.
    Where it may not be installed (see unsupported_reason), tfmot is left alone and a warning says so."""
    _XLA["on"] = xla_enabled() if xla is None else xla
    _XLA["min_elements"] = int(xla_min_elements)
    reason = unsupported_reason() if on else None
    if reason is not None:
        warnings.warn(f"qatbench: per-channel fake-quant gradient patch not installed: {reason}; using "
                      "tfmot's stock gradient (slower, same numbers)", RuntimeWarning, stacklevel=2)
        on = False
    if on or active():
        quant_ops.LastValueQuantize = _last_value_quantize if on else _ORIGINAL_LAST_VALUE
    return on


def active() -> bool:
    """Whether training uses the cheaper gradient right now."""
    return getattr(quant_ops, "LastValueQuantize", None) is _last_value_quantize


install(enabled())
