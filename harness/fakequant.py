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
"""

from __future__ import annotations

import os

from .backend import quant_ops, tf

_ORIGINAL_LAST_VALUE = quant_ops.LastValueQuantize
_ORIGINAL_FAKE_QUANT = quant_ops._FakeQuantWithMinMaxVars


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


def _fake_quant_for_training(inputs, min_var, max_var, per_channel, num_bits, narrow_range):
    if not per_channel:
        return _ORIGINAL_FAKE_QUANT(inputs, min_var, max_var, per_channel, num_bits, narrow_range)
    return per_channel_fake_quant(inputs, min_var, max_var, num_bits, narrow_range)


def _last_value_quantize(inputs, min_var, max_var, per_channel=False, name_prefix="LastValueQuant",
                         is_training=True, num_bits=8, narrow_range=False, symmetric=False):
    kwargs = dict(per_channel=per_channel, name_prefix=name_prefix, is_training=is_training,
                  num_bits=num_bits, narrow_range=narrow_range, symmetric=symmetric)
    if is_training is not True or not per_channel:
        return _ORIGINAL_LAST_VALUE(inputs, min_var, max_var, **kwargs)
    # tfmot's range bookkeeping, with the fake-quant call swapped for the duration of this trace
    quant_ops._FakeQuantWithMinMaxVars = _fake_quant_for_training
    try:
        return _ORIGINAL_LAST_VALUE(inputs, min_var, max_var, **kwargs)
    finally:
        quant_ops._FakeQuantWithMinMaxVars = _ORIGINAL_FAKE_QUANT


def enabled() -> bool:
    return os.environ.get("QATBENCH_FAST_FAKEQUANT_GRAD", "1") != "0"


def install(on: bool = True) -> None:
    quant_ops.LastValueQuantize = _last_value_quantize if on else _ORIGINAL_LAST_VALUE


install(enabled())
