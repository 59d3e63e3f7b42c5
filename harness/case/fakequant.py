"""Cheaper training for tfmot's fake-quants (same numbers, less time): the per-channel weight
fake-quant's gradient and XLA forward here, the C++ kernels of native_kernels.py where they are built.

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

Where qatbench's C++ kernels load (``native_kernels.py``; ``QATBENCH_NATIVE_FAKEQUANT=0`` turns them
off) and the step is not XLA-compiled, they do the training work of both quantizer kinds, computing what
TensorFlow's ops compute (tests/test_native_kernels.py):
- per-channel weights (rank 2 and 4): the per-channel min/max in one pass along contiguous rows
  (``weight_ranges.last_value_range``), the forward, and the input gradient;
- activations (tfmot's per-tensor ``MovingAvgQuantize``): the batch min and max in one pass instead of
  two reductions, and the input gradient alone instead of TensorFlow's gradient op, which also reduces
  the min/max gradients that tfmot's non-trainable ranges throw away. The forward op and the EMA update
  stay TensorFlow's (a C++ forward was no faster there).
Otherwise the per-channel forward is TensorFlow 2.21's kernel arithmetic written as elementwise ops and
compiled by XLA on its own for large kernels, with the gradient mask from the same fused function
(``QATBENCH_XLA_FAKEQUANT=0``: TensorFlow's op as forward, mask recomputed in the backward); activations
keep TensorFlow's ops. The inference graph (what the converter sees) is TensorFlow's in every case.
Measured side by side in docs/performance.md. Per-tensor weight fake-quants keep TensorFlow's op.

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
from harness.case import native_kernels, weight_ranges

# The versions this patch was written and tested against: requirements.txt pins
# tensorflow-model-optimization==0.8.1 (tests/test_fakequant.py keeps the two in step). Deliberately
# not read from requirements.txt: bumping the pin must not switch on an untested patch.
TESTED_TFMOT_VERSIONS = ("0.8.1",)
# quant_ops' private names this module replaces or calls, and their signatures in those versions
EXPECTED_SIGNATURES = {
    "LastValueQuantize": "(inputs, min_var, max_var, per_channel=False, name_prefix='LastValueQuant', "
                         "is_training=True, num_bits=8, narrow_range=False, symmetric=False)",
    "_FakeQuantWithMinMaxVars": "(inputs, min_var, max_var, per_channel, num_bits, narrow_range)",
    "MovingAvgQuantize": "(inputs, min_var, max_var, per_channel=False, ema_decay=0.999, "
                         "name_prefix='MovingAvgQuantize', is_training=True, num_bits=8, narrow_range=False, "
                         "symmetric=False)",
}

_ORIGINAL_LAST_VALUE = getattr(quant_ops, "LastValueQuantize", None)
_ORIGINAL_FAKE_QUANT = getattr(quant_ops, "_FakeQuantWithMinMaxVars", None)
_ORIGINAL_MOVING_AVG = getattr(quant_ops, "MovingAvgQuantize", None)


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
            # a channel with min == max == 0 passes its gradient, as TensorFlow's kernel does
            both_zero = tf.logical_and(tf.equal(low, 0.0), tf.equal(high, 0.0))
            inside = tf.logical_or(both_zero, tf.logical_and(x >= nudged_min, x <= nudged_max))
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


def native_per_channel_fake_quant(inputs, min_value, max_value, num_bits: int, narrow_range: bool):
    """``per_channel_fake_quant`` with the forward and the input gradient from the C++ kernels."""
    kernels = native_kernels.ops()

    @tf.custom_gradient
    def fake_quant(x, low, high):
        y = kernels.qatbench_channel_fake_quant(x, low, high, num_bits=num_bits, narrow_range=narrow_range)

        def grad(dy):
            return kernels.qatbench_channel_fake_quant_input_gradient(dy, x, low, high, num_bits=num_bits,
                                                                      narrow_range=narrow_range), None, None

        return y, grad

    return fake_quant(inputs, tf.convert_to_tensor(min_value), tf.convert_to_tensor(max_value))


def _fake_quant_for_training(inputs, min_var, max_var, per_channel, num_bits, narrow_range):
    if not per_channel:
        return _ORIGINAL_FAKE_QUANT(inputs, min_var, max_var, per_channel, num_bits, narrow_range)
    if len(inputs.shape) in (2, 4) and native_kernels.usable():
        return native_per_channel_fake_quant(inputs, min_var, max_var, num_bits, narrow_range)
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


def native_fake_quant(inputs, min_value, max_value, num_bits: int, narrow_range: bool):
    """TensorFlow's per-tensor fake-quant forward; the input gradient from the C++ kernel, none for the range."""
    kernels = native_kernels.ops()

    @tf.custom_gradient
    def fake_quant(x, low, high):
        y = tf.quantization.fake_quant_with_min_max_vars(x, low, high, num_bits=num_bits, narrow_range=narrow_range)

        def grad(dy):
            return kernels.qatbench_fake_quant_input_gradient(dy, x, low, high, num_bits=num_bits,
                                                              narrow_range=narrow_range), None, None

        return y, grad

    return fake_quant(inputs, tf.convert_to_tensor(min_value), tf.convert_to_tensor(max_value))


def _native_activation_path(inputs, min_var, max_var, per_channel, is_training) -> bool:
    return (is_training is True and not per_channel and inputs.dtype == tf.float32
            and not _trainable(min_var) and not _trainable(max_var)
            and _NATIVE_ACTIVATIONS["on"] and native_kernels.usable())


def _moving_avg_quantize(inputs, min_var, max_var, per_channel=False, ema_decay=0.999,
                         name_prefix="MovingAvgQuantize", is_training=True, num_bits=8, narrow_range=False,
                         symmetric=False):
    if not _native_activation_path(inputs, min_var, max_var, per_channel, is_training):
        return _ORIGINAL_MOVING_AVG(inputs, min_var, max_var, per_channel=per_channel, ema_decay=ema_decay,
                                    name_prefix=name_prefix, is_training=is_training, num_bits=num_bits,
                                    narrow_range=narrow_range, symmetric=symmetric)
    # tfmot's MovingAvgQuantize, step for step, with the two reductions and the gradient from C++
    with tf.name_scope(name_prefix):
        batch_min, batch_max = native_kernels.ops().qatbench_min_max(inputs, name="BatchMinMax")
        if symmetric:
            min_max_ratio = -1 if narrow_range else -((1 << num_bits) - 2) / (1 << num_bits)
            range_min = tf.minimum(batch_min, batch_max / min_max_ratio)
            range_max = tf.maximum(batch_max, batch_min * min_max_ratio)
        else:
            range_min = tf.minimum(batch_min, 0.0)
            range_max = tf.maximum(batch_max, 0.0)
        ema = tf.__internal__.train.assign_moving_average  # the function tfmot 0.8.1 calls
        assign_min = ema(min_var, range_min, ema_decay, zero_debias=False, name="AssignMinEma")
        assign_max = ema(max_var, range_max, ema_decay, zero_debias=False, name="AssignMaxEma")
        return native_fake_quant(inputs, assign_min, assign_max, num_bits, narrow_range)


def enabled() -> bool:
    return os.environ.get("QATBENCH_FAST_FAKEQUANT_GRAD", "1") != "0"


def xla_enabled() -> bool:
    return os.environ.get("QATBENCH_XLA_FAKEQUANT", "1") != "0"


# read at trace time: a traced train step keeps the variant it was traced with
_XLA = {"on": xla_enabled(), "min_elements": XLA_MIN_ELEMENTS}
_NATIVE_ACTIVATIONS = {"on": True}


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
    originals = {"LastValueQuantize": _ORIGINAL_LAST_VALUE, "_FakeQuantWithMinMaxVars": _ORIGINAL_FAKE_QUANT,
                 "MovingAvgQuantize": _ORIGINAL_MOVING_AVG}
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


def install(on: bool = True, xla: bool | None = None, xla_min_elements: int = XLA_MIN_ELEMENTS,
            native: bool | None = None, native_activations: bool = True) -> bool:
    """Patch tfmot (on) or put its own functions back (off); returns whether the patch is in place.
    ``xla``: the XLA-compiled forward for the train steps traced from now on (None: the environment),
    for kernels of at least ``xla_min_elements`` elements. ``native``: the C++ kernels where they load
    (None: the environment); ``native_activations=False`` keeps TensorFlow's ops for the activations.
    Where it may not be installed (see unsupported_reason), tfmot is left alone and a warning says so."""
    _XLA["on"] = xla_enabled() if xla is None else xla
    _XLA["min_elements"] = int(xla_min_elements)
    native_kernels.set_active(native_kernels.enabled() if native is None else native)
    _NATIVE_ACTIVATIONS["on"] = bool(native_activations)
    reason = unsupported_reason() if on else None
    if reason is not None:
        warnings.warn(f"qatbench: per-channel fake-quant gradient patch not installed: {reason}; using "
                      "tfmot's stock gradient (slower, same numbers)", RuntimeWarning, stacklevel=2)
        on = False
    if on or active():
        quant_ops.LastValueQuantize = _last_value_quantize if on else _ORIGINAL_LAST_VALUE
        quant_ops.MovingAvgQuantize = _moving_avg_quantize if on else _ORIGINAL_MOVING_AVG
    return on


def active() -> bool:
    """Whether training uses the cheaper gradient right now."""
    return getattr(quant_ops, "LastValueQuantize", None) is _last_value_quantize


install(enabled())
