"""The straight-through per-channel gradient equals TensorFlow's, the XLA-compiled elementwise forward is
bit-identical to TensorFlow's op (ties and all-zero channels included), and training is unchanged by either."""

import numpy as np
import pytest

from harness.case import fakequant, quantize, train
from harness.models import zoo
from harness.backend import tf
from harness.design.config import QuantConfig
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


def _tensorflow_and_ours(x, low, high, bits, narrow_range, upstream, graph: bool):
    """(TensorFlow's output, ours, TensorFlow's gradient, ours) of the XLA fake-quant, eager or in a graph."""
    def both(x):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            theirs = tf.quantization.fake_quant_with_min_max_vars_per_channel(
                x, low, high, num_bits=bits, narrow_range=narrow_range)
            ours = fakequant.per_channel_fake_quant_xla(x, low, high, bits, narrow_range)
        return (theirs, ours, tape.gradient(theirs, x, output_gradients=upstream),
                tape.gradient(ours, x, output_gradients=upstream))

    return [t.numpy() for t in (tf.function(both) if graph else both)(tf.constant(x))]


def _ties_and_neighbours(low, high, bits, narrow_range, rng, shape):
    """Inputs on the midpoints between quantization levels and 1-2 ulps either side: where a fused
    multiply-add or a reciprocal instead of a division would round to the other level."""
    quant_min = 1 if narrow_range else 0
    scale = (high - low) / np.float32(2 ** bits - 1 - quant_min)
    levels = rng.integers(quant_min, 2 ** bits - 1, size=shape)
    mid = ((levels - quant_min + np.float32(0.5)) * scale + low).astype(np.float32)
    out = [mid]
    for direction in (np.inf, -np.inf):
        near = mid
        for _ in range(2):
            near = np.nextafter(near, np.float32(direction)).astype(np.float32)
            out.append(near)
    return out


@pytest.mark.parametrize("graph", [False, True])
@pytest.mark.parametrize("bits", [2, 4, 5, 8])
@pytest.mark.parametrize("narrow_range", [True, False])
def test_xla_fake_quant_is_bit_identical_to_tensorflows_op(bits, narrow_range, graph):
    shape = (3, 3, 8, 24)
    rng = np.random.default_rng(bits + 10 * narrow_range)
    x = rng.normal(size=shape).astype(np.float32)
    peak = np.abs(x).max(axis=(0, 1, 2))
    low = (-peak * rng.uniform(0.0, 1.0, size=peak.shape)).astype(np.float32)
    high = (peak * rng.uniform(0.0, 1.0, size=peak.shape)).astype(np.float32)
    low[:2], high[0], high[2] = 0.0, 0.0, 0.0  # all-zero ranges: output 0 and the gradient passes
    upstream = tf.constant(rng.normal(size=shape).astype(np.float32))
    for index, inputs in enumerate([x] + _ties_and_neighbours(low, high, bits, narrow_range, rng, shape)):
        theirs, ours, theirs_grad, ours_grad = _tensorflow_and_ours(inputs, low, high, bits, narrow_range,
                                                                    upstream, graph)
        np.testing.assert_array_equal(ours, theirs)  # max abs difference: 0 quantization steps
        np.testing.assert_array_equal(ours_grad, theirs_grad)
        assert index > 0 or 0 < (ours_grad == 0).sum() < ours_grad.size  # x: the mask is really exercised


def _last_value_gradient(x0, upstream, fast: bool, xla: bool = False):
    from harness.backend import quant_ops

    fakequant.install(fast, xla=xla)
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


@pytest.mark.parametrize("xla", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_in_a_graph_the_largest_weight_of_a_channel_keeps_its_gradient(seed, xla):
    """LastValue ranges are the kernel's own extremes: an ulp of rounding in the nudged range
    would mask them. TensorFlow's kernel never does; neither may this gradient."""
    rng = np.random.default_rng(seed)
    x0 = rng.normal(size=(3, 3, 32, 64)).astype(np.float32)
    upstream = tf.constant(rng.normal(size=x0.shape).astype(np.float32))
    np.testing.assert_array_equal(_last_value_gradient(x0, upstream, True, xla),
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
    return qat


def _trained_with(fast: bool, xla: bool = False):
    from harness.backend import keras

    keras.backend.clear_session()  # layer and tensor names restart, so two conversions can be compared
    try:
        fakequant.install(fast, xla=xla)
        return _train_cnn_qat()
    finally:
        fakequant.install(fakequant.enabled())


@pytest.mark.parametrize("xla", [False, True])
def test_qat_training_is_identical_with_and_without_it(xla):
    reference = [w.numpy() for w in _trained_with(False).weights]
    fast = [w.numpy() for w in _trained_with(True, xla).weights]
    assert len(fast) == len(reference)
    for ours, theirs in zip(fast, reference):
        np.testing.assert_array_equal(ours, theirs)


def test_the_int8_file_is_the_same_byte_for_byte():
    """Conversion traces the inference graph (is_training=False), which the patch leaves alone; and
    training gives the same weights. So the .tflite must be the very same file, kernels and all."""
    from harness.case import audit, export

    files = [export.to_tflite(_trained_with(fast, xla), quantized=True, quant=QuantConfig(8))
             for fast, xla in ((False, False), (True, True))]
    kernels = [audit.inspect(content).as_dict() for content in files]
    assert kernels[0] == kernels[1] and audit.inspect(files[1]).quantized_kernels > 0
    assert files[0] == files[1]


def test_the_tested_tfmot_version_is_the_pinned_one_and_the_patch_is_on_here():
    from pathlib import Path

    requirements = (Path(__file__).parents[1] / "requirements.txt").read_text().splitlines()
    pins = [line.split("==")[1].strip() for line in requirements if line.startswith("tensorflow-model-optimization==")]
    assert pins and pins[0] in fakequant.TESTED_TFMOT_VERSIONS  # a bumped pin must re-test the patch
    assert fakequant.unsupported_reason() is None
    assert fakequant.active() == fakequant.enabled()


@pytest.mark.parametrize("raw,xla", [(None, True), ("1", True), ("0", False)])
def test_the_xla_switch_picks_the_forward_traced_into_training(monkeypatch, raw, xla):
    calls = []
    if raw is None:
        monkeypatch.delenv("QATBENCH_XLA_FAKEQUANT", raising=False)
    else:
        monkeypatch.setenv("QATBENCH_XLA_FAKEQUANT", raw)
    for name in ("per_channel_fake_quant", "per_channel_fake_quant_xla"):
        monkeypatch.setattr(fakequant, name, lambda *args, name=name: calls.append(name))
    try:
        fakequant.install(True, native=False)  # where the C++ kernels are not in use
        large = (fakequant.XLA_MIN_ELEMENTS // 256, 256)  # exactly the threshold
        fakequant._fake_quant_for_training(tf.ones(large), tf.zeros(256), tf.ones(256), True, 8, True)
        fakequant._fake_quant_for_training(tf.ones((2, 3)), tf.zeros(3), tf.ones(3), True, 8, True)
        fakequant.install(True, xla_min_elements=0, native=False)
        fakequant._fake_quant_for_training(tf.ones((2, 3)), tf.zeros(3), tf.ones(3), True, 8, True)
    finally:
        monkeypatch.undo()
        fakequant.install(fakequant.enabled())
    # a kernel below XLA_MIN_ELEMENTS keeps TensorFlow's forward unless the threshold is lowered
    expected = ["per_channel_fake_quant_xla", "per_channel_fake_quant", "per_channel_fake_quant_xla"]
    assert calls == (expected if xla else ["per_channel_fake_quant"] * 3)


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


@pytest.mark.parametrize("trainable", [False, True])
def test_a_trainable_range_keeps_tensorflows_op_and_its_range_gradients(monkeypatch, trainable):
    """tfmot's quantizers never train their ranges; a user's might. The fast route drops the range
    gradients, so it must serve only non-trainable ranges; trainable ones keep TensorFlow's op."""
    calls = []
    original = fakequant._fake_quant_for_training
    monkeypatch.setattr(fakequant, "_fake_quant_for_training", lambda *a, **k: calls.append(a) or original(*a, **k))
    low = tf.Variable(-np.ones(6, np.float32), trainable=trainable)
    high = tf.Variable(np.ones(6, np.float32), trainable=trainable)
    x = tf.Variable(np.random.default_rng(5).normal(size=(3, 3, 4, 6)).astype(np.float32))
    with tf.GradientTape() as tape:
        y = fakequant._last_value_quantize(x, low, high, per_channel=True, is_training=True, num_bits=8,
                                           narrow_range=True, symmetric=True)
    grads = tape.gradient(y, [x, low, high])
    assert (len(calls) == 1) != trainable
    assert grads[0] is not None
