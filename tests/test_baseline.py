"""harness.baseline: save/load round trip and the regression gate."""

import json

import pytest

from harness import baseline


def record(n=4, seed=0, drop=1.0, size=1000, config_hash=None, status="passed", model="m"):
    case_id = f"{model}-last{n}-w8a8" + (f"-s{seed}" if seed else "")
    return dict(case_id=case_id, status=status, model=model, order="last", n=n, weight_bits=8, method="qat",
                seed=seed, accuracy_drop_pp=drop, tflite_bytes=size,
                config_hash=config_hash or f"hash-{n}-{seed}")


@pytest.fixture
def saved(tmp_path):
    records = [record(seed=0, drop=1.0), record(seed=1, drop=2.0), record(seed=2, drop=10.0, size=1200),
               record(n=8, drop=3.0, size=800), record(n=9, status="error", drop=None, size=None)]
    path = tmp_path / "baseline.json"
    baseline.save_baseline(records, path)
    return baseline.load_baseline(path)


def test_round_trip_stores_medians_over_seeds(saved):
    assert set(saved.entries) == {"m-last4-w8a8", "m-last8-w8a8"}  # error record not stored
    entry = saved.entries["m-last4-w8a8"]
    assert entry.accuracy_drop_pp == 2.0 and entry.tflite_bytes == 1000 and entry.n_records == 3
    assert entry.config_hashes["m-last4-w8a8-s2"] == "hash-4-2"
    assert saved.schema_version == baseline.BASELINE_SCHEMA_VERSION and saved.created


def test_key_strips_only_the_seed_suffix():
    assert baseline.baseline_key(record(seed=3)) == "m-last4-w8a8"
    assert baseline.baseline_key(record(seed=0)) == "m-last4-w8a8"
    assert baseline.baseline_key({"case_id": "m-s2-last4-w8a8-s12"}) == "m-s2-last4-w8a8"


def test_within_tolerance_is_ok(saved):
    verdict = baseline.compare(record(seed=1, drop=2.9, size=1009), saved, drop_tolerance_pp=1.0)
    assert verdict.status == "ok" and verdict.baseline_drop_pp == 2.0


@pytest.mark.parametrize("drop, size, what", [(3.2, 1000, "drop"), (2.0, 1011, "grew")])
def test_regression_is_reported(saved, drop, size, what):
    verdict = baseline.compare(record(seed=1, drop=drop, size=size), saved, drop_tolerance_pp=1.0)
    assert verdict.status == "regressed" and what in verdict.message and "\n" not in verdict.message


def test_missing_measurement_regresses(saved):
    verdict = baseline.compare(record(seed=1, drop=None, status="nan"), saved, drop_tolerance_pp=1.0)
    assert verdict.status == "regressed" and "no measurement" in verdict.message


def test_stale_hash_is_not_compared(saved):
    verdict = baseline.compare(record(seed=1, drop=50.0, config_hash="changed"), saved, drop_tolerance_pp=1.0)
    assert verdict.status == "stale" and "changed" in verdict.message


def test_new_case_and_new_seed(saved):
    assert baseline.compare(record(n=5), saved, drop_tolerance_pp=1.0).status == "new"
    new_seed = baseline.compare(record(seed=7, drop=50.0), saved, drop_tolerance_pp=1.0)
    assert new_seed.status == "new" and "seed" in new_seed.message


def test_compare_all(saved):
    verdicts = baseline.compare_all([record(n=8, drop=3.0, size=800), record(n=8, drop=5.0, size=800)], saved, 1.0)
    assert [v.status for v in verdicts] == ["ok", "regressed"]


def test_negative_tolerance_is_rejected(saved):
    with pytest.raises(ValueError):
        baseline.compare(record(), saved, drop_tolerance_pp=-1.0)


def assert_one_line_error(path, fragment):
    with pytest.raises(baseline.BaselineError) as info:
        baseline.load_baseline(path)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "\n" not in message and fragment in message


def test_missing_file(tmp_path):
    assert_one_line_error(tmp_path / "nope.json", "not found")


@pytest.mark.parametrize("text", ['{"format": "qatbench-baseline",\n "entries": {\n', "", "\x00\x01", "[1, 2"])
def test_corrupt_json(tmp_path, text):
    path = tmp_path / "baseline.json"
    path.write_text(text)
    assert_one_line_error(path, "not valid JSON")


@pytest.mark.parametrize("payload, fragment", [
    ({"format": "qatbench-baseline", "schema_version": 99, "entries": {}}, "schema version 99"),
    ({"schema_version": 1, "entries": {}}, "not a qatbench baseline"),
    ([1, 2], "not a qatbench baseline"),
    ({"format": "qatbench-baseline", "schema_version": 1, "entries": []}, "'entries' must be an object"),
    ({"format": "qatbench-baseline", "schema_version": 1, "entries": {"k": {"accuracy_drop_pp": "x\ny",
                                                                           "config_hashes": {}}}}, "expected a number"),
    ({"format": "qatbench-baseline", "schema_version": 1, "entries": {"k": {}}}, "config_hashes"),
])
def test_wrong_schema(tmp_path, payload, fragment):
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(payload, indent=2))
    assert_one_line_error(path, fragment)


def test_directory_instead_of_file(tmp_path):
    assert_one_line_error(tmp_path, "not found")
