"""Distributed fine-tuning: 2 workers on localhost vs one process, mirrored on logical CPUs, dead/hung workers.

The TensorFlow tests use a tiny tier of the mlp (1,000 training / 500 test digits, 2 pre-training
epochs, 30 fine-tuning steps) and a private cache folder, so they pre-train once in seconds.
"""

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from harness.distributed import bandwidth, launcher
from harness.design import registry
from harness.design.config import Case, QuantConfig, Selection, TierConfig

ROOT = Path(__file__).resolve().parents[1]
TINY = TierConfig(train_size=1000, test_size=500, pretrain_epochs=2, finetune_steps=30, n_values=(2,), bits=(8,))
# 500 test digits: one digit is 0.2 pp. The 2-worker run sees the same global batches (DATA sharding)
# but each replica draws its own dropout masks, so the fine-tuned weights differ slightly.
ACCURACY_TOLERANCE_PP = 2.0
BYTES_TOLERANCE = 0.10  # measured loopback bytes vs the ring formula
RUN_TIMEOUT_S = 600


def tiny_spec():
    return dataclasses.replace(registry.MLP, tiers={"tiny": TINY})


def tiny_case(strategy="default", workers=1):
    return Case("mlp", Selection("last", 2), QuantConfig(8), "tiny", 0, strategy, workers)


def gone(pids) -> bool:
    """True when none of ``pids`` is still a live (non-zombie) process."""
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            continue
    return True


# -- pure: no TensorFlow ----------------------------------------------------------------------
def test_ring_formula():
    assert bandwidth.ring_allreduce_bytes(1000, 1) == (0.0, 0.0)
    assert bandwidth.ring_allreduce_bytes(1000, 2) == (4000.0, 8000.0)
    per_worker, total = bandwidth.ring_allreduce_bytes(1000, 4)
    assert per_worker == 6000.0 and total == 24000.0


def test_tf_config_and_ports():
    ports = launcher.free_ports(3)
    assert len(set(ports)) == 3
    config = json.loads(launcher.tf_config(ports, 1))
    assert config["task"] == {"type": "worker", "index": 1}
    assert config["cluster"]["worker"] == [f"127.0.0.1:{p}" for p in ports]


def test_case_round_trips_through_a_job():
    case = tiny_case("multiworker", 2)
    assert launcher.case_from_dict(json.loads(json.dumps(case.as_dict()))) == case


def test_watch_kills_the_others_when_one_dies(tmp_path):
    sleep = [sys.executable, "-c", "import time; time.sleep(120)"]
    die = [sys.executable, "-c", "import sys, time; time.sleep(0.5); print('ValueError: boom'); sys.exit(3)"]
    logs = [open(tmp_path / f"worker-{i}.log", "wb") for i in range(3)]
    procs = [subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
             for cmd, log in zip([sleep, die, sleep], logs)]
    start = time.monotonic()
    with pytest.raises(launcher.WorkerFailed, match=r"worker 1 exited with code 3 .*ValueError: boom") as info:
        launcher.watch(procs, tmp_path, timeout_s=60)
    assert time.monotonic() - start < 10
    assert "\n" not in str(info.value)
    assert gone(p.pid for p in procs)


def test_watch_times_out_a_hung_worker(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)]
    with pytest.raises(launcher.WorkerFailed, match=r"worker\(s\) 0 still running after 1 s"):
        launcher.watch(procs, tmp_path, timeout_s=1)
    assert gone([procs[0].pid])


# -- real TensorFlow: slow --------------------------------------------------------------------
@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from harness.case import pipeline

    return pipeline.Environment(tmp_path_factory.mktemp("dist-cache"), None, 0)


@pytest.fixture(scope="module")
def single(env):
    from harness.case import pipeline

    return pipeline.measure_here(tiny_case(), tiny_spec(), env)


@pytest.fixture(scope="module")
def two_workers(env, single):  # after `single`: the float model is pre-trained once, in this process
    return launcher.measure_on_workers(tiny_case("multiworker", 2), tiny_spec(), env, timeout_s=RUN_TIMEOUT_S)


@pytest.mark.slow
@pytest.mark.tf
def test_two_workers_reach_the_single_process_accuracy(two_workers, single):
    assert two_workers["devices"] == 2 and two_workers["quantized_kernels"] == 2
    for field in ("quant_accuracy", "control_accuracy"):
        gap = abs(two_workers[field] - single[field]) * 100
        assert gap <= ACCURACY_TOLERANCE_PP, f"{field}: 2 workers {two_workers[field]}, one process {single[field]}"


@pytest.mark.slow
@pytest.mark.tf
def test_both_workers_end_with_identical_weights(two_workers):
    digests = two_workers["worker_weight_digests"]
    assert len(digests) == 2 and set(digests[0]) == {"qat", "float"}
    assert two_workers["workers_identical"] == {"qat": True, "float": True}


@pytest.mark.slow
@pytest.mark.tf
def test_loopback_bytes_match_the_ring_prediction(two_workers):
    predicted = two_workers["allreduce_bytes_predicted"]
    assert predicted == 2 * two_workers["trainable_params"] * 4 * TINY.finetune_steps  # W = 2: 2(W-1) x P x 4
    if not two_workers["measured_valid"]:
        pytest.skip("loopback counters are machine-wide: not meaningful with parallel workers")
    assert abs(two_workers["loopback_bytes_measured"] / predicted - 1) <= BYTES_TOLERANCE


@pytest.mark.slow
@pytest.mark.tf
def test_payload_fields(two_workers):
    r = two_workers
    assert r["payload_tflite_bytes"] == r["tflite_bytes"] < r["payload_float_tflite_bytes"]
    assert r["payload_units_bytes"] == r["payload_units_predicted_bytes"]  # 2 Dense units at INT8 + int32 bias
    assert r["payload_units_bytes"] * 3.5 < r["payload_units_float_bytes"]
    assert r["quantizer_sync"]["synced_vars"] > 0 and r["quantizer_sync"]["local_vars"] > 0


MIRRORED = textwrap.dedent("""
    import dataclasses, json, sys
    from harness.distributed import strategy
    from harness.case import pipeline
    from harness import measure
    from harness.design import registry
    from harness.design.config import Case, QuantConfig, Selection, TierConfig
    tier = TierConfig(**json.loads(sys.argv[2]))
    spec = dataclasses.replace(registry.MLP, tiers={"tiny": tier})
    case = Case("mlp", Selection("last", 2), QuantConfig(8), "tiny", 0, "mirrored", 2)
    record = measure.measure(case, spec, pipeline.Environment(sys.argv[1], None, 0))
    try:
        strategy.configure_cpu_devices(3)
        late = None
    except strategy.DistributeError as exc:
        late = str(exc)
    keys = ("devices", "quant_accuracy", "quantized_kernels", "replicas_identical", "measured_valid")
    print("RESULT " + json.dumps({**{k: record[k] for k in keys}, "late": late}))
""")


@pytest.mark.slow
@pytest.mark.tf
def test_mirrored_on_two_logical_cpus(env, single):
    """In a subprocess: logical devices must be configured before TensorFlow initializes."""
    tier = json.dumps(dataclasses.asdict(TINY))
    out = subprocess.run([sys.executable, "-c", MIRRORED, str(env.cache_dir), tier], cwd=ROOT, capture_output=True,
                         text=True, timeout=RUN_TIMEOUT_S, env=dict(os.environ, TF_USE_LEGACY_KERAS="1"))
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    assert out.returncode == 0 and lines, out.stderr[-2000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["devices"] == 2 and result["quantized_kernels"] == 2
    assert result["replicas_identical"] == {"qat": True, "float": True}
    assert result["measured_valid"] is False  # in-process: no network traffic to measure
    assert abs(result["quant_accuracy"] - single["quant_accuracy"]) * 100 <= ACCURACY_TOLERANCE_PP
    assert "already initialized in this process with 2" in result["late"]


@pytest.mark.slow
@pytest.mark.tf
@pytest.mark.parametrize("mode", ["kill", "hang"])
def test_a_dead_or_hung_worker_fails_the_case(env, single, mode):
    timeout = 150 if mode == "kill" else 60
    start = time.monotonic()
    with pytest.raises(launcher.WorkerFailed) as info:
        launcher.measure_on_workers(tiny_case("multiworker", 2), tiny_spec(), env, timeout_s=timeout,
                          fault={"worker": 1, "step": 5, "mode": mode})
    elapsed = time.monotonic() - start
    message = str(info.value)
    assert "\n" not in message
    if mode == "kill":
        assert "worker 1 was killed by SIGKILL" in message
        assert elapsed < timeout
    else:
        assert "still running after 60 s" in message
        assert elapsed < timeout + 40  # + the kill and reaping
    assert len(info.value.pids) == 2 and gone(info.value.pids)
    logs = re.search(r"\(logs: (\S+)\)$", message)
    assert logs and Path(logs.group(1)).is_dir()
    shutil.rmtree(logs.group(1))


@pytest.mark.parametrize("name", ["mlp", "resnet50", "bert_mini"])
def test_the_spec_round_trip_for_workers_keeps_every_field(name):
    """A worker rebuilt a spec without weights_env and thresholds: another cache key, default targets."""
    spec = registry.get(name)
    tier = next(iter(spec.tiers))
    back = launcher.spec_from_dict(json.loads(json.dumps(launcher.spec_to_dict(spec, tier))))
    assert back.weights_env == spec.weights_env and back.thresholds == spec.thresholds
    assert back.description == spec.description and back.tier(tier) == spec.tier(tier)
    assert back.fingerprint(tier) == spec.fingerprint(tier)


# -- the spec a worker rebuilds: every field, generically (pure: no training) ------------------
def round_trip(spec, tier=None):
    """What a worker rebuilds from the job file the parent writes."""
    return launcher.spec_from_dict(json.loads(json.dumps(launcher.spec_to_dict(spec, tier))))


def same(a, b) -> bool:
    """Equal field by field, and of the same types all the way down (ModelSpec has eq=False, so its
    == is identity; a list for a tuple or a dict for a frozen config would compare unequal here)."""
    if type(a) is not type(b):
        return False
    if dataclasses.is_dataclass(a):
        return all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


def declared_fields(value, seen=None) -> set:
    """(class, field) of every dataclass inside ``value``, by dataclasses.fields, recursively."""
    seen = set() if seen is None else seen
    if dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            seen.add((type(value).__qualname__, f.name))
            declared_fields(getattr(value, f.name), seen)
    elif isinstance(value, (tuple, list)):
        for v in value:
            declared_fields(v, seen)
    elif isinstance(value, dict):
        for k, v in value.items():
            declared_fields(k, seen), declared_fields(v, seen)
    return seen


def sent_fields(data, seen=None) -> set:
    """(class, field) of every dataclass field written into a job's spec."""
    seen = set() if seen is None else seen
    if isinstance(data, dict) and launcher.DATACLASS in data:
        name = data[launcher.DATACLASS].partition(":")[2]
        for field_name, value in data["fields"].items():
            seen.add((name, field_name))
            sent_fields(value, seen)
    elif isinstance(data, dict):
        for value in data.values():
            sent_fields(value, seen)
    elif isinstance(data, list):
        for value in data:
            sent_fields(value, seen)
    return seen


ALL_SPECS = [(name, tier) for name, spec in registry.REGISTRY.items() for tier in spec.tiers]


@pytest.mark.parametrize("name,tier", ALL_SPECS, ids=[f"{n}-{t}" for n, t in ALL_SPECS])
def test_every_registry_spec_survives_the_trip_to_a_worker(name, tier):
    spec = registry.get(name)
    back = round_trip(spec, tier)
    assert same(back, spec), name
    assert back.fingerprint(tier) == spec.fingerprint(tier)
    assert same(round_trip(spec), spec)  # without a tier too


def test_every_field_of_every_nested_dataclass_is_sent():
    for spec in registry.REGISTRY.values():
        sent = sent_fields(launcher.spec_to_dict(spec)["spec"])
        assert sent == declared_fields(spec)
        assert {"weights_env", "thresholds", "tiers"} <= {f for c, f in sent if c == "ModelSpec"}
        assert {f.name for f in dataclasses.fields(registry.TierConfig)} <= {f for c, f in sent if c == "TierConfig"}


@dataclasses.dataclass(frozen=True)
class LaterThresholds(registry.Thresholds):
    """A field added later to a nested frozen dataclass."""

    max_latency_ms: tuple = ()


@dataclasses.dataclass(frozen=True)
class LaterTier(TierConfig):
    warmup_steps: int = 0


def test_a_field_added_later_to_a_nested_dataclass_travels_too():
    spec = dataclasses.replace(registry.MLP, thresholds=LaterThresholds(max_latency_ms=((8, 2.5),)),
                               tiers={"tiny": LaterTier(**dataclasses.asdict(TINY), warmup_steps=7)})
    back = round_trip(spec, "tiny")
    assert same(back, spec)
    assert type(back.thresholds) is LaterThresholds and back.thresholds.max_latency_ms == ((8, 2.5),)
    assert type(back.tier("tiny")) is LaterTier and back.tier("tiny").warmup_steps == 7
    assert ("LaterThresholds", "max_latency_ms") in sent_fields(launcher.spec_to_dict(spec)["spec"])


def test_what_cannot_travel_losslessly_fails_naming_it():
    spec = dataclasses.replace(registry.MLP, unit_kinds=frozenset({"dense"}))
    with pytest.raises(TypeError, match=r"spec\.unit_kinds: a frozenset"):
        launcher.spec_to_dict(spec)
    with pytest.raises(ValueError, match="no tier 'nope'"):
        launcher.spec_to_dict(registry.MLP, "nope")
    old = {"name": "mlp", "builder": "harness.models.zoo:build_mlp", "tier": "smoke"}  # a codec-1 job file
    with pytest.raises(ValueError, match="write the job again"):
        launcher.spec_from_dict(old)


def test_user_weights_and_thresholds_survive_the_trip(tmp_path, monkeypatch):
    """The review's case: $QATBENCH_RESNET50_WEIGHTS set, non-default thresholds. A worker must compute
    the parent's cache key and fingerprint (not pre-train again) and record the user's weights."""
    from harness.case import cache, pipeline

    weights = tmp_path / "resnet50.h5"
    weights.write_bytes(b"user weights")
    monkeypatch.setenv("QATBENCH_RESNET50_WEIGHTS", str(weights))
    spec = dataclasses.replace(registry.RESNET50, thresholds=registry.Thresholds(
        max_drop_pp=((8, 0.25), (4, 0.5)), size_tolerance=0.02, min_control_accuracy=0.5))
    back = round_trip(spec, "full")
    assert same(back, spec) and back.weights_env == "QATBENCH_RESNET50_WEIGHTS"
    assert back.thresholds == spec.thresholds != registry.Thresholds()
    assert cache.key_material(back, "full", 0) == cache.key_material(spec, "full", 0)
    assert cache.key_material(back, "full", 0)["inputs"] == {"QATBENCH_RESNET50_WEIGHTS": cache.file_digest(weights)}
    assert cache.spec_fingerprint(back, "full") == cache.spec_fingerprint(spec, "full")
    assert pipeline._initial_weights(back, object()) == f"user weights: {weights}"
    lost = dataclasses.replace(spec, weights_env="")  # what the review feared a worker would rebuild
    assert cache.spec_fingerprint(lost, "full") != cache.spec_fingerprint(spec, "full")
