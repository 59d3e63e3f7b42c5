"""The straight-through per-channel gradient equals TensorFlow's, and training is unchanged by it."""

import numpy as np
import pytest

from harness.case import fakequant, quantize, train
from harness.models import zoo
from harness.backend import tf
from harness.spec.config import QuantConfig
from harness.models.data import Dataset

pytestmark = pytest.mark.tf


@pytest.mark.parametrize("bits", [2, 4, 5, 8])
@pytest.mark.parametrize("narrow_range", [True, False])
@pytest.mark.parametrize("shape", [(3, 3, 16, 32), (64, 10)])
def test_gradient_equals_tensorflows_element_for_element(bits, narrow_range, shape):
    rng = np.random.default_rng(bits)
    x = tf.constant(rng.normal(size=shape).astype(np.float32))
    peak = tf.reduce_max(tf.abs(x), axis=list(range(len(shape) - 1)))
    low = -peak * rng.uniform(0.3, 1.0, size=peak.shape).astype(np.float32)  # some weights fall outside
    high = peak * rng.uniform(0.3, 1.0, size=peak.shape).astype(np.float32)
    upstream = tf.constant(rng.normal(size=shape).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours = fakequant.per_channel_fake_quant(x, low, high, bits, narrow_range)
        theirs = tf.quantization.fake_quant_with_min_max_vars_per_channel(
            x, low, high, num_bits=bits, narrow_range=narrow_range)
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    ours_grad = tape.gradient(ours, x, output_gradients=upstream).numpy()
    theirs_grad = tape.gradient(theirs, x, output_gradients=upstream).numpy()
    np.testing.assert_array_equal(ours_grad, theirs_grad)
    assert 0 < (ours_grad == 0).sum() < ours_grad.size  # the mask is really exercised


def _last_value_gradient(x0, upstream, fast: bool):
    from harness.backend import quant_ops

    fakequant.install(fast)
    try:
        low, high = (tf.Variable(tf.zeros(x0.shape[-1]), trainable=False) for _ in range(2))
        x = tf.Variable(x0)

        @tf.function  # in a graph, as in training: grappler's rewrites apply
        def gradient():
            with tf.GradientTape() as tape:
                y = quant_ops.LastValueQuantize(x, low, high, per_channel=True, is_training=True, num_bits=8,
                                                narrow_range=True, symmetric=True)
            return tape.gradient(y, x, output_gradients=upstream)

        return gradient().numpy()
    finally:
        fakequant.install(fakequant.enabled())


@pytest.mark.parametrize("seed", range(4))
def test_in_a_graph_the_largest_weight_of_a_channel_keeps_its_gradient(seed):
    """LastValue ranges are the kernel's own extremes: an ulp of rounding in the nudged range
    would mask them. TensorFlow's kernel never does; neither may this gradient."""
    rng = np.random.default_rng(seed)
    x0 = rng.normal(size=(3, 3, 32, 64)).astype(np.float32)
    upstream = tf.constant(rng.normal(size=x0.shape).astype(np.float32))
    np.testing.assert_array_equal(_last_value_gradient(x0, upstream, True),
                                  _last_value_gradient(x0, upstream, False))


def _train_cnn_qat(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((64, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 64)
    data = Dataset("random", x, y, x[:16], y[:16], 10, "test")
    train.set_seed(seed)
    base = zoo.build_cnn()
    qat = quantize.annotate(base, quantize.units_of(base), QuantConfig(8))
    train.compile_for_training(qat, 1e-3)
    train.fit_steps(qat, data, steps=4, batch_size=16, seed=seed)
    return [w.numpy() for w in qat.weights]


def test_qat_training_is_identical_with_and_without_it():
    try:
        fakequant.install(False)
        reference = _train_cnn_qat()
        fakequant.install(True)
        fast = _train_cnn_qat()
    finally:
        fakequant.install(fakequant.enabled())
    assert len(fast) == len(reference)
    for ours, theirs in zip(fast, reference):
        np.testing.assert_array_equal(ours, theirs)


def test_the_tested_tfmot_version_is_the_pinned_one_and_the_patch_is_on_here():
    from pathlib import Path

    requirements = (Path(__file__).parents[1] / "requirements.txt").read_text().splitlines()
    pins = [line.split("==")[1].strip() for line in requirements if line.startswith("tensorflow-model-optimization==")]
    assert pins and pins[0] in fakequant.TESTED_TFMOT_VERSIONS  # a bumped pin must re-test the patch
    assert fakequant.unsupported_reason() is None
    assert fakequant.active() == fakequant.enabled()


def _as_tfmot(monkeypatch, case):
    if case == "unknown version":
        monkeypatch.setattr(fakequant, "installed_tfmot_version", lambda: "0.9.0")
    elif case == "missing private name":  # what the import-time getattr gives a tfmot without it
        monkeypatch.setattr(fakequant, "_ORIGINAL_FAKE_QUANT", None)
    else:  # the private function exists with another signature
        monkeypatch.setitem(fakequant.EXPECTED_SIGNATURES, "_FakeQuantWithMinMaxVars", "(inputs, min_var, max_var)")


@pytest.mark.parametrize("case,says", [("unknown version", "tensorflow-model-optimization 0.9.0 "),
                                       ("missing private name", "has no quant_ops._FakeQuantWithMinMaxVars"),
                                       ("other signature", "is not the expected _FakeQuantWithMinMaxVars")])
def test_on_an_untested_tfmot_it_does_not_patch_and_says_so_once(monkeypatch, case, says):
    import warnings

    from harness.backend import quant_ops

    try:
        fakequant.install(True)  # patched, as on the pinned version: the guard must also take it out
        _as_tfmot(monkeypatch, case)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert fakequant.install(True) is False
        assert quant_ops.LastValueQuantize is fakequant._ORIGINAL_LAST_VALUE and not fakequant.active()
        assert len(caught) == 1 and "\n" not in str(caught[0].message)
        assert says in str(caught[0].message) and "stock gradient" in str(caught[0].message)
    finally:
        monkeypatch.undo()
        fakequant.install(fakequant.enabled())
