"""Weight ranges kept out of the train step and assigned once when training ends (same values, bit for bit).

tfmot's ``LastValueQuantize`` (the weight quantizer of every Dense and Conv kernel) computes the kernel's
range in each training step, assigns it to two range variables and fake-quantizes with the value it
assigned. Only inference reads those variables (evaluation, the TFLite converter). In mlp's
dispatch-bound step the per-step writes were most of what XLA could not fuse: whole-model W8 QAT with
the step XLA-compiled went from about 1.25x to 1.16x float without them (docs/performance.md, session 10).

So a training step (``fakequant._last_value_quantize``) fake-quantizes with the range it computes, skips
the assign and marks the variables. ``RangeSync`` (a callback of ``train.fit_steps``) computes the same
range from the weights the last step starts from, and assigns it when fit ends. The variables then hold
exactly what tfmot's last assign would have written (tests/test_weight_ranges.py checks variables, weights
and the .tflite bit for bit).

The assign is skipped only where the range arithmetic is exact in any evaluation order and on any
device: asymmetric ranges and symmetric narrow ranges (min, max, negation; every zoo kernel). Elsewhere
(a symmetric wide range divides by 127/128), for trainable ranges, for a quantizer input that is not a
variable, and under a tf.distribute strategy, the step assigns as tfmot does.
"""

from __future__ import annotations

import contextlib
import weakref

from harness.backend import keras, quantize, tf
from harness.case import native_kernels

MARK = "_qatbench_range_skipped"  # set on a min variable whose assign a traced train step skipped
_STATE = {"on": True, "depth": 0}
_FIT_STEPS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> its skipping train function


@contextlib.contextmanager
def skipping():
    """Train steps traced inside may skip the assigns: train.fit_steps, whose RangeSync makes them up, and
    perf's timing. A step traced anywhere else (a user's train_on_batch or fit) assigns as tfmot does."""
    _STATE["depth"] += 1
    try:
        yield
    finally:
        _STATE["depth"] -= 1


def retire_fit_step(model) -> None:
    """After fit: keep the skipping train function for side-by-side timing (fit_step) but take it off the
    model, so a later train_on_batch or fit traces a step that assigns (no range left stale silently)."""
    if model.train_function is not None and skipped_range_variables(model):
        _FIT_STEPS[model] = model.train_function
        model.train_function = None


def fit_step(model):
    """The train function fit_steps ran for ``model`` if it skipped range assigns, else None."""
    return _FIT_STEPS.get(model)


def set_enabled(on: bool) -> None:
    """Skip the per-step assigns in train steps traced from now on (on), or assign as tfmot does."""
    _STATE["on"] = bool(on)


def _non_trainable(variable) -> bool:
    return not bool(getattr(variable, "trainable", True))


def exact(rank: int, per_channel: bool, symmetric: bool, narrow_range: bool) -> bool:
    """Whether tfmot's range arithmetic for these settings is min/max/negation only (the same bits
    wherever it runs) on a shape tfmot handles (per-channel: rank 1, 2 or 4)."""
    shape_ok = not per_channel or rank in (1, 2, 4)
    return shape_ok and (not symmetric or narrow_range)


def skippable(inputs, min_var, max_var, per_channel: bool, symmetric: bool, narrow_range: bool) -> bool:
    """Whether a training step may leave this quantizer's range variables unassigned."""
    return (_STATE["on"] and _STATE["depth"] > 0 and isinstance(inputs, tf.Variable) and _non_trainable(min_var)
            and _non_trainable(max_var) and not tf.distribute.has_strategy()
            and exact(len(inputs.shape), per_channel, symmetric, narrow_range))


def last_value_range(inputs, per_channel: bool, num_bits: int, narrow_range: bool, symmetric: bool) -> tuple:
    """(range_min, range_max) exactly as tfmot 0.8.1's LastValueQuantize computes them, without gradient
    (tfmot's fake-quant reads them back from non-trainable variables, which stops it)."""
    rank = len(inputs.shape)
    if per_channel and rank < 2:
        batch_min = batch_max = tf.convert_to_tensor(inputs)
    elif per_channel and rank in (2, 4) and native_kernels.usable():  # the same values in one pass
        batch_min, batch_max = native_kernels.ops().qatbench_channel_min_max(inputs, name="BatchMinMax")
    else:
        axes = ([0] if rank == 2 else [0, 1, 2]) if per_channel else None
        batch_min = tf.math.reduce_min(inputs, axis=axes, name="BatchMin")
        batch_max = tf.math.reduce_max(inputs, axis=axes, name="BatchMax")
    if symmetric:
        ratio = -1 if narrow_range else -((1 << num_bits) - 2) / (1 << num_bits)
        range_min = tf.math.minimum(batch_min, batch_max / ratio)
        range_max = tf.math.maximum(batch_max, batch_min * ratio)
    else:
        range_min = tf.math.minimum(batch_min, 0.0)
        range_max = tf.math.maximum(batch_max, 0.0)
    return tf.stop_gradient(range_min), tf.stop_gradient(range_max)


def mark(min_var) -> None:
    setattr(min_var, MARK, True)


def _weight_quantizers(model) -> list:
    """(kernel, quantizer, {min_var, max_var}) of every tfmot LastValueQuantizer in ``model``."""
    found = []
    for module in [model, *model.submodules]:  # submodules lists each module once
        for weight, quantizer, variables in getattr(module, "_weight_vars", ()):
            # a subclass with its own __call__ may not call LastValueQuantize: only tfmot's own call
            if (isinstance(quantizer, quantize.quantizers.LastValueQuantizer)
                    and type(quantizer).__call__ is quantize.quantizers.LastValueQuantizer.__call__
                    and {"min_var", "max_var"} <= set(variables)):
                found.append((weight, quantizer, variables))
    return found


def pending_ranges(model) -> list:
    """[(min_var, max_var, range_min, range_max)] of every weight quantizer whose assign a train step may
    skip, computed from the weights as they are now (call it before the last step runs)."""
    pending = []
    for weight, q, variables in _weight_quantizers(model):
        low, high = variables["min_var"], variables["max_var"]
        if skippable(weight, low, high, q.per_axis, q.symmetric, q.narrow_range) or getattr(low, MARK, False):
            pending.append((low, high, *last_value_range(weight, q.per_axis, q.num_bits, q.narrow_range, q.symmetric)))
    return pending


def skipped_range_variables(model) -> list:
    return [v for v in model.non_trainable_weights if getattr(v, MARK, False)]


class RangeSync(keras.callbacks.Callback):
    """Assigns, when fit ends, the weight ranges the train steps skipped: computed just before the last
    step from the weights it starts from, which is what that step's own assign would have written."""

    def __init__(self, steps: int):
        super().__init__()
        self.steps, self.pending = steps, None

    def on_train_batch_begin(self, batch, logs=None):
        if batch == self.steps - 1:
            self.pending = pending_ranges(self.model)

    def on_train_end(self, logs=None):
        skipped = skipped_range_variables(self.model)
        if not skipped or self.pending is None:
            return  # nothing skipped; or fit stopped early (fit_steps raises for a diverged loss)
        covered = {id(low) for low, *_ in self.pending}
        missing = [v.name for v in skipped if id(v) not in covered]
        if missing:
            raise RuntimeError(f"qatbench: train steps skipped the range assign of {missing[0]}, which no "
                               "RangeSync computation covers; its inference range would be stale")
        for low, high, range_min, range_max in self.pending:
            if getattr(low, MARK, False):
                low.assign(range_min)
                high.assign(range_max)

    def unsynced(self) -> bool:
        """Whether train steps skipped range assigns that were not made up (fit stopped before its last step)."""
        return bool(skipped_range_variables(self.model)) and self.pending is None
