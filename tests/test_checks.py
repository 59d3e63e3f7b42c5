import pytest

from harness.results.gates import drop_targets, size_not_decreasing, violations
from harness.design.thresholds import Thresholds


@pytest.fixture
def record(make_record):
    return lambda **over: make_record(**{"accuracy_drop_pp": 0.2, **over})


T = Thresholds(max_drop_pp=((8, 1.0), (4, 2.0)), min_whole_compression=((8, 3.8), (4, 7.0)))


def test_a_good_record_passes(record):
    assert violations(record(), T) == []


def test_each_threshold_is_enforced(record):
    assert "audit" in violations(record(quantized_kernels=4), T)[0]
    assert "size" in violations(record(size_error_rel=0.02), T)[0]
    assert violations(record(accuracy_drop_pp=1.5), T) == []  # judged over seeds: drop_targets
    assert "floor" in violations(record(control_accuracy=0.11), Thresholds(min_control_accuracy=0.5))[0]
    assert "TFLite accuracy" in violations(record(quant_accuracy=0.94), T)[0]
    assert "smaller than float" in violations(record(tflite_bytes=110), T)[0]
    assert "did not shrink the weights" in violations(record(n=2, weight_bytes=380, predicted_weight_bytes=380), T)[0]


def test_a_file_that_grows_while_its_weights_shrink_is_not_a_failure(record):
    """cnn-first1: quantizing 288 conv weights adds more scales and ops than it saves on disk."""
    assert violations(record(n=1, tflite_bytes=445840, control_tflite_bytes=445196), T) == []


def test_the_whole_model_compression_target_is_the_qat_deployments(record):
    assert "smaller than float" in violations(record(tflite_bytes=110), T)[0]
    assert violations(record(tflite_bytes=110, method="ptq"), T) == []


def test_the_interpreter_comparison_is_argmax_against_argmax(record):
    """The tie-aware accuracy moves with ties (0.7955 here); the file's argmax accuracy is what the Keras
    model's argmax accuracy is compared with (both break ties toward the lowest class index)."""
    close = dict(quant_accuracy=0.7955, quant_accuracy_deployed=0.795, quant_accuracy_keras=0.8)
    assert violations(record(**close), T) == []  # 0.5 pp: within the tolerance
    assert "0.7900" in violations(record(**{**close, "quant_accuracy_deployed": 0.79}), T)[0]


def test_simulated_bits_skip_the_interpreter_comparison(record):
    assert violations(record(deployment="simulated", weight_bits=3, quant_accuracy=0.5), T) == []


def test_size_must_fall_strictly_with_n():
    def r(n, size, **over):
        base = dict(status="passed", order="last", model="m", weight_bits=8, method="qat", seed=0,
                    tier="smoke", n=n, weight_bytes=size, tflite_bytes=size + 10 * n, case_id=f"m-last{n}")
        return {**base, **over}
    assert size_not_decreasing([r(0, 400), r(1, 300), r(2, 200)]) == []
    problems = size_not_decreasing([r(0, 400), r(1, 300), r(2, 300)])
    assert len(problems) == 1 and "m-last1" in problems[0]
    assert size_not_decreasing([r(0, 400), r(1, 500, status="error")]) == []
    files = size_not_decreasing([r(0, 400), r(1, 395)], "tflite_bytes")  # 400 -> 405 B on disk
    assert len(files) == 1 and "tflite_bytes" in files[0]


def seeded(drops, bits=8, ci=None):
    return [dict(case_id="m-last5-w8a8" + (f"-s{s}" if s else ""), seed=s, model="m", weight_bits=bits, n=5,
                 status="passed", accuracy_drop_pp=d, drop_ci95_pp=ci) for s, d in enumerate(drops)]


def test_the_drop_target_is_judged_on_the_mean_over_seeds_with_its_interval():
    thresholds = lambda model: T  # noqa: E731 - max 1.0 pp at 8 bits
    assert drop_targets(seeded([0.2, 0.4, 0.3]), thresholds) == ([], [])
    failures, unsure = drop_targets(seeded([2.0, 2.2, 2.1]), thresholds)
    assert len(failures) == 1 and "above it" in failures[0] and unsure == []
    failures, unsure = drop_targets(seeded([0.2, 1.7, 4.1]), thresholds)  # one bad seed: inconclusive
    assert failures == [] and len(unsure) == 1 and "m-last5-w8a8" in unsure[0]


def test_one_seed_uses_its_paired_interval():
    thresholds = lambda model: T  # noqa: E731
    assert drop_targets(seeded([1.2], ci=[0.1, 2.3]), thresholds)[1]
    assert drop_targets(seeded([2.5], ci=[1.4, 3.6]), thresholds)[0]
    assert drop_targets(seeded([0.5], ci=[-0.5, 0.9]), thresholds) == ([], [])
