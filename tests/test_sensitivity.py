"""harness.case.sensitivity (issue 17): Hutchinson traces against the exact Hessian of a tiny model,
the empirical Fisher against a per-example loop, and the quantization noise against numpy."""

import numpy as np
import pytest

from harness.backend import keras, tf
from harness.case import sensitivity
from harness.case.quantize import units_of

pytestmark = pytest.mark.tf


def tiny_model_and_data(seed=0, examples=8):
    """Dense 4 -> 3 (tanh) -> 2 logits, softmax cross-entropy, a few examples."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(4,))
    hidden = keras.layers.Dense(3, activation="tanh", name="hidden")(inputs)
    logits = keras.layers.Dense(2, name="logits")(hidden)
    model = keras.Model(inputs, logits)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(examples, 4)).astype(np.float32)
    y = rng.integers(0, 2, size=examples).astype(np.int64)
    return model, x, y


def exact_traces(model, weights, x, y):
    """tr(H_ii) per tensor from the full Jacobian of the gradient (the Hessian block, materialised)."""
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            loss = tf.reduce_mean(sensitivity.sparse_ce_from_logits(y, model(x, training=False)))
        grads = inner.gradient(loss, weights)
    traces = []
    for g, w in zip(grads, weights):
        n = int(w.shape.num_elements())
        block = tf.reshape(outer.jacobian(g, w), (n, n))
        traces.append(float(tf.linalg.trace(block)))
    return traces


def test_hutchinson_is_within_three_standard_errors_of_the_exact_trace():
    model, x, y = tiny_model_and_data()
    weights = model.trainable_weights  # both kernels and both biases
    exact = exact_traces(model, weights, x, y)
    estimates = sensitivity.hutchinson_trace(model, weights, x, y, samples=300, seed=1)
    for w, e, true in zip(weights, estimates, exact):
        assert abs(e.mean - true) <= 3 * e.stderr + 1e-5, (w.name, e, true)
        assert e.params == w.shape.num_elements()
    assert any(e.stderr > 0 for e in estimates)  # a real estimate, not a degenerate exact one
    # batches give the same estimator as the whole set (same probes, same HVP of the mean loss)
    batched = sensitivity.hutchinson_trace(model, weights, x, y, samples=300, seed=1, batch_size=3)
    np.testing.assert_allclose([e.mean for e in batched], [e.mean for e in estimates], rtol=1e-4, atol=1e-6)


def test_fisher_trace_equals_a_per_example_loop():
    model, x, y = tiny_model_and_data(seed=3, examples=10)
    weights = model.trainable_weights
    direct = np.zeros(len(weights))
    for i in range(len(x)):
        with tf.GradientTape() as tape:
            loss = sensitivity.sparse_ce_from_logits(y[i:i + 1], model(x[i:i + 1], training=False))[0]
        direct += [float(tf.reduce_sum(tf.square(g))) for g in tape.gradient(loss, weights)]
    fisher = sensitivity.fisher_trace(model, weights, x, y, batch_size=4)
    np.testing.assert_allclose([f.mean for f in fisher], direct / len(x), rtol=1e-5)
    with pytest.raises(ValueError, match="per-example"):
        sensitivity.fisher_trace(model, weights, x, y, loss_fn=lambda t, p: tf.reduce_mean(p))


def fake_quant_reference(w, bound, bits):
    """TensorFlow's FakeQuant (Nudge, clamp, round half up) in float64, symmetric narrow range."""
    quant_min, quant_max = 1.0, 2.0 ** bits - 1
    scale = np.where(bound > 0, 2 * bound / (quant_max - quant_min), 1.0)
    zero_point = np.round(quant_min + bound / scale)
    low, high = (quant_min - zero_point) * scale, (quant_max - zero_point) * scale
    q = np.floor((np.clip(w, low, high) - low) / scale + 0.5) * scale + low
    return np.where(bound > 0, q, 0.0)


@pytest.mark.parametrize("bits", [8, 4, 3])
@pytest.mark.parametrize("shape,per_channel", [((20, 7), False), ((20, 7), True), ((3, 3, 4, 5), True)])
def test_quant_noise_power_matches_numpy(bits, shape, per_channel):
    w = np.random.default_rng(bits).normal(size=shape).astype(np.float32)
    w64 = w.astype(np.float64)
    axes = tuple(range(w.ndim - 1)) if per_channel else None
    bound = np.max(np.abs(w64), axis=axes)
    expected = float(np.sum((fake_quant_reference(w64, bound, bits) - w64) ** 2))
    assert expected > 0
    assert sensitivity.quant_noise_power(w, bits, per_channel) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("per_channel", [False, True])
def test_weights_on_the_grid_have_no_noise(bits, per_channel):
    top = 2 ** (bits - 1) - 1  # narrow range: integers -top..top
    rng = np.random.default_rng(bits)
    k = rng.integers(-top, top + 1, size=(6, 4)).astype(np.float64)
    k[0] = top  # every channel reaches the range, so the grid step is exactly its scale
    steps = 2.0 ** -np.arange(3, 7) if per_channel else np.full(4, 2.0 ** -5)  # exact in float32
    w = (k * steps).astype(np.float32)
    assert sensitivity.quant_noise_power(w, bits, per_channel) == 0.0
    assert sensitivity.quant_noise_power(np.zeros((3, 2), np.float32), bits, per_channel) == 0.0


def test_unit_scores_are_hawq_v2():
    model, x, y = tiny_model_and_data(seed=2, examples=16)
    units = units_of(model)
    scores = sensitivity.unit_scores(model, units, (x, y), bits_list=(8, 4), samples=8, seed=0)
    assert [s.weight_layer for s in scores] == ["hidden", "logits"]
    for unit, s in zip(units, scores):
        assert s.params == unit.kernel_params and not s.per_channel
        assert s.noise[4] > s.noise[8] > 0
        for bits in (8, 4):
            assert s.score[bits] == pytest.approx(s.trace / s.params * s.noise[bits])
    fisher = sensitivity.unit_scores(model, units, (x, y), method="fisher")
    assert all(s.trace > 0 and s.trace_stderr == 0 for s in fisher)
    costs = sensitivity.costs_by_bits(scores)
    assert sorted(costs) == [4, 8] and len(costs[8]) == len(units)
    assert scores[0].as_record()["score"].keys() == {"8", "4"}
