"""Issue 13: nothing silently wrong, nothing lost at the end. Hostile but realistic inputs and faults,
with real files and real subprocesses: bounded resources (1), a session end that never throws away a
sweep (2), self-checking caches (3), run folders that heal (4), no code from data files (5), values
that used to pass the parser and fail every case (6), and the smaller items (7)."""

import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from harness.models import data
from harness import options
from harness.results import records, rescue

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("QATBENCH_TEST_CACHE", "/tmp/qatbench-test-cache"))  # reused across runs
ONE_CASE = ["-k", "mlp-last1-w8a8", "--qat-bits", "8", "--qat-seeds", "0"]


def pytest_run(*args, env=None, timeout=900, **kwargs):
    return subprocess.run([sys.executable, "-m", "pytest", "benchmarks", "-q", "-p", "no:cacheprovider", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})), **kwargs)


def one_error_line(done) -> str:
    """The usage error of a pytest run: exit 4, exactly one 'error' line, no traceback."""
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout[-1500:] + done.stderr[-1500:]
    assert "Traceback" not in done.stderr + done.stdout
    errors = [ln for ln in done.stderr.splitlines()
              if ("error:" in ln or ln.startswith("ERROR:")) and not ln.startswith("ERROR: usage:")]
    assert len(errors) == 1, done.stderr
    return errors[0]


# -- 1 and 6: every option and environment variable has a range, checked when parsed -------------
@pytest.mark.parametrize("args,expected", [
    (["--qat-threads", "100000"], "threads must be in 0.."),
    (["--qat-strategy", "multiworker", "--qat-workers", "10000"], "workers must be in 1.."),
    (["--qat-workers", "2"], "needs --qat-strategy mirrored or multiworker"),
    (["--qat-seeds", str(2 ** 32)], "seeds must be in 0..4294967295"),
    (["--qat-timeout", "1e30"], "timeout must be a finite number"),
    (["--qat-timeout", "nan"], "timeout must be a finite number"),
    (["--qat-budget", "1", "--qat-size-budget", "0"], "size budget must be a finite number > 0"),
    (["--qat-save-baseline", "/tmp"], "is a directory"),
    (["--qat-save-baseline", "/etc/passwd/b.json"], "'/etc/passwd' exists and is not a directory"),
    (["--qat-cache", "/etc/passwd"], "cache directory '/etc/passwd' exists and is not a directory"),
    (["--qat-run-id", "../up"], "run id must be a plain folder name"),
])
def test_bad_values_are_one_line_usage_errors_at_start_up(args, expected):
    assert expected in one_error_line(pytest_run("--collect-only", *args, timeout=120))


@pytest.mark.parametrize("name,value,expected", [
    ("QATBENCH_WORKER_TIMEOUT", "abc", "QATBENCH_WORKER_TIMEOUT='abc': must be a finite number of seconds"),
    ("QATBENCH_WORKER_TIMEOUT", "nan", "QATBENCH_WORKER_TIMEOUT='nan'"),
    ("QATBENCH_WORKER_TIMEOUT", "0", "QATBENCH_WORKER_TIMEOUT='0'"),
    ("QATBENCH_LOCK_TIMEOUT", "-5", "QATBENCH_LOCK_TIMEOUT='-5'"),
    ("QATBENCH_CIFAR10", "/nonexistent/cifar.tar.gz", "QATBENCH_CIFAR10='/nonexistent/cifar.tar.gz': no such"),
    ("QATBENCH_RESNET50_WEIGHTS", "/nonexistent.h5", "no such file (or one of: imagenet)"),
    ("QATBENCH_FAST_FAKEQUANT_GRAD", "yes", "must be 0 or 1"),
    ("QATBENCH_NATIVE_FAKEQUANT", "on", "QATBENCH_NATIVE_FAKEQUANT='on': must be 0 or 1"),
    ("QATBENCH_NATIVE_ISA", "sse9", "QATBENCH_NATIVE_ISA='sse9': must be generic or avx2 or avx512"),
    ("QATBENCH_KERNELS", "/etc/passwd", "QATBENCH_KERNELS: cache directory '/etc/passwd' exists and is not a directory"),
])
def test_bad_environment_variables_name_themselves(name, value, expected):
    assert expected in one_error_line(pytest_run("--collect-only", env={name: value}, timeout=120))


def test_ranges_follow_the_machine():
    assert options.max_threads() == options.THREADS_PER_CORE * options.cores()
    assert options.parse_threads(str(options.max_threads())) == options.max_threads()
    assert options.parse_seeds("0,4294967295") == (0, 2 ** 32 - 1)
    assert options.parse_timeout("0") == 0.0 and options.parse_timeout("604800") == 604800.0
    for bad in ("0.5", "inf", "-1", "604801"):
        with pytest.raises(options.Bad, match="timeout must be"):
            options.parse_timeout(bad)
    with pytest.raises(options.Bad, match=r"--qat-threads 5 x --qat-workers 2"):
        options.check_combination("multiworker", 2, options.max_threads() // 2 + 1)


def test_the_worker_timeout_variable_is_checked_where_it_is_used(monkeypatch):
    from harness.distributed import launcher

    for value in ("abc", "nan", "0", "1e30"):
        monkeypatch.setenv("QATBENCH_WORKER_TIMEOUT", value)
        with pytest.raises(ValueError, match=f"QATBENCH_WORKER_TIMEOUT={value!r}"):
            launcher.worker_timeout()
    monkeypatch.setenv("QATBENCH_WORKER_TIMEOUT", "90")
    assert launcher.worker_timeout() == 90.0
    monkeypatch.delenv("QATBENCH_WORKER_TIMEOUT")
    assert launcher.worker_timeout() == launcher.DEFAULT_TIMEOUT_S


# -- 7: a run id is never silently reused; perf checks its arguments like the suite -------------
def test_reusing_a_run_id_without_resume_is_a_usage_error(tmp_path):
    records.write_atomic(records.case_path(tmp_path / "old", "mlp-last1-w8a8"), good())
    done = pytest_run("--collect-only", "--qat-results", str(tmp_path), "--qat-run-id", "old", timeout=120)
    assert "--qat-resume old" in one_error_line(done)
    assert pytest_run("--collect-only", "--qat-results", str(tmp_path), "--qat-resume", "old",
                      timeout=120).returncode == 0


def harness_cli(*args):
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("args,expected", [
    (["--run-id", "../escape"], "run id must be a plain folder name"),
    (["--run-id", "a/b"], "run id must be a plain folder name"),
    (["--repeats", "1000000"], "--repeats must be in 1..1000"),
    (["--sweep", "no_such_case_anywhere"], "no benchmark case matches"),
])
def test_perf_checks_its_arguments_before_measuring(tmp_path, args, expected):
    done = harness_cli("perf", "--models", "mlp", "--results", str(tmp_path), *args)
    assert done.returncode == 2 and expected in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not list(tmp_path.iterdir())


def test_perf_refuses_a_used_run_id(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "perf.json").write_text("{}")
    done = harness_cli("perf", "--models", "mlp", "--results", str(tmp_path), "--run-id", "p")
    assert done.returncode == 2 and "already holds a perf run" in done.stderr


def test_perf_sweep_with_no_case_reports_no_ratio():
    from harness.tools import perf

    lines = perf.sweep_lines({"sweep": {"n0": {"cases_per_hour": 0.0}, "n2": {"cases_per_hour": 0.0},
                                        "speedup": None}})
    assert lines == ["sweep: -n 0 0 cases/h, -n 2 0 cases/h: no case ran"]


# -- 4: run folders heal: every reader skips a malformed record with one line -------------------
def good(case_id="mlp-last1-w8a8", **fields):
    record = records.base_record(case_id, "h" * 16, {"status": "passed", "model": "mlp", "order": "last", "n": 1,
                                                     "weight_bits": 8, "seed": 0, "method": "qat", **fields}, {})
    return record


MALFORMED = {
    "list.json": [1, 2, 3],
    "string.json": "just text",
    "future.json": dict(good("a"), schema_version=99),
    "no-id.json": {"schema_version": 2, "status": "passed"},
    "bad-status.json": dict(good("b"), status="exploded"),
    "n-text.json": dict(good("c"), n="three"),
    "created-number.json": dict(good("d"), created=12345),
}


def corrupt_run(run_dir: Path) -> None:
    records.write_atomic(records.case_path(run_dir, "mlp-last1-w8a8"), good())
    old = good("mlp-last2-w8a8", n=2)
    old["schema_version"] = 1
    for name in records.ADDED_IN[2]:
        old.pop(name, None)
    records.write_atomic(records.case_path(run_dir, "mlp-last2-w8a8"), old)
    for name, value in MALFORMED.items():
        (run_dir / records.CASES_DIR / name).write_text(json.dumps(value))
    (run_dir / records.CASES_DIR / "truncated.json").write_text(json.dumps(good("e"))[:-40])


def test_merge_skips_malformed_records_with_one_line_each_and_migrates_old_ones(tmp_path):
    corrupt_run(tmp_path)
    merged, problems = rescue.merge_run(tmp_path)
    assert [r["case_id"] for r in merged] == ["mlp-last1-w8a8", "mlp-last2-w8a8"]
    assert merged[1]["migrated_from"] == 1 and merged[1]["schema_version"] == records.SCHEMA_VERSION
    assert len(problems) == len(MALFORMED) + 1 and all("\n" not in p and "skipped" in p for p in problems)
    for name in list(MALFORMED) + ["truncated.json"]:
        assert any(name in p for p in problems), name


def test_plan_reads_the_cases_when_records_jsonl_is_truncated(tmp_path):
    corrupt_run(tmp_path)
    rescue.merge_run(tmp_path)
    text = (tmp_path / "records.jsonl").read_text()
    (tmp_path / "records.jsonl").write_text(text[:-30])  # a run killed while merging (before atomic writes)
    done = harness_cli("plan", "--results", str(tmp_path), "--budget", "1")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "note: cases/list.json: skipped" in done.stderr


def test_plan_reads_a_records_jsonl_alone_skipping_a_truncated_last_line(tmp_path):
    good_lines = [json.dumps(good()), json.dumps(good("mlp-last2-w8a8", n=2))]
    (tmp_path / "records.jsonl").write_text("\n".join(good_lines) + "\n" + good_lines[0][:50])
    problems = []
    assert len(records.load_jsonl(tmp_path / "records.jsonl", problems)) == 2
    assert problems == [problems[0]] and "records.jsonl line 3: skipped" in problems[0]
    done = harness_cli("plan", "--results", str(tmp_path), "--budget", "1")
    assert "Traceback" not in done.stderr and "records.jsonl line 3" in done.stderr


# -- 5: no code execution from a data file --------------------------------------------------
class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def tarball(path: Path, batches: dict) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in batches.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def batch(count, seed, protocol=pickle.DEFAULT_PROTOCOL):
    rng = np.random.default_rng(seed)
    return pickle.dumps({b"batch_label": b"training batch", b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
                         b"labels": [int(v) for v in rng.integers(0, 10, count)],
                         b"filenames": [b"a.png"] * count}, protocol=protocol)


def test_a_crafted_cifar_tarball_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = pickle.dumps({b"data": Exploit(marker), b"labels": [0]})
    path = tarball(tmp_path / "evil.tar.gz", {"data_batch_1": evil, "test_batch": batch(2, 0)})
    with pytest.raises(data.UnsafePickle, match=r"data_batch_1: refused to load posix\.system"):
        data.cifar10(path)
    assert not marker.exists()
    # the same through the real loader in a fresh process, as a user would point the variable at it
    code = "from harness.models import data; data.images_32x3()"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, QATBENCH_CIFAR10=str(path)))
    assert done.returncode != 0 and "refused to load posix.system" in done.stderr and not marker.exists()


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL])
def test_the_real_cifar_format_still_loads(tmp_path, protocol):
    path = tarball(tmp_path / "c.tar.gz", {**{f"data_batch_{i}": batch(3, i, protocol) for i in range(1, 6)},
                                           "test_batch": batch(2, 9, protocol)})
    ds = data.cifar10(path)
    assert ds.x_train.shape == (15, 32, 32, 3) and ds.y_test.dtype == np.int64


def test_a_cifar_batch_of_the_wrong_shape_is_one_line(tmp_path):
    blob = pickle.dumps({b"data": np.zeros((2, 10), dtype=np.float64), b"labels": [0, 1]})
    path = tarball(tmp_path / "c.tar.gz", {"data_batch_1": blob, "test_batch": blob})
    with pytest.raises(ValueError, match=r"data_batch_1: data must be uint8 \(N, 3072\)"):
        data.cifar10(path)


# -- 2: the session end never loses measured work (in process, fake measurements) ---------------
class StubConfig:
    def __init__(self, tmp_path, **values):
        self.values = {"qat_tier": "smoke", "qat_bits": (), "qat_orders": (), "qat_seeds": (), "qat_methods": (),
                       "qat_strategy": "default", "qat_workers": 1, "qat_results": tmp_path / "results",
                       "qat_run_id": "r", "qat_cache": tmp_path / "cache", "qat_timeout": 0.0}
        self.values.update(values)
        self.option, self.args = type("O", (), {})(), []

    def getoption(self, name):
        return self.values.get(name)


def measured(case, spec, env):
    """What a passing mlp-last1-w8a8 record carries (no TensorFlow)."""
    return {"control_accuracy": 0.95, "quant_accuracy": 0.94, "quant_accuracy_keras": 0.94, "accuracy_drop_pp": 1.0,
            "quantized_kernels": 1, "selected_kernels": 1, "size_error_rel": 0.0, "units_total": 5,
            "tflite_bytes": 500, "control_tflite_bytes": 1000, "weight_bytes": 300, "control_weight_bytes": 900,
            "predicted_weight_bytes": 300}


@pytest.fixture
def session_for(tmp_path, monkeypatch):
    monkeypatch.setenv(rescue.RESCUE_ENV, str(tmp_path / "rescue"))
    from harness import session as session_module

    def make(**values):
        return session_module.QatSession(StubConfig(tmp_path, **values))
    return make


def a_case():
    from harness.design.config import Case, QuantConfig, Selection

    return Case("mlp", Selection("last", 1), QuantConfig(8))


@pytest.mark.tf
def test_a_record_the_run_folder_refuses_is_kept_and_merged(session_for, tmp_path):
    session = session_for()
    session.run_dir.mkdir(parents=True)
    (session.run_dir / records.CASES_DIR).write_text("not a folder")  # the folder refuses every record
    record, problems, _ = session.run(a_case(), runner=measured)
    assert record["status"] == "passed" and len(problems) == 1 and "record not written" in problems[0]
    copy = rescue.rescue_file(session.run_dir, "mlp-last1-w8a8", rescue.run_key(session.run_dir))
    assert str(copy) in problems[0] and json.loads(copy.read_text())["accuracy_drop_pp"] == 1.0
    failure = session.finish()
    assert [r["case_id"] for r in session.end.merged] == ["mlp-last1-w8a8"]
    assert "kept in" in failure and (session.run_dir / "report.md").exists()
    assert "mlp-last1-w8a8" in (session.run_dir / "records.jsonl").read_text()
    # the folder heals: the next session end puts the record back and clears the rescue copy
    (session.run_dir / records.CASES_DIR).unlink()
    (session.run_dir / records.CASES_DIR).mkdir()
    again = session_for(qat_resume="r")
    assert again.finish() is None and records.case_path(session.run_dir, "mlp-last1-w8a8").exists()
    assert not copy.exists()


@pytest.mark.tf
def test_every_session_end_step_is_guarded_and_saves_elsewhere(session_for, tmp_path):
    target = tmp_path / "baseline.json"
    session = session_for(qat_save_baseline=target)
    session.run(a_case(), runner=measured)
    target.mkdir()  # the baseline path became a folder during the run
    (session.run_dir / "records.jsonl").mkdir()  # and the merged file cannot be replaced
    (session.run_dir / "report.md").mkdir()  # nor the report
    failure = session.finish()
    lines = session.end.problems
    assert [r["case_id"] for r in session.end.merged] == ["mlp-last1-w8a8"]  # the summary still has the case
    assert any(line.startswith("records.jsonl not written") for line in lines)
    assert any(line.startswith("baseline not written") for line in lines)
    assert any(line.startswith("report not written") for line in lines)
    assert all("\n" not in line for line in lines) and failure
    saved = rescue.rescue_dir(session.run_dir)
    assert len(records.load_jsonl(saved / "records.jsonl")) == 1
    assert (saved / "baseline.json").is_file() and (saved / "report.md").is_file()
    assert session.summary_lines()


@pytest.mark.tf
def test_a_value_json_cannot_hold_and_a_failing_check_lose_nothing(session_for):
    session = session_for()

    def odd(case, spec, env):
        return {**measured(case, spec, env), "extra": object(), "quantized_kernels": None, "size_error_rel": "x"}

    record, problems, _ = session.run(a_case(), runner=odd)
    assert record["status"] == "failed" and problems[0].startswith("checks failed: ")
    stored = json.loads(records.case_path(session.run_dir, "mlp-last1-w8a8").read_text())
    assert stored["extra"].startswith("<object object") and stored["accuracy_drop_pp"] == 1.0


@pytest.mark.tf
def test_an_interrupted_case_is_recorded_then_the_interrupt_goes_on(session_for):
    session = session_for()

    def interrupted(case, spec, env):
        raise KeyboardInterrupt("SIGTERM")

    with pytest.raises(KeyboardInterrupt):
        session.run(a_case(), runner=interrupted)
    stored = json.loads(records.case_path(session.run_dir, "mlp-last1-w8a8").read_text())
    assert stored["status"] == "interrupted" and stored["error"] == "interrupted by SIGTERM"


@pytest.mark.tf
def test_resume_re_measures_a_malformed_record(session_for):
    session = session_for()
    path = records.case_path(session.run_dir, "mlp-last1-w8a8")
    path.parent.mkdir(parents=True)
    path.write_text("[1, 2]")  # valid JSON, not an object
    resumed = session_for(qat_resume="r")
    with pytest.warns(rescue.RunFolderWarning, match="re-measuring mlp-last1-w8a8"):
        record, _, was_resumed = resumed.run(a_case(), runner=measured)
    assert not was_resumed and json.loads(path.read_text())["status"] == "passed"


# -- 3: caches check themselves ----------------------------------------------------------------
def tiny_spec():
    from dataclasses import replace

    from harness.design import registry
    from harness.design.config import TierConfig

    return replace(registry.get("mlp"), tiers={"smoke": TierConfig(600, 200, 1, 10)})


@pytest.mark.tf
@pytest.mark.slow
@pytest.mark.parametrize("damage", ["same-size", "truncated", "meta"])
def test_a_damaged_cache_entry_is_rebuilt_with_one_line_naming_the_file(tmp_path, damage):
    from harness.case import cache

    spec = tiny_spec()
    ds = spec.dataset.load()(600, 200)
    first = cache.pretrained(spec, "smoke", 0, ds, tmp_path)
    folder = tmp_path / first.key
    weights = folder / "weights.h5"
    blob = bytearray(weights.read_bytes())
    if damage == "same-size":
        middle = len(blob) // 2
        blob[middle:middle + 64] = bytes(64)  # flipped weights, same length: used to load silently
        weights.write_bytes(bytes(blob))
    elif damage == "truncated":
        weights.write_bytes(bytes(blob[: len(blob) // 3]))
    else:
        (folder / "meta.json").write_text('{"accuracy": 0.9')
    with pytest.warns(cache.CacheWarning) as warned:
        again = cache.pretrained(spec, "smoke", 0, ds, tmp_path)
    (message,) = [str(w.message) for w in warned if issubclass(w.category, cache.CacheWarning)]
    assert "\n" not in message and "rebuilding" in message
    assert str(folder / ("meta.json" if damage == "meta" else "weights.h5")) in message
    assert again.cached is False and again.rebuilt == message and again.accuracy == first.accuracy
    assert cache.pretrained(spec, "smoke", 0, ds, tmp_path).cached is True  # healthy again


@pytest.mark.tf
def test_a_damaged_float_control_is_rebuilt(tmp_path):
    from harness.case import cache
    from harness.backend import keras

    def small():
        model = keras.Sequential([keras.layers.Dense(2, input_shape=(3,))])
        model.compile(loss="mse")
        return model

    calls = []

    def produce():
        calls.append(1)
        return cache.Control(small(), b"tflite-bytes", 0.9, 0.9, None, "", False)

    base = cache.Pretrained(None, "base-key", 0.9, 0.0, True)
    assert cache.float_control(base, produce, small, tmp_path).cached is False
    cache._IN_MEMORY.clear()
    (folder,) = (tmp_path / "base-key").glob("control-*")
    (folder / "control.tflite").write_bytes(b"tflite-bytez")
    with pytest.warns(cache.CacheWarning, match=r"control\.tflite failed its checksum"):
        assert cache.float_control(base, produce, small, tmp_path).cached is False
    cache._IN_MEMORY.clear()
    assert cache.float_control(base, produce, small, tmp_path).cached is True and len(calls) == 2


@pytest.mark.tf
def test_cache_keys_cover_dataset_and_weight_contents_not_paths(tmp_path, monkeypatch):
    from harness.case import cache
    from harness.design import registry

    resnet50, mlp = registry.get("resnet50"), registry.get("mlp")
    keys = lambda: (cache.cache_key(resnet50, "full", 0), cache.code_hash(resnet50), cache.cache_key(mlp, "smoke", 0))
    before = keys()
    first = tarball(tmp_path / "one.tar.gz", {"data_batch_1": batch(2, 1), "test_batch": batch(2, 2)})
    monkeypatch.setenv(data.CIFAR10_ENV, str(first))
    with_cifar = keys()
    assert with_cifar[0] != before[0] and with_cifar[1] != before[1] and with_cifar[2] == before[2]
    moved = tmp_path / "elsewhere.tar.gz"
    shutil.copy(first, moved)
    monkeypatch.setenv(data.CIFAR10_ENV, str(moved))
    assert keys() == with_cifar  # same content, another path: same entry
    tarball(moved, {"data_batch_1": batch(2, 3), "test_batch": batch(2, 2)})
    assert keys()[0] != with_cifar[0]  # other content at the same path: another entry
    weights = tmp_path / "w.h5"
    weights.write_bytes(b"one")
    monkeypatch.setenv("QATBENCH_RESNET50_WEIGHTS", str(weights))
    one = keys()
    weights.write_bytes(b"two")
    os.utime(weights, ns=(time.time_ns(), time.time_ns() + 10 ** 9))
    assert keys()[0] != one[0] and keys()[1] != one[1]


HOLD_LOCK = """
import sys, time
from filelock import FileLock
lock = FileLock(sys.argv[1]); lock.acquire()
open(sys.argv[1] + ".owner", "w").write('{"pid": %d, "host": "h", "since": %f}' % (__import__("os").getpid(), time.time()))
print("held", flush=True); time.sleep(120)
"""


@pytest.mark.tf
def test_a_held_cache_lock_is_named_as_such(tmp_path, monkeypatch):
    from harness.case import cache
    from harness.limits import CaseTimeout, time_limit

    folder = tmp_path / "entry"
    folder.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setenv(cache.LOCK_TIMEOUT_ENV, "1")
        with pytest.raises(cache.CacheLockTimeout, match=rf"cache lock .*\.lock held by pid {holder.pid} on h"):
            with cache.locked(folder):
                pass
        monkeypatch.setenv(cache.LOCK_TIMEOUT_ENV, "60")
        with pytest.raises(CaseTimeout, match="while waiting for cache lock"):
            with time_limit(1), cache.locked(folder):
                pass
    finally:
        holder.kill()
        holder.wait()


# -- 2 and 7 with real TensorFlow runs: file-size limit, unwritable merge, SIGTERM ------------------
@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """One real mlp case, measured once for the tests below (pre-training cached in CACHE)."""
    results = tmp_path_factory.mktemp("results")
    done = pytest_run(*ONE_CASE, "--qat-results", str(results), "--qat-run-id", "base", "--qat-cache", str(CACHE))
    assert done.returncode == 0, done.stdout[-3000:]
    return results / "base"


def copy_run(base_run: Path, tmp_path: Path) -> Path:
    shutil.copytree(base_run, tmp_path / "base")
    return tmp_path / "base"


def resume(run_dir: Path, tmp_path: Path, **kwargs):
    return pytest_run(*ONE_CASE, "--qat-results", str(run_dir.parent), "--qat-resume", run_dir.name,
                      "--qat-cache", str(CACHE), env={rescue.RESCUE_ENV: str(tmp_path / "rescue")}, **kwargs)


@pytest.mark.tf
@pytest.mark.slow
def test_a_merge_that_cannot_write_keeps_the_records_and_still_reports(base_run, tmp_path):
    run_dir = copy_run(base_run, tmp_path)
    (run_dir / "records.jsonl").unlink()
    (run_dir / "records.jsonl").mkdir()
    done = resume(run_dir, tmp_path)
    assert done.returncode == pytest.ExitCode.TESTS_FAILED and "Traceback" not in done.stdout
    problem = [ln for ln in done.stdout.splitlines() if "records.jsonl not written" in ln]
    assert problem and "mlp-last1-w8a8 " in done.stdout  # the summary table still printed
    rescued = next((tmp_path / "rescue").glob("base-*")) / "records.jsonl"
    assert [r["case_id"] for r in records.load_jsonl(rescued)] == ["mlp-last1-w8a8"]
    assert (run_dir / "report.md").exists()


def limit_file_size(limit):
    def apply():
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.tf
@pytest.mark.slow
def test_a_file_size_limit_at_the_session_end_is_one_line_per_step(base_run, tmp_path):
    run_dir = copy_run(base_run, tmp_path)
    size = (run_dir / "records.jsonl").stat().st_size
    done = resume(run_dir, tmp_path, preexec_fn=limit_file_size(size // 2))
    assert done.returncode == pytest.ExitCode.TESTS_FAILED and "Traceback" not in done.stdout + done.stderr
    assert "File too large" in done.stdout and "mlp-last1-w8a8 " in done.stdout
    assert records.read_case_records(run_dir)[0][0]["case_id"] == "mlp-last1-w8a8"  # the case file is intact


@pytest.mark.tf
@pytest.mark.slow
def test_sigterm_ends_the_session_like_ctrl_c(base_run, tmp_path):
    """Slurm and Kubernetes send SIGTERM: the current case is recorded as interrupted, the records
    are merged and the report written."""
    selection = ["-k", "mlp-last1-w8a8 or mlp-last2-w8a8 or mlp-last3-w8a8", "--qat-bits", "8", "--qat-seeds", "0"]
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "benchmarks", "-q", "-p", "no:cacheprovider", *selection,
                             "--qat-results", str(tmp_path), "--qat-run-id", "term", "--qat-cache", str(CACHE)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    cases = tmp_path / "term" / records.CASES_DIR
    deadline = time.time() + 600
    while time.time() < deadline and not list(cases.glob("*.json")):
        time.sleep(0.2)
    time.sleep(2)  # into the next case
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out[-3000:]
    merged = records.load_jsonl(tmp_path / "term" / "records.jsonl")
    statuses = {r["case_id"]: r["status"] for r in merged}
    assert len(statuses) == len(list(cases.glob("*.json"))) >= 2
    assert "interrupted" in statuses.values() and set(statuses.values()) <= {"passed", "interrupted"}
    assert (tmp_path / "term" / "report.md").exists() and "qatbench" in out


@pytest.mark.parametrize("args,expected", [
    (["--write-job", "j.json", "mlp-last1-w8a8", "smoke", "many"], "--write-job: invalid literal"),
    (["--write-job", "j.json", "mlp-last1-w8a8", "huge"], "unknown tier 'huge'"),
    (["--write-job", "j.json", "mlp-last1-w8a8", "smoke", "5000"], "workers must be in 1..1024"),
    (["/nonexistent/job.json"], "cannot start from /nonexistent/job.json: FileNotFoundError"),
])
def test_the_cluster_worker_command_checks_its_arguments(tmp_path, args, expected):
    done = subprocess.run([sys.executable, "-m", "harness.distributed.worker", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 1 and expected in done.stderr and len(done.stderr.strip().splitlines()) == 1
