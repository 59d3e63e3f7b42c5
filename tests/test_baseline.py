"""harness.results.baseline: the per-seed baseline file, its noise estimate, and the schema-1 migration."""

import json

import pytest

from factories import make_record
from harness.results import baseline


def record(n=4, seed=0, drop=1.0, size=1000, config_hash=None, status="passed", model="m", bits=8):
    return make_record(status=status, model=model, n=n, weight_bits=bits, seed=seed, accuracy_drop_pp=drop,
                       tflite_bytes=size, control_accuracy=0.9, quant_accuracy=None if drop is None else 0.9 - drop / 100,
                       config_hash=config_hash or f"hash-{n}-{seed}")


@pytest.fixture
def saved(tmp_path):
    records = [record(seed=0, drop=1.0), record(seed=1, drop=2.0), record(seed=2, drop=3.0, size=1200),
               record(n=8, drop=3.0, size=800), record(n=8, seed=1, drop=5.0, size=800),
               record(n=9, status="error", drop=None, size=None), record(n=0, drop=0.0), record(n=0, seed=1, drop=0.0)]
    path = tmp_path / "baseline.json"
    baseline.save_baseline(records, path, tier="smoke", machine={"cpu": {"model": "x"}})
    return baseline.load_baseline(path)


def test_round_trip_keeps_every_seed(saved):
    assert set(saved.entries) == {"m-last4-w8a8", "m-last8-w8a8", "m-last0-w8a8"}  # the error record is not stored
    entry = saved.entries["m-last4-w8a8"]
    assert sorted(entry.seeds) == [0, 1, 2]
    assert entry.seeds[1].drop_pp == 2.0 and entry.seeds[2].tflite_bytes == 1200
    assert entry.seeds[2].config_hash == "hash-4-2" and entry.seeds[2].case_id == "m-last4-w8a8-s2"
    assert entry.seeds[0].control_accuracy == 0.9 and entry.seeds[0].n_test == 1000
    assert saved.tier == "smoke" and saved.machine["cpu"]["model"] == "x"
    assert saved.schema_version == baseline.BASELINE_SCHEMA_VERSION and saved.created


def test_noise_is_the_pooled_within_key_sd_without_n0(saved):
    # last4: drops 1,2,3 (SS 2, df 2); last8: 3,5 (SS 2, df 1); last0 (0, 0) is left out by design
    noise = saved.noise["m/w8"]
    assert noise.df == 3
    assert noise.sd_pp == pytest.approx((4 / 3) ** 0.5)


def test_key_strips_only_the_seed_suffix():
    assert baseline.baseline_key(record(seed=3)) == "m-last4-w8a8"
    assert baseline.baseline_key(record(seed=0)) == "m-last4-w8a8"
    assert baseline.baseline_key({"case_id": "m-s2-last4-w8a8-s12"}) == "m-s2-last4-w8a8"


def test_schema_1_files_are_migrated(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"format": "qatbench-baseline", "schema_version": 1, "created": "then", "entries": {
        "cnn-last3-w4a8": {"accuracy_drop_pp": 0.5, "tflite_bytes": 1000.0, "n_records": 2,
                           "config_hashes": {"cnn-last3-w4a8": "h0", "cnn-last3-w4a8-s1": "h1"}}}}))
    loaded = baseline.load_baseline(path)
    entry = loaded.entries["cnn-last3-w4a8"]
    assert loaded.migrated_from == 1 and loaded.noise == {}
    assert (entry.model, entry.weight_bits, entry.n) == ("cnn", 4, 3)
    assert entry.seeds[1].config_hash == "h1" and entry.seeds[0].drop_pp == 0.5


@pytest.mark.parametrize("content, message", [
    ("{", "not valid JSON"),
    ('{"format": "x"}', "not a qatbench baseline"),
    ('{"format": "qatbench-baseline", "schema_version": 7, "entries": {}}', "schema version 7"),
    ('{"format": "qatbench-baseline", "schema_version": 2, "entries": []}', "'entries' must be an object"),
    ('{"format": "qatbench-baseline", "schema_version": 2, "entries": {"k": {"seeds": {"0": 3}}}}', "case_id"),
    ('{"format": "qatbench-baseline", "schema_version": 2, "entries": {"k": {"seeds": {"0": '
     '{"case_id": "k", "drop_pp": "x"}}}}}', "expected a number"),
])
def test_bad_files_give_one_line_errors(tmp_path, content, message):
    path = tmp_path / "b.json"
    path.write_text(content)
    with pytest.raises(baseline.BaselineError) as info:
        baseline.load_baseline(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(baseline.BaselineError, match="not found"):
        baseline.load_baseline(tmp_path / "nope.json")
