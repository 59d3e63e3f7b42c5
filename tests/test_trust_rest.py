"""Trust boundaries, the rest of issue 29: no seed mean over two code versions, non-finite user data named,
the pre-trained cache's meta.json checked, bad CLI input and closed pipes, special files in data folders,
SIGTERM while an xdist session ends."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.results import records
from test_trust import run  # noqa: F401 - the run-folder fixture, shared
from tests.factories import make_record

OLD, NEW = "spec-a-code-old", "spec-a-code-new"




def write(run_dir: Path, **fields) -> dict:
    record = make_record(**fields)
    records.write_atomic(records.case_path(run_dir, record["case_id"]), record)
    return record


# -- 1. one code version per seed mean --------------------------------------------------------------
def test_a_configuration_measured_by_two_code_versions_is_never_averaged(run):
    from harness.session_end import EndOptions, finish_run

    write(run, seed=0, accuracy_drop_pp=0.3, spec_fingerprint=NEW, created="2026-02-01T00:00:00+00:00")
    write(run, seed=1, accuracy_drop_pp=-7.0, spec_fingerprint=OLD, created="2026-01-01T00:00:00+00:00")
    end = finish_run(run, EndOptions())
    assert [r["case_id"] for r in end.merged] == ["m-last5-w8a8"]
    assert [r["case_id"] for r in end.left_out] == ["m-last5-w8a8-s1"]
    mixed = [p for p in end.problems if p.startswith("mixed code versions")]
    assert len(mixed) == 1 and "m-last5-w8a8 has records of 2 config versions" in mixed[0]
    assert "1 records left out" in mixed[0] and "m-last5-w8a8-s1" in mixed[0]
    # nothing measured is lost: both stay in records.jsonl; the report says why one is not in its means
    assert len(records.load_jsonl(run / "records.jsonl")) == 2
    report = end.report_path.read_text()
    assert "mixed code versions" in report and "-7.00" not in report


def test_seeds_of_one_code_version_are_kept_together_although_their_config_hashes_differ(run):
    from harness.session_end import EndOptions, finish_run

    for seed in (0, 1, 2):  # the config hash covers the seed: every seed has its own
        write(run, seed=seed, accuracy_drop_pp=0.1 * seed, spec_fingerprint=NEW)
    end = finish_run(run, EndOptions())
    assert len({r["config_hash"] for r in end.merged}) == 3
    assert len(end.merged) == 3 and not end.left_out and not end.problems


def test_the_cli_report_keeps_only_the_version_of_the_newest_record(run, capsys):
    from harness.__main__ import load_run

    write(run, seed=0, spec_fingerprint=NEW, created="2026-03-01T00:00:00+00:00")
    write(run, seed=1, spec_fingerprint=OLD, created="2026-01-01T00:00:00+00:00")
    write(run, seed=2, spec_fingerprint=OLD, created="2026-02-01T00:00:00+00:00")
    write(run, n=3, spec_fingerprint=None)  # says nothing of its version: takes no side, always kept
    kept = load_run(str(run))  # what plan, report, baseline and rerun read
    assert sorted(r["case_id"] for r in kept) == ["m-last3-w8a8", "m-last5-w8a8"]
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("note: mixed code versions: m-last5-w8a8 has records of 2")
    assert err.endswith("2 records left out of its means: m-last5-w8a8-s1, m-last5-w8a8-s2")


# -- 2. non-finite values in --qat-data -------------------------------------------------------------
@pytest.mark.parametrize("array, value", [("x_train", np.nan), ("x_test", np.inf), ("x_test", 1e300)])
def test_non_finite_user_data_is_one_line_naming_the_file_and_the_array(tmp_path, array, value):
    from harness.external import data_files

    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.random((20, 4)), "y_train": np.arange(20) % 2,
              "x_test": rng.random((10, 4)), "y_test": np.arange(10) % 2}
    arrays[array][3, 1] = value
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    with pytest.raises(data_files.BadData) as caught:
        data_files.load(path, (4,), 2)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and f"{array} holds NaN or infinite" in message
    assert "index (3, 1)" in message
    arrays[array][3, 1] = 0.5  # the same file without it loads
    np.savez(path, **arrays)
    assert data_files.load(path, (4,), 2).x_train.shape == (20, 4)


# -- 3. the pre-trained cache's meta.json checks itself ----------------------------------------------
def _control_cache(tmp_path):
    from harness.backend import keras
    from harness.case import cache

    def small():
        model = keras.Sequential([keras.layers.Dense(2, input_shape=(3,))])
        model.compile(loss="mse")
        return model

    calls = []

    def produce():
        calls.append(1)
        return cache.Control(small(), b"tflite-bytes", 0.9, 0.8, None, "", False)

    base = cache.Pretrained(None, "base-key", 0.9, 0.0, True)
    get = lambda: (cache._IN_MEMORY.clear(), cache.float_control(base, produce, small, tmp_path))[1]
    return get, calls


@pytest.mark.tf
@pytest.mark.parametrize("edit, says", [
    (lambda meta: meta.update(keras_accuracy=0.99), "meta_sha256"),  # edited by hand: the digest no longer matches
    (lambda meta: meta.pop("meta_sha256"), "meta_sha256"),
    (lambda meta: meta.update(keras_accuracy=float("nan"), resign=True), "keras_accuracy nan is not an accuracy"),
    (lambda meta: meta.update(tflite_accuracy=5.0, resign=True), "tflite_accuracy 5.0 is not an accuracy"),
    (lambda meta: meta.update(keras_accuracy="0.9", resign=True), "keras_accuracy '0.9' is not an accuracy"),
])
def test_an_edited_or_impossible_cache_meta_value_rebuilds_the_entry_never_reaches_a_record(tmp_path, edit, says):
    from harness.case import cache

    get, calls = _control_cache(tmp_path)
    assert get().cached is False
    (meta_path,) = (tmp_path / "base-key").glob("control-*/meta.json")
    meta = json.loads(meta_path.read_text())
    assert meta["meta_sha256"] == cache._meta_digest(meta)
    edit(meta)
    if meta.pop("resign", False):  # a forger who recomputes the digest: the values are still checked
        meta["meta_sha256"] = cache._meta_digest(meta)
    meta_path.write_text(json.dumps(meta))
    with pytest.warns(cache.CacheWarning, match=says) as warned:
        again = get()
    (message,) = [str(w.message) for w in warned if issubclass(w.category, cache.CacheWarning)]
    assert "\n" not in message and str(meta_path) in message and "rebuilding" in message
    assert again.cached is False and again.keras_accuracy == 0.9 and again.tflite_accuracy == 0.8
    assert get().cached is True and len(calls) == 2  # healthy again: loaded, not produced a third time


# -- 4. the command line: a bad -k expression before measuring, a closed pipe quietly -----------------
@pytest.mark.parametrize("expr", ["mlp and (", "mlp or", "(mlp", "mlp and and cnn"])
def test_perf_refuses_a_malformed_sweep_expression_before_measuring(tmp_path, capsys, monkeypatch, expr):
    from harness import __main__ as cli
    from harness.tools import perf

    monkeypatch.setattr(perf, "run", lambda *a, **k: pytest.fail("measured despite a bad --sweep"))
    assert cli.main(["perf", "--sweep", expr, "--results", str(tmp_path)]) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"error: --sweep {expr!r}: not a pytest -k expression")
    assert list(tmp_path.iterdir()) == []


def test_cli_output_into_a_closed_pipe_exits_quietly(run, tmp_path):
    import subprocess
    import sys

    for seed in (0, 1, 2):
        write(run, seed=seed, accuracy_drop_pp=0.1 * seed, spec_fingerprint=NEW)
    target = tmp_path / "baseline.json"
    child = subprocess.Popen([sys.executable, "-m", "harness", "baseline", "--results", str(run), "--save", str(target)],
                             cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()  # `| head -0`: the reader is gone before the first line
    err = child.stderr.read().decode()
    assert child.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err, err
    assert json.loads(target.read_text())["entries"]  # the file the command was asked to write is written


# -- 6. special files where CIFAR-10 is read -------------------------------------------------------------
def cifar_folder(root: Path) -> Path:
    root.mkdir()
    for name in ("data_batch_1", "test_batch", "batches.meta"):
        (root / name).write_bytes(b"not read by the check")
    return root


@pytest.mark.parametrize("where", ["test_batch", "data_batch_2", "the variable"])
def test_a_fifo_where_cifar10_is_read_is_one_line_at_start_up_not_a_hang(tmp_path, where):
    import os

    from harness import options

    folder = cifar_folder(tmp_path / "cifar-10-batches-py")
    fifo = tmp_path / "cifar.tar.gz" if where == "the variable" else folder / where
    if fifo.exists():
        fifo.unlink()
    os.mkfifo(fifo)  # opening it for reading would block until a writer comes: never, here
    value = str(fifo if where == "the variable" else folder)
    with pytest.raises(options.Bad) as caught:
        options.check_environment({"QATBENCH_CIFAR10": value})
    assert str(caught.value) == f"QATBENCH_CIFAR10={value!r}: {fifo} is not a regular file (a FIFO, device or " \
                                "folder is never read)"
    options.check_environment({"QATBENCH_CIFAR10": str(cifar_folder(tmp_path / "good"))})  # regular files pass


def test_a_fifo_in_the_cifar10_folder_stops_pytest_in_one_line(tmp_path):
    import os

    from tests.test_hardening import one_error_line, pytest_run

    folder = cifar_folder(tmp_path / "cifar-10-batches-py")
    (folder / "test_batch").unlink()
    os.mkfifo(folder / "test_batch")
    line = one_error_line(pytest_run("--collect-only", env={"QATBENCH_CIFAR10": str(folder)}, timeout=120))
    assert "QATBENCH_CIFAR10=" in line and "test_batch is not a regular file" in line


# -- 5. SIGTERM while an xdist session ends -----------------------------------------------------------
# Sends SIGTERM to the controller from inside xdist's own session end, where it waits for its workers
# to exit (execnet's waitfinish): the moment issue 29 saw a KeyboardInterrupt traceback and no records.jsonl.
SIGNAL_IN_TEARDOWN = '''
import os, signal
import pytest

@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session):
    dsession = session.config.pluginmanager.get_plugin("dsession")
    manager = getattr(dsession, "nodemanager", None)
    if manager is None:
        return  # a worker, or no xdist
    teardown = manager.teardown_nodes

    def signalled_teardown():
        print("sigterm-sent-in-teardown", flush=True)
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs at once, in this thread
        teardown()
    manager.teardown_nodes = signalled_teardown
'''


def xdist_run(tmp_path, run_id, extra=(), on_line=None):
    import os
    import subprocess
    import sys

    case = "mlp-last0-w8a8 and not s1 and not s2"  # one cheap case (N = 0: no QAT), ~35 s cold on 2 cores
    cmd = [sys.executable, "-m", "pytest", "benchmarks", "-v", "-p", "no:cacheprovider", "-k", case, "-n", "2",
           "--qat-results", str(tmp_path / "results"), "--qat-cache", str(tmp_path / "cache"), "--qat-run-id", run_id,
           *extra]
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    child = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    for line in child.stdout:
        lines.append(line)
        if on_line is not None:
            on_line(child, line)
    return child.wait(timeout=600), "".join(lines), tmp_path / "results" / run_id


def assert_survived(status, output, run_dir):
    assert "Traceback" not in output and "INTERNALERROR" not in output, output[-3000:]
    assert status in (0, 2), output[-3000:]  # finished, or stopped cleanly (pytest's interrupted)
    merged = records.load_jsonl(run_dir / "records.jsonl")
    assert [(r["case_id"], r["status"]) for r in merged] == [("mlp-last0-w8a8", "passed")]
    assert (run_dir / "report.md").is_file() and "mlp-last0-w8a8" in (run_dir / "report.md").read_text()


@pytest.mark.slow
@pytest.mark.tf
def test_sigterm_while_an_xdist_session_ends_loses_nothing(tmp_path):
    import signal

    pytest.importorskip("xdist")
    (tmp_path / "signal_in_teardown.py").write_text(SIGNAL_IN_TEARDOWN)
    status, output, run_dir = xdist_run(tmp_path, "in-teardown", ("-p", "signal_in_teardown"))
    assert "sigterm-sent-in-teardown" in output, output[-3000:]  # the signal did arrive where it used to break
    assert_survived(status, output, run_dir)

    def sigterm_after_the_last_result(child, line):  # from outside, as Slurm or Kubernetes would
        if "PASSED" in line and "[gw" in line:
            child.send_signal(signal.SIGTERM)
    assert_survived(*xdist_run(tmp_path, "after-last-case", on_line=sigterm_after_the_last_result))
