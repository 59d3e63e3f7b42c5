"""harness/case/latency.py: the per-case LiteRT latency fields. Real TensorFlow and LiteRT for the op
counts and that the timing fields are filled; no speed is asserted anywhere (only shapes and bounds)."""

import numpy as np
import pytest

from harness.case import audit, latency

pytestmark = pytest.mark.tf


@pytest.fixture(scope="module")
def tiny():
    """Three Dense layers (three units) and a batch of inputs."""
    from harness.backend import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(32, activation="relu"), keras.layers.Dense(4)])
    return model, np.random.default_rng(0).random((8, 16), dtype=np.float32)


def converted(model, x, indices):
    """The .tflite of ``model`` with the units at ``indices`` quantized (QAT, W8), after one step."""
    from harness.case import export, quantize
    from harness.design.config import QuantConfig

    units = quantize.units_of(model)
    chosen = tuple(u for u in units if u.index in indices)
    if not chosen:
        return export.to_tflite(model, quantized=False)
    qat = quantize.annotate(model, chosen, QuantConfig(8))
    qat.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    qat.train_on_batch(x, np.zeros(len(x), dtype=np.int64))  # ranges leave their start values
    return export.to_tflite(qat, quantized=True, quant=QuantConfig(8))


def runs(indices, total: int = 3) -> int:
    """Maximal runs of consecutive quantized units in a chain: each is entered once and left once."""
    flags = [i in indices for i in range(total)]
    return sum(1 for i, f in enumerate(flags) if f and (i == 0 or not flags[i - 1]))


@pytest.mark.parametrize("indices", [(), (2,), (1, 2), (0, 1, 2), (0,), (1,)])
def test_each_run_of_quantized_units_adds_one_quantize_and_one_dequantize(tiny, indices):
    model, x = tiny
    content = converted(model, x, indices)
    quantized = [k.quantized for k in audit.inspect(content).kernels]
    assert quantized == [i in indices for i in range(3)]  # the file computes in int8 exactly what was chosen
    assert latency.op_fields(content) == {"quantize_ops": runs(indices), "dequantize_ops": runs(indices)}


def test_the_ops_count_the_crossings_of_the_file_not_of_the_selection(tiny):
    """Units 0 and 2 chosen: the converter also runs the float unit between them in int8 (its input and
    output already pass through fake-quant), so the file crosses once each way, not twice."""
    model, x = tiny
    content = converted(model, x, (0, 2))
    in_file = tuple(i for i, k in enumerate(audit.inspect(content).kernels) if k.quantized)
    assert latency.op_fields(content) == {"quantize_ops": runs(in_file), "dequantize_ops": runs(in_file)}
    print(f"chosen (0, 2): int8 in the file {in_file}, crossings {runs(in_file)}")


def test_the_latency_fields_of_a_last_one_file_are_filled_and_consistent(tiny):
    model, x = tiny
    control, quant = converted(model, x, ()), converted(model, x, (2,))
    out = latency.fields(quant, control, x, on=True)
    assert out["latency_runtime"].startswith("ai-edge-litert"), out["latency_runtime"]
    assert out["quantize_ops"] == 1 and out["dequantize_ops"] == 1 and out["latency_threads"] == 1
    low, high = out["latency_ratio_ci95"]
    assert low <= out["latency_ratio"] <= high and out["latency_rounds"] >= latency.MIN_ROUNDS
    assert out["latency_quant_ms"] > 0 and out["latency_control_ms"] > 0 and out["latency_invokes"] >= 1
    print(f"last-1 of a 3-Dense model: quant/control {out['latency_ratio']:.2f} [{low:.2f}, {high:.2f}]")


def test_timing_off_counts_ops_and_leaves_every_time_none(tiny):
    model, x = tiny
    out = latency.fields(converted(model, x, (2,)), converted(model, x, ()), x, on=False)
    assert out["quantize_ops"] == 1 and out["latency_runtime"].startswith("not measured")
    assert all(out[k] is None for k in ("latency_quant_ms", "latency_control_ms", "latency_ratio",
                                        "latency_ratio_ci95", "latency_rounds"))


def test_a_runtime_that_cannot_load_the_file_is_said_not_timed(tiny, monkeypatch):
    from harness.case import evaluate

    def broken(content, threads):
        raise RuntimeError("no such kernel")

    monkeypatch.setitem(evaluate.LOADERS, evaluate.LITERT, broken)
    model, x = tiny
    out = latency.fields(converted(model, x, (2,)), converted(model, x, ()), x, on=True)
    assert out["latency_ratio"] is None and "no such kernel" in out["latency_runtime"]


def test_the_plan_stays_within_the_budget_and_keeps_the_rounds_the_interval_needs():
    rounds, invokes = latency.plan(0.02, 0.03, budget_ms=500, rounds=12)
    assert rounds == 12 and rounds * invokes * 0.05 <= 500 < rounds * (invokes + 1) * 0.05
    assert latency.plan(200.0, 300.0, budget_ms=500) == (latency.MIN_ROUNDS, 1)  # slow files: fewest rounds
    assert latency.plan(10.0, 10.0, budget_ms=500, rounds=12) == (12, 2)


def test_the_summary_is_the_median_ratio_of_rounds_with_its_interval():
    quant = [2.0, 2.2, 2.1, 1.9, 2.0, 2.4, 2.0, 2.1]
    control = [1.0, 1.0, 1.0, 1.0, 1.0, 1.2, 1.0, 1.0]
    out = latency.summarise(quant, control)
    assert out["latency_ratio"] == pytest.approx(2.0) and out["latency_rounds"] == 8
    assert out["latency_ratio_ci95"] == [1.9, 2.2]  # 8 rounds: the 1st and 8th sorted ratios (96.9%)
    assert latency.summarise(quant[:5], control[:5])["latency_ratio_ci95"] is None  # too few rounds


@pytest.mark.parametrize("option,env,expected", [(None, None, True), (None, "off", False), (None, "on", True),
                                                 (True, "off", True), (False, None, False)])
def test_the_option_wins_over_the_environment(monkeypatch, option, env, expected):
    if env is None:
        monkeypatch.delenv(latency.ENV, raising=False)
    else:
        monkeypatch.setenv(latency.ENV, env)
    assert latency.enabled(option) is expected


def test_the_option_parses_on_and_off_only():
    from harness import options

    assert options.parse_latency("on") is True and options.parse_latency("off") is False
    with pytest.raises(options.Bad, match="unknown latency"):
        options.parse_latency("yes")


def test_the_unit_tests_switch_timing_off_per_test_not_for_the_smoke_tier_after_them():
    """`python -m pytest` runs tests/ and then benchmarks/ in one process: importing tests/conftest.py
    must leave QATBENCH_LATENCY alone, or the smoke tier's cases run untimed and the latency gate has
    nothing to compare."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    conftest = Path(__file__).with_name("conftest.py")
    env = {k: v for k, v in os.environ.items() if k != "QATBENCH_LATENCY"}
    code = (f"import os, sys, runpy; sys.path.insert(0, {str(conftest.parent)!r}); "
            f"runpy.run_path({str(conftest)!r}); print(os.environ.get('QATBENCH_LATENCY'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-1000:]
    assert out.stdout.strip() == "None"
