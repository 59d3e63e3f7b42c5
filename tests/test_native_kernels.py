"""The C++ activation fake-quant kernels (harness/case/kernels) compute what TensorFlow's ops compute,
bit for bit, on every vector ISA build; tfmot's moving-average quantizer trains the same with them; and
where they cannot be built or must not be used, TensorFlow's ops serve with one warning."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from harness.backend import quant_ops, tf
from harness.case import fakequant, native_kernels

pytestmark = pytest.mark.skipif(native_kernels.ops() is None, reason=f"kernels: {native_kernels.status()}")

ROOT = Path(__file__).resolve().parents[1]


def _bits(array) -> np.ndarray:
    return np.asarray(array, dtype=np.float32).view(np.int32)


def _hard_inputs(rng, size: int, low: float, high: float, bits: int, narrow: bool) -> np.ndarray:
    """Uniform values around the range, a third on exact half steps of the scale (rounding ties and the
    nudged bounds' neighbours), and the IEEE specials."""
    x = rng.uniform(low - 1, high + 1, size=size).astype(np.float32)
    scale = np.float32((high - low) / ((1 << bits) - 1 - int(narrow))) if high != low else np.float32(1)
    steps = rng.integers(-3, (1 << bits) + 3, size=size // 3)
    x[: size // 3] = np.float32(low) + (steps + 0.5).astype(np.float32) * scale
    specials = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0], np.float32)[: max(0, size - size // 3)]
    x[size // 3: size // 3 + len(specials)] = specials
    return x


def mismatches(seed: int = 0, trials: int = 12) -> list:
    """Cases where a kernel's output differs from TensorFlow's in any bit (empty: all identical)."""
    kernels, rng, found = native_kernels.ops(), np.random.default_rng(seed), []
    for bits, narrow in ((8, False), (4, False), (8, True), (2, False)):
        for trial in range(trials):
            low, high = (0.0, 0.0) if trial == 0 else (-rng.uniform(0, 3) * (trial != 1), rng.uniform(0.1, 6))
            size = 16 * 28 * 28 * 8 if trial % 3 == 0 else int(rng.integers(1, 5000))  # odd tails too
            x = _hard_inputs(rng, size, low, high, bits, narrow)
            dy = rng.standard_normal(size).astype(np.float32)
            dy[: min(3, size)] = np.array([-0.0, np.nan, np.inf], np.float32)[: min(3, size)]
            theirs = tf.quantization.fake_quant_with_min_max_vars_gradient(dy, x, low, high, num_bits=bits,
                                                                           narrow_range=narrow)[0]
            ours = kernels.qatbench_fake_quant_input_gradient(dy, x, low, high, num_bits=bits, narrow_range=narrow)
            scanned = x[np.isfinite(x)] if trial % 2 else x  # with and without NaN and infinities
            their_range = (tf.reduce_min(scanned), tf.reduce_max(scanned))
            our_range = kernels.qatbench_min_max(scanned)
            if not np.array_equal(_bits(ours), _bits(theirs)):
                found.append(f"gradient bits={bits} narrow={narrow} trial={trial}")
            if not all(np.array_equal(_bits(a), _bits(b)) for a, b in zip(our_range, their_range)):
                found.append(f"min/max trial={trial}: {[float(v) for v in our_range]} vs {[float(v) for v in their_range]}")
    return found


def channel_mismatches(seed: int = 1) -> list:
    """The per-channel kernels against TensorFlow: min/max against reduce_min/max over all but the last
    axis; the forward against FakeQuantWithMinMaxVarsPerChannel, bit for bit; the input gradient against
    FakeQuantWithMinMaxVarsPerChannelGradient's (equal values: TensorFlow multiplies by 0 where the
    straight-through route selects +0)."""
    kernels, rng, found = native_kernels.ops(), np.random.default_rng(seed), []
    for shape in ((3, 3, 16, 32), (64, 10), (1, 1, 7, 3), (5, 33), (3, 3, 3, 1), (2, 2, 8, 100)):
        for bits, narrow in ((8, True), (8, False), (4, True), (2, False)):
            x, dy = rng.normal(size=shape).astype(np.float32), rng.normal(size=shape).astype(np.float32)
            rows = x.reshape(-1, shape[-1])
            low, high = np.minimum(rows.min(0), 0), np.maximum(rows.max(0), 0)
            low[0] = high[0] = 0.0  # TensorFlow outputs 0 there and passes the gradient
            scale = (high - low) / ((1 << bits) - 1 - int(narrow))
            ties = rng.random(rows.shape) < 0.3
            rows[ties] = (low + (rng.integers(-2, (1 << bits) + 2, rows.shape) + 0.5) * scale).astype(np.float32)[ties]
            rows[0, -1] = np.nan
            axes = list(range(len(shape) - 1))
            ours = kernels.qatbench_channel_min_max(x)
            if not all(np.array_equal(_bits(a), _bits(b)) for a, b in
                       zip(ours, (tf.reduce_min(x, axis=axes), tf.reduce_max(x, axis=axes)))):
                found.append(f"channel min/max {shape}")
            y = kernels.qatbench_channel_fake_quant(x, low, high, num_bits=bits, narrow_range=narrow)
            theirs = tf.quantization.fake_quant_with_min_max_vars_per_channel(x, low, high, num_bits=bits,
                                                                              narrow_range=narrow)
            if not np.array_equal(_bits(y), _bits(theirs)):
                found.append(f"channel forward {shape} bits={bits} narrow={narrow}")
            dx = kernels.qatbench_channel_fake_quant_input_gradient(dy, x, low, high, num_bits=bits,
                                                                    narrow_range=narrow)
            their_dx = tf.quantization.fake_quant_with_min_max_vars_per_channel_gradient(
                dy, x, low, high, num_bits=bits, narrow_range=narrow)[0]
            if not np.array_equal(np.asarray(dx), np.asarray(their_dx)):
                found.append(f"channel gradient {shape} bits={bits} narrow={narrow}")
    return found


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_every_isa_build_is_bit_identical_to_tensorflows_ops(isa):
    """One process per build (the library picks its loops once): ties, NaN, infinities, signed zeros,
    min == max == 0 and lengths that are no multiple of the vector width."""
    if isa != "generic" and not _cpu_has(isa):
        pytest.skip(f"this CPU has no {isa}")
    script = ("import json, tests.test_native_kernels as t; "
              "print(json.dumps(t.mismatches() + t.channel_mismatches()))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "QATBENCH_NATIVE_ISA": isa})
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def _cpu_has(isa: str) -> bool:
    from harness.results import records  # the flags every record carries

    return {"avx2": "avx2", "avx512": "avx512f"}[isa] in records.cpu()["flags"]


def test_the_straight_through_routes_agree_with_the_kernel(monkeypatch):
    """The three per-channel training routes (C++, XLA, TensorFlow ops) give the same outputs and input
    gradients, an all-zero channel included."""
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(size=(3, 3, 8, 16)).astype(np.float32))
    low = np.minimum(tf.reduce_min(x, [0, 1, 2]).numpy(), 0) * 0.8
    high = np.maximum(tf.reduce_max(x, [0, 1, 2]).numpy(), 0) * 0.8
    low[3] = high[3] = 0.0
    upstream = tf.constant(rng.normal(size=x.shape).astype(np.float32))
    results = []
    for route in (fakequant.native_per_channel_fake_quant, fakequant.per_channel_fake_quant_xla,
                  fakequant.per_channel_fake_quant):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = route(x, low, high, 8, True)
        results.append((y.numpy(), tape.gradient(y, x, output_gradients=upstream).numpy()))
    for y, dx in results[1:]:
        np.testing.assert_array_equal(_bits(y), _bits(results[0][0]))
        np.testing.assert_array_equal(_bits(dx), _bits(results[0][1]))


def test_per_channel_training_takes_the_kernels_for_rank_2_and_4(monkeypatch):
    calls = []
    for name in ("native_per_channel_fake_quant", "per_channel_fake_quant", "per_channel_fake_quant_xla"):
        monkeypatch.setattr(fakequant, name, lambda *args, name=name: calls.append(name))
    for shape in ((4, 3), (2, 2, 4, 3), (2, 4, 3)):
        fakequant._fake_quant_for_training(tf.ones(shape), tf.zeros(3), tf.ones(3), True, 8, True)
    assert calls == ["native_per_channel_fake_quant"] * 2 + ["per_channel_fake_quant"]


def test_the_empty_tensor_reduces_like_tensorflow():
    empty = tf.zeros([0, 3])
    ours = native_kernels.ops().qatbench_min_max(empty)
    assert [float(v) for v in ours] == [float(tf.reduce_min(empty)), float(tf.reduce_max(empty))]


def _quantize_step(quantize, x0, bits, narrow, symmetric, steps=3):
    """Outputs, input gradients and EMA ranges of tfmot's MovingAvgQuantize (``quantize``) over a few
    training calls in a tf.function, from the same starting range."""
    low = tf.Variable(-6.0, trainable=False)
    high = tf.Variable(6.0, trainable=False)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = quantize(x, low, high, per_channel=False, ema_decay=0.99, is_training=True, num_bits=bits,
                         narrow_range=narrow, symmetric=symmetric)
        return y, tape.gradient(y, x, output_gradients=x * 3.0 - 1.0)

    out = []
    for k in range(steps):
        y, dx = step(tf.constant(x0 * (1.0 + k)))
        out += [y.numpy(), dx.numpy(), low.numpy(), high.numpy()]
    return out


@pytest.mark.parametrize("bits,narrow,symmetric", [(8, False, False), (4, False, False), (8, True, True),
                                                   (8, False, True), (2, False, False)])
def test_the_moving_average_quantizer_trains_as_tfmots(bits, narrow, symmetric):
    x0 = np.random.default_rng(bits).normal(size=(4, 9, 9, 5)).astype(np.float32)
    ours = _quantize_step(fakequant._moving_avg_quantize, x0, bits, narrow, symmetric)
    theirs = _quantize_step(fakequant._ORIGINAL_MOVING_AVG, x0, bits, narrow, symmetric)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(_bits(a), _bits(b))


def _graph_ops(quantize, jit: bool) -> set:
    low, high = tf.Variable(-6.0, trainable=False), tf.Variable(6.0, trainable=False)

    def call(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = quantize(x, low, high, is_training=True)
        return tape.gradient(y, x)

    function = tf.function(call, jit_compile=jit)
    x = tf.ones([2, 3])
    function(x)  # runs: under XLA a custom op would fail to compile
    graph = function.get_concrete_function(x).graph.as_graph_def()
    return {node.op for node in graph.node} | {node.op for f in graph.library.function for node in f.node_def}


def test_the_kernels_serve_op_steps_and_stay_out_of_xla_steps():
    assert {"QatbenchMinMax", "QatbenchFakeQuantInputGradient"} <= _graph_ops(fakequant._moving_avg_quantize, False)
    assert not any(op.startswith("Qatbench") for op in _graph_ops(fakequant._moving_avg_quantize, True))
    assert not native_kernels.in_xla_function()


def test_trainable_ranges_and_the_switch_keep_tensorflows_ops():
    x = tf.ones([2, 3])
    trainable = tf.Variable(-6.0), tf.Variable(6.0)
    assert not fakequant._native_activation_path(x, *trainable, per_channel=False, is_training=True)
    frozen = tf.Variable(-6.0, trainable=False), tf.Variable(6.0, trainable=False)
    assert fakequant._native_activation_path(x, *frozen, per_channel=False, is_training=True)
    assert not fakequant._native_activation_path(x, *frozen, per_channel=True, is_training=True)
    assert not fakequant._native_activation_path(x, *frozen, per_channel=False, is_training=False)
    try:
        fakequant.install(True, native=False)
        assert not fakequant._native_activation_path(x, *frozen, per_channel=False, is_training=True)
        assert not native_kernels.usable()
    finally:
        fakequant.install(fakequant.enabled())
    assert quant_ops.MovingAvgQuantize is fakequant._moving_avg_quantize


def test_a_failed_build_is_one_line_and_leaves_no_library(tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", "false")  # a "compiler" that always fails
    with pytest.raises(RuntimeError) as caught:
        native_kernels.build(tmp_path)
    assert "\n" not in str(caught.value) and "failed" in str(caught.value)
    assert not list(tmp_path.rglob(native_kernels.LIBRARY_NAME))


def test_a_cached_library_is_verified_and_rebuilt_when_its_checksum_fails(tmp_path):
    library = native_kernels.build(tmp_path)
    first = library.read_bytes()
    library.write_bytes(first[:-1] + bytes([first[-1] ^ 1]))  # corrupt one byte
    assert native_kernels.build(tmp_path).read_bytes() == first


def test_without_the_kernels_one_warning_says_so_and_tensorflows_ops_serve(tmp_path):
    script = ("import warnings; warnings.simplefilter('always');"
              "from harness.case import native_kernels as n; print(n.ops() is None, '|', n.status())")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "CXX": "false", "QATBENCH_KERNELS": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    is_none, status = done.stdout.strip().splitlines()[-1].split(" | ")
    assert is_none == "True" and status.startswith("unavailable:")
    assert done.stderr.count("C++ fake-quant kernels unavailable") == 1


def test_the_switch_turns_them_off():
    done = subprocess.run([sys.executable, "-c", "from harness.case import native_kernels as n; print(n.status())"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, native_kernels.ENV_SWITCH: "0"})
    assert done.stdout.strip().splitlines()[-1] == f"off ({native_kernels.ENV_SWITCH}=0)"


def test_the_kernel_folder_is_the_users_unless_set(monkeypatch, tmp_path):
    from harness import options

    monkeypatch.delenv("QATBENCH_KERNELS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert options.default_kernel_dir() == tmp_path / "qatbench" / "kernels"
    monkeypatch.setenv("QATBENCH_KERNELS", str(tmp_path / "k"))
    assert options.default_kernel_dir() == tmp_path / "k"


def test_records_say_which_kernels_trained():
    from harness.case.pipeline import Environment

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        described = Environment().describe()
    assert described["native_kernels"] == native_kernels.status()
    assert described["numerics"]["native_fakequant"] == os.environ.get(native_kernels.ENV_SWITCH, "1")
