"""Pre-training recipes (harness/case/pretrain.py, harness/design/config.py PretrainRecipe)."""

import json
import subprocess
import sys
from dataclasses import asdict, replace

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from harness.design import registry
from harness.design.config import PretrainRecipe, TierConfig

def tiny_images(n_train: int, n_test: int):
    from harness.models.data import Dataset

    rng = np.random.default_rng(0)
    x = rng.random((n_train + n_test, 12, 12, 1), dtype=np.float32)
    y = (x[:, :6].mean(axis=(1, 2, 3)) > x[:, 6:].mean(axis=(1, 2, 3))).astype(np.int64)  # learnable
    return Dataset("tiny", x[:n_train], y[:n_train], x[n_train:], y[n_train:], 2, "test")


FAST = PretrainRecipe(batch_size=64, learning_rate=3e-3, schedule="cosine", warmup_epochs=1.0,
                      precision="bf16-where-native")


@pytest.mark.parametrize("bad", [dict(schedule="linear"), dict(precision="fp16"), dict(batch_size=0),
                                 dict(batch_size=True), dict(learning_rate=2.0), dict(warmup_epochs=-1)])
def test_a_bad_recipe_is_refused(bad):
    with pytest.raises(ValueError):
        PretrainRecipe(**bad)


def test_only_a_recipe_that_is_not_the_default_enters_the_fingerprint():
    spec = registry.get("cnn")
    base = spec.fingerprint("smoke")
    same = replace(spec, tiers={**spec.tiers, "smoke": replace(spec.tier("smoke"), pretrain=PretrainRecipe())})
    fast = replace(spec, tiers={**spec.tiers, "smoke": replace(spec.tier("smoke"), pretrain=FAST)})
    assert same.fingerprint("smoke") == base and fast.fingerprint("smoke") != base


def test_the_reference_tiers_of_the_conv_models_pre_train_with_the_fast_recipe():
    for name in ("cnn", "resnet20"):
        tier = registry.get(name).tier("reference")
        assert tier.pretrain == registry.FAST_PRETRAIN and tier.train_size is None and tier.test_size is None


@settings(deadline=None)
@given(flags=st.sets(st.sampled_from(["avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"])),
       precision=st.sampled_from(["float32", "bf16-where-native"]))
def test_bf16_runs_only_where_asked_and_native(flags, precision):
    pytest.importorskip("tensorflow")
    from harness.case import pretrain

    config = TierConfig(train_size=None, test_size=None, pretrain_epochs=1, finetune_steps=1,
                        pretrain=replace(FAST, precision=precision))
    resolved = pretrain.resolve(config, flags)
    native = bool(flags & {"avx512_bf16", "amx_bf16"})
    assert resolved.precision == ("mixed_bfloat16" if precision == "bf16-where-native" and native else "float32")
    assert resolved.batch_size == 64 and resolved.learning_rate == 3e-3


@pytest.mark.tf
def test_the_default_recipe_is_the_original_loop_call_for_call():
    """Tiers that keep the default train exactly the numbers the loop before recipes trained."""
    from harness.case import pretrain, train
    from harness.models import zoo

    data = tiny_images(n_train=96, n_test=32)
    config = TierConfig(train_size=None, test_size=None, pretrain_epochs=2, finetune_steps=1, batch_size=16)
    build = lambda: zoo.build_cnn(data.x_train.shape[1:], data.num_classes)  # noqa: E731
    model, accuracy, _, resolved = pretrain.run(build, config, 3, data, ("avx512_bf16",))
    train.set_seed(3)
    old = build()
    train.compile_for_training(old, config.learning_rate)
    train.fit_steps(old, data, 2 * (96 // 16), 16, 3)
    assert resolved.text == "batch 16, lr 0.001 constant, float32"
    for new_w, old_w in zip(model.get_weights(), old.get_weights()):
        np.testing.assert_array_equal(new_w, old_w)
    assert accuracy == train.keras_accuracy(old, data.x_test, data.y_test)


@pytest.mark.tf
def test_a_schedule_warms_up_then_decays_to_zero():
    from harness.case import pretrain

    resolved = pretrain.Resolved(64, 3e-3, "cosine", 1.0, "float32")
    rate = pretrain.learning_rate(resolved, steps=100, per_epoch=10)
    values = [float(rate(step)) for step in (0, 5, 10, 55, 100)]
    assert values[0] == 0.0 and values[1] == pytest.approx(1.5e-3) and values[2] == pytest.approx(3e-3)
    assert values[2] > values[3] > values[4] and values[4] == pytest.approx(0.0, abs=1e-9)
    assert pretrain.learning_rate(replace(resolved, schedule="constant"), 100, 10) == 3e-3


@pytest.mark.tf
def test_bf16_pre_training_hands_on_a_float32_model_with_the_trained_weights():
    from harness.backend import keras
    from harness.case import pretrain, train
    from harness.models import zoo

    data = tiny_images(n_train=128, n_test=32)
    config = TierConfig(train_size=None, test_size=None, pretrain_epochs=2, finetune_steps=1, pretrain=FAST)
    build = lambda: zoo.build_cnn(data.x_train.shape[1:], data.num_classes)  # noqa: E731
    model, accuracy, _, resolved = pretrain.run(build, config, 0, data, ("avx512_bf16",))
    assert resolved.precision == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().name == "float32"  # restored for every later stage
    assert all(layer.dtype_policy.name == "float32" for layer in model.layers)
    assert model.output.dtype.name == "float32" and model.count_params() == build().count_params()
    assert accuracy == train.keras_accuracy(model, data.x_test, data.y_test)
    fresh = build()
    assert any(not np.array_equal(a, b) for a, b in zip(model.get_weights(), fresh.get_weights()))  # it trained


@pytest.mark.tf
@pytest.mark.slow
def test_the_speed_command_compares_both_recipes_side_by_side(tmp_path):
    out = subprocess.run([sys.executable, "-m", "harness", "pretrain-speed", "--models", "cnn", "--epochs", "2",
                          "--train-size", "600", "--test-size", "100", "--out", str(tmp_path), "--one-fit"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads((tmp_path / "pretrain-speed.json").read_text())
    (result,) = report["results"]
    assert set(result["recipes"]) == {"original", "recipe"} and len(result["recipes"]["original"]["epoch_s"]) == 2
    assert result["recipes"]["original"]["recipe"] == "batch 32, lr 0.001 constant, float32"
    for timing in result["recipes"].values():  # each epoch's fit: to its last step's end, then the teardown
        assert all(t >= 0 for t in timing["teardown_s"]) and all(t > 0 for t in timing["in_fit_s"])
        assert np.allclose(timing["epoch_s"], np.add(timing["in_fit_s"], timing["teardown_s"]))
    assert set(result["speedup"]) == set(result["speedup_wall"]) == {"median", "min", "max"}
    whole = result["one_fit"]  # each recipe's whole pre-training in one fit, twice (ABBA)
    assert [len(whole["images_per_s"][name]) for name in ("original", "recipe")] == [2, 2]
    assert whole["speedup_range"][0] <= whole["speedup"] <= whole["speedup_range"][1]
    assert "one fit of 2 epochs each" in out.stdout
    assert "recipe/original" in out.stdout and report["env"]["cpu"]["model"] is not None


@pytest.mark.parametrize("argv, message", [(["--models", "nope"], "unknown model"), (["--epochs", "0"], "--epochs"),
                                           (["--models", "resnet50"], "no tier"), (["--seeds", "a"], "--seeds")])
def test_the_speed_command_refuses_bad_input_in_one_line(argv, message):
    out = subprocess.run([sys.executable, "-m", "harness", "pretrain-speed", *argv], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0 and message in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_a_tier_read_back_from_json_keeps_its_recipe():
    tier = registry.get("cnn").tier("reference")
    back = TierConfig(**json.loads(json.dumps(asdict(tier))))
    assert back.pretrain == tier.pretrain == registry.FAST_PRETRAIN
    with pytest.raises(ValueError, match="PretrainRecipe"):
        TierConfig(train_size=None, test_size=None, pretrain_epochs=1, finetune_steps=1, pretrain="fast")
