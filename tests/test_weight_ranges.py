"""Train steps that skip tfmot's per-step weight-range assigns (harness/case/weight_ranges.py) end with the
very same variables, weights and .tflite as tfmot's own steps, with and without XLA, and never leave a
stale range behind silently."""

import contextlib

import numpy as np
import pytest

from harness.case import audit, export, quantize, train, weight_ranges
from harness.models import zoo
from harness.backend import keras
from harness.design.config import QuantConfig
from harness.models.data import Dataset

pytestmark = pytest.mark.tf


@pytest.mark.parametrize("rank,per_channel,symmetric,narrow,expected", [
    (2, False, True, True, True), (4, True, True, True, True), (2, False, False, False, True),
    (2, False, True, False, False),  # a symmetric wide range divides by 127/128: rounding may differ
    (3, True, True, True, False),  # tfmot has no per-channel axes for rank 3
])
def test_only_exact_range_arithmetic_is_skipped(rank, per_channel, symmetric, narrow, expected):
    assert weight_ranges.exact(rank, per_channel, symmetric, narrow) is expected


def _data(shape, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((64, *shape), dtype=np.float32)
    y = rng.integers(0, 10, 64)
    return Dataset("random", x, y, x[:16], y[:16], 10, "test")


BUILDERS = {"mlp": (zoo.build_mlp, (28, 28)), "cnn": (zoo.build_cnn, (28, 28, 1))}


def _trained(model_name: str, bits: int, skip: bool, xla: bool = False, steps: int = 4, callbacks=()):
    build, shape = BUILDERS[model_name]
    keras.backend.clear_session()  # names restart, so two conversions can be compared byte for byte
    weight_ranges.set_enabled(skip)
    try:
        data = _data(shape)
        train.set_seed(0)
        base = build()
        qat = quantize.annotate(base, quantize.units_of(base), QuantConfig(bits))
        train.compile_for_training(qat, 1e-3, xla)
        train.fit_steps(qat, data, steps=steps, batch_size=16, seed=0, callbacks=callbacks)
        return qat
    finally:
        weight_ranges.set_enabled(True)


def _assert_same_weights(ours, theirs):
    assert [w.name for w in ours.weights] == [w.name for w in theirs.weights]
    for a, b in zip(ours.weights, theirs.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)


@pytest.mark.parametrize("model_name,bits,xla,steps", [
    ("mlp", 8, False, 4), ("mlp", 8, True, 4), ("mlp", 4, True, 3), ("mlp", 8, False, 1), ("cnn", 8, False, 3),
])
def test_skipped_assigns_end_with_tfmots_variables_and_file(model_name, bits, xla, steps):
    skipped = _trained(model_name, bits, True, xla, steps)
    stock = _trained(model_name, bits, False, xla, steps)
    marked = weight_ranges.skipped_range_variables(skipped)
    assert marked and not weight_ranges.skipped_range_variables(stock)  # the route really ran
    _assert_same_weights(skipped, stock)
    files = [export.to_tflite(m, quantized=True, quant=QuantConfig(bits)) for m in (skipped, stock)]
    assert audit.inspect(files[0]).quantized_kernels > 0 and files[0] == files[1]


def test_the_skipped_ranges_differ_from_the_initial_ones_before_the_sync():
    """Without the sync the variables would still hold tfmot's initial [-6, 6]: the sync is what sets them."""
    sync_off = []

    class NoSync(keras.callbacks.Callback):  # runs after RangeSync's on_train_end: put the initial values back
        def on_train_end(self, logs=None):
            for variable in weight_ranges.skipped_range_variables(self.model):
                sync_off.append(float(np.max(np.abs(variable.numpy()))))

    model = _trained("mlp", 8, True, callbacks=[NoSync()])
    assert sync_off and all(value < 6.0 for value in sync_off)
    assert all(abs(float(np.max(v.numpy()))) < 6.0 for v in weight_ranges.skipped_range_variables(model))


def test_a_fit_stopped_before_its_last_step_is_an_error_not_a_stale_range():
    class StopEarly(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                self.model.stop_training = True

    with pytest.raises(RuntimeError, match="before the weight ranges"):
        _trained("mlp", 8, True, steps=5, callbacks=[StopEarly()])


def test_the_skipping_step_writes_fewer_variables():
    def writes(model):
        step = model.make_train_function()
        graph = step.get_concrete_function(iter(train._train_dataset(_data((28, 28)), 16, seed=0))).graph
        return sum(op.type == "AssignVariableOp" for op in graph.get_operations())

    counts = []
    for skip in (True, False):
        base = zoo.build_mlp()
        qat = quantize.annotate(base, quantize.units_of(base), QuantConfig(8))
        train.compile_for_training(qat, 1e-3)
        with weight_ranges.skipping() if skip else contextlib.nullcontext():
            counts.append(writes(qat))
    assert counts[0] + 2 * 4 <= counts[1]  # at least two assigns fewer per quantized Dense kernel


def test_an_xla_compiled_step_is_reproducible_from_the_seed():
    """mlp trains with its whole step XLA-compiled (TierConfig.train_step_xla). TensorFlow's legacy random ops
    (its Dropout) gave other weights on each run under XLA; tf.random.Generator (harness/backend.py) does not."""
    first, second = (_trained("mlp", 8, True, xla=True) for _ in range(2))
    _assert_same_weights(first, second)


def test_a_training_call_outside_fit_steps_assigns_its_ranges():
    """A user's train_on_batch (or fit) is not followed by a RangeSync: its step must assign as tfmot's does,
    also on a model fit_steps trained before (whose skipping train function it must not reuse)."""
    model = _trained("mlp", 8, True)
    x, y = _data((28, 28)).x_train[:16], _data((28, 28)).y_train[:16]
    expected = [(low, high, *weight_ranges.last_value_range(w, q.per_axis, q.num_bits, q.narrow_range, q.symmetric))
                for w, q, v in weight_ranges._weight_quantizers(model) for low, high in [(v["min_var"], v["max_var"])]]
    model.train_on_batch(x, y)
    assert expected
    for low, high, range_min, range_max in expected:
        np.testing.assert_array_equal(low.numpy(), range_min.numpy())
        np.testing.assert_array_equal(high.numpy(), range_max.numpy())
