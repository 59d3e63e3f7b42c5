"""Per-unit quantization sensitivity of a float model, before any fine-tuning (issue 17).

HAWQ-V2 (Dong et al. 2020) scores a layer by its average Hessian trace times its quantization noise
power: Omega_i = tr(H_i) / n_i * ||Q_b(W_i) - W_i||^2. It is the second-order loss increase
1/2 dW^T H dW with H_i replaced by its mean eigenvalue (the 1/2 is dropped, as in HAWQ-V2: it scales
every unit alike and changes no ranking or plan). Biases are ignored (they stay int32 or float, so
quantizing a unit adds no bias noise worth scoring). A unit with several kernels (an attention block)
sums the term over its kernels.

- ``hutchinson_trace``: tr(H_i) for every tensor i from one Hessian-vector product per probe:
  E[v_i^T (H v)_i] = tr(H_ii) for Rademacher v over *all* tensors, because the cross terms
  v_i^T H_ij v_j have mean 0; one HVP thus serves every unit (their variance is in the stderr).
- ``fisher_trace``: the empirical Fisher 1/N sum_n ||g_n,i||^2 (per-example gradients), a Gauss-Newton
  stand-in for tr(H_i) that needs first derivatives only; the issue allows it if cheaper and as good.
- ``quant_noise_power``: exactly the weight fake-quant tfmot applies (LastValueQuantizer, symmetric,
  narrow range; per-tensor for Dense, per-channel on the last axis for conv).

Scores are numbers for the pure planner (harness/design/mixed.py: ``costs_by_bits``). TensorFlow comes
from harness.backend only. This lives in harness/case, not harness/analysis, because analysis is a
pure package (tests/test_architecture.py imports it with TensorFlow unimportable).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from harness.backend import keras, tf
from harness.design.units import Unit


@dataclass(frozen=True)
class TraceEstimate:
    """Estimated trace of one tensor's Hessian block (or Fisher block)."""

    mean: float
    stderr: float  # standard error of the mean over probes (0 for an exact computation)
    params: int
    seconds: float = 0.0  # wall time of the whole call that produced it (all tensors together)


def sparse_ce_from_logits(y_true, logits):
    """Per-example loss of the zoo models (trained with from_logits cross-entropy, harness/case/train.py)."""
    return keras.losses.sparse_categorical_crossentropy(y_true, logits, from_logits=True)


def _batches(x, y, batch_size: Optional[int]):
    n = len(x)
    step = n if not batch_size else batch_size
    for start in range(0, n, step):
        yield tf.constant(x[start:start + step]), tf.constant(y[start:start + step]), min(step, n - start) / n


def _hvp_function(model, weights, loss_fn):
    """Hessian-vector product of the mean loss on one batch, back-over-back (nested tapes)."""
    @tf.function(reduce_retracing=True)
    def hvp(xb, yb, probes):
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                loss = tf.reduce_mean(loss_fn(yb, model(xb, training=False)))
            grads = inner.gradient(loss, weights, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            dot = tf.add_n([tf.reduce_sum(g * v) for g, v in zip(grads, probes)])
        return outer.gradient(dot, weights, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return hvp


def hutchinson_trace(model, weights: Sequence, x, y, loss_fn: Callable = sparse_ce_from_logits,
                     samples: int = 32, seed: int = 0, batch_size: Optional[int] = None) -> tuple:
    """Hutchinson estimate of tr(H) of the mean loss over (x, y) wrt each tensor in ``weights``.

    ``loss_fn(y, outputs)`` gives per-example losses (a scalar works too). ``samples`` Rademacher
    probes, seeded; ``batch_size`` splits the data (the HVP of the mean is the weighted batch mean).
    Returns one TraceEstimate per tensor, in the order given."""
    if samples < 2:
        raise ValueError(f"samples must be >= 2 for a standard error, got {samples}")
    start = time.perf_counter()
    hvp = _hvp_function(model, list(weights), loss_fn)
    rng = np.random.default_rng(seed)
    estimates = np.zeros((samples, len(weights)))
    for s in range(samples):
        probes = [tf.constant(rng.choice(np.array([-1.0, 1.0], dtype=w.dtype.as_numpy_dtype), size=w.shape))
                  for w in weights]
        total = [tf.zeros_like(w) for w in weights]
        for xb, yb, share in _batches(x, y, batch_size):
            total = [t + share * h for t, h in zip(total, hvp(xb, yb, probes))]
        estimates[s] = [float(tf.reduce_sum(v * h)) for v, h in zip(probes, total)]
    seconds = time.perf_counter() - start
    means, errors = estimates.mean(axis=0), estimates.std(axis=0, ddof=1) / np.sqrt(samples)
    return tuple(TraceEstimate(float(m), float(e), int(w.shape.num_elements()), seconds)
                 for m, e, w in zip(means, errors, weights))


def fisher_trace(model, weights: Sequence, x, y, loss_fn: Callable = sparse_ce_from_logits,
                 batch_size: int = 128) -> tuple:
    """Trace of the empirical Fisher of the mean loss wrt each tensor: 1/N sum_n ||dl_n/dW||^2.

    Per-example gradients come from the Jacobian of the per-example loss vector (vectorised, one
    batch at a time: a batch's Jacobian holds batch_size copies of the weights)."""
    start = time.perf_counter()
    weights = list(weights)

    @tf.function(reduce_retracing=True)
    def squared_norms(xb, yb):
        with tf.GradientTape() as tape:
            losses = loss_fn(yb, model(xb, training=False))
        jac = tape.jacobian(losses, weights, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return [tf.reduce_sum(tf.square(j)) for j in jac]

    if loss_fn(tf.constant(y[:2]), model(tf.constant(x[:2]), training=False)).shape.rank != 1:
        raise ValueError("fisher_trace needs a per-example loss (a vector over the batch), not a mean")
    total = np.zeros(len(weights))
    for xb, yb, _ in _batches(x, y, batch_size):
        total += [float(v) for v in squared_norms(xb, yb)]
    seconds = time.perf_counter() - start
    return tuple(TraceEstimate(float(t / len(x)), 0.0, int(w.shape.num_elements()), seconds)
                 for t, w in zip(total, weights))


def quant_noise_power(kernel, bits: int, per_channel: bool) -> float:
    """||Q_b(W) - W||^2 for tfmot's weight quantizer: symmetric narrow range, range max|W| per tensor
    or per last-axis channel, TensorFlow's own fake-quant op (so rounding is the one QAT sees)."""
    w = tf.convert_to_tensor(kernel, dtype=tf.float32)
    if per_channel:
        bound = tf.reduce_max(tf.abs(w), axis=list(range(w.shape.rank - 1)))
        q = tf.quantization.fake_quant_with_min_max_vars_per_channel(
            w, -bound, bound, num_bits=bits, narrow_range=True)
    else:
        bound = tf.reduce_max(tf.abs(w))
        q = tf.quantization.fake_quant_with_min_max_vars(w, -bound, bound, num_bits=bits, narrow_range=True)
    return float(tf.reduce_sum(tf.square(tf.cast(q, tf.float64) - tf.cast(w, tf.float64))))


@dataclass(frozen=True)
class UnitScore:
    index: int
    weight_layer: str
    trace: float  # summed over the unit's kernels (Hutchinson mean or Fisher trace)
    trace_stderr: float
    params: int  # kernel parameters scored (biases excluded)
    per_channel: bool
    noise: dict = field(default_factory=dict)  # bits -> ||Q_b(W) - W||^2, summed over kernels
    score: dict = field(default_factory=dict)  # bits -> sum_k tr(H_k) / n_k * noise_k (HAWQ-V2)

    def as_record(self) -> dict:
        """JSON-ready: bit widths as string keys."""
        return {"index": self.index, "weight_layer": self.weight_layer, "trace": self.trace,
                "trace_stderr": self.trace_stderr, "params": self.params, "per_channel": self.per_channel,
                "noise": {str(b): v for b, v in self.noise.items()},
                "score": {str(b): v for b, v in self.score.items()}}


def unit_kernels(model, unit: Unit) -> list:
    """The kernel tensors quantization touches in ``unit`` (biases excluded), checked against unit.kernels."""
    kernels = []
    for layer in map(model.get_layer, unit.weight_layers):  # several when one reads a sigmoid (units.py)
        if type(layer).__name__ == "DepthwiseConv2D":
            kernels.append(layer.depthwise_kernel)
        elif hasattr(layer, "kernel") and not hasattr(layer, "qat_unit"):
            kernels.append(layer.kernel)
        else:  # a custom block (QatBlock): its matrices, i.e. every weight of rank >= 2
            kernels += [w for w in layer.trainable_weights if w.shape.rank >= 2]
    if len(kernels) != unit.kernels:
        raise ValueError(f"unit {unit.index} ({unit.weight_layer}): found {len(kernels)} kernels, "
                         f"the unit table says {unit.kernels}")
    return kernels


def unit_scores(model, units: Sequence[Unit], data, bits_list: Sequence[int] = (8, 4), samples: int = 32,
                seed: int = 0, method: str = "hutchinson", per_channel: Optional[bool] = None,
                loss_fn: Callable = sparse_ce_from_logits, batch_size: Optional[int] = None) -> tuple:
    """HAWQ-V2 score of every unit at every bit width, from one trace pass over all units' kernels.

    ``data``: a harness Dataset (its training split is used) or an (x, y) pair. ``method``:
    "hutchinson" (``samples`` probes) or "fisher". ``per_channel``: None is the QuantConfig default
    (per-channel for conv units, per-tensor otherwise)."""
    x, y = (data.x_train, data.y_train) if hasattr(data, "x_train") else data
    kernels = [unit_kernels(model, u) for u in units]
    flat = [k for ks in kernels for k in ks]
    if method == "hutchinson":
        traces = hutchinson_trace(model, flat, x, y, loss_fn, samples, seed, batch_size)
    elif method == "fisher":
        traces = fisher_trace(model, flat, x, y, loss_fn, batch_size or 128)
    else:
        raise ValueError(f"method must be 'hutchinson' or 'fisher', got {method!r}")
    scores, at = [], 0
    for unit, ks in zip(units, kernels):
        own, at = traces[at:at + len(ks)], at + len(ks)
        channel = (unit.kind == "conv") if per_channel is None else bool(per_channel)
        noise = {b: [quant_noise_power(k, b, channel) for k in ks] for b in bits_list}
        scores.append(UnitScore(
            unit.index, unit.weight_layer, sum(t.mean for t in own),
            float(np.sqrt(sum(t.stderr ** 2 for t in own))),  # as if independent: kernels share probes
            sum(t.params for t in own), channel, {b: sum(n) for b, n in noise.items()},
            {b: sum(t.mean / t.params * n for t, n in zip(own, noise[b])) for b in bits_list}))
    return tuple(scores)


def costs_by_bits(scores: Sequence[UnitScore]) -> dict:
    """The planner's input (harness.design.mixed.mixed_plan): bits -> score per unit, graph order.
    A negative Hutchinson trace (possible away from a minimum) is clipped to 0: no predicted gain."""
    widths = sorted({b for s in scores for b in s.score})
    return {b: [max(0.0, s.score[b]) for s in scores] for b in widths}
