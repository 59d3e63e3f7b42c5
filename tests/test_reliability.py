"""Faults are kept as data: every case leaves exactly one readable record, whatever happens."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from harness.results import records
from harness.design import registry
from harness.design.config import Case, QuantConfig, Selection, TierConfig

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.tf


class StubConfig:
    """Just enough of pytest's Config for a QatSession: every --qat-* option at its declared default
    (read from the plugin's own option group, so a new option needs no edit here)."""

    def __init__(self, tmp_path, **options):
        from harness import pytest_options

        parser = pytest.Parser()
        pytest_options.addoption(parser)
        self.values = {opt.dest: opt.default for opt in parser.getgroup(pytest_options.GROUP).options}
        self.values.update(qat_results=tmp_path / "results", qat_run_id="r", qat_cache=tmp_path / "cache")
        self.values.update(options)

    def getoption(self, name):
        return self.values[name]


@pytest.fixture
def session(tmp_path):
    from harness import session as session_module

    return session_module.QatSession(StubConfig(tmp_path, qat_timeout=1.0))


CASE = Case("mlp", Selection("last", 1), QuantConfig(8))


def read_back(session, case=CASE):
    return json.loads(records.case_path(session.run_dir, case.id).read_text())


def test_a_diverged_loss_is_recorded_as_nan(session):
    from harness.case.train import TrainingDiverged

    def diverge(case, spec, env):
        raise TrainingDiverged("loss became nan at step 3")

    record, violations, _ = session.run(CASE, runner=diverge)
    assert record["status"] == "nan" and read_back(session)["status"] == "nan"
    assert violations == ["TrainingDiverged: loss became nan at step 3"]


def test_a_slow_case_is_recorded_as_timeout(session):
    def slow(case, spec, env):
        time.sleep(5)
        return {}

    start = time.perf_counter()
    record, _, _ = session.run(CASE, runner=slow)
    assert time.perf_counter() - start < 3
    assert read_back(session)["status"] == "timeout" and "1 s" in record["error"]


def test_a_missing_dataset_is_one_line_with_the_install_command(session):
    from harness.models.data import MissingDataset

    def missing(case, spec, env):
        raise MissingDataset("Fashion-MNIST not found in /x (missing a.gz): apt-get install dataset-fashion-mnist\nmore")

    record, _, _ = session.run(CASE, runner=missing)
    assert record["status"] == "error" and "\n" not in record["error"]
    assert "apt-get install dataset-fashion-mnist" in read_back(session)["error"]


def test_training_on_nan_data_raises_training_diverged():
    from harness.models import data as datamod, zoo
    from harness.case import train

    x = np.ones((64, 28, 28), dtype=np.float32)
    ds = datamod.Dataset("nan", x, np.zeros(64, dtype=np.int64), x[:8], np.zeros(8, dtype=np.int64), 10, "test")
    model = zoo.build_mlp()
    kernel, bias = model.get_layer("logits").get_weights()
    model.get_layer("logits").set_weights([kernel, np.full_like(bias, np.inf)])  # logits inf - inf = nan
    train.compile_for_training(model, 1e-3)
    with pytest.raises(train.TrainingDiverged, match="loss became nan"):
        train.fit_steps(model, ds, steps=5, batch_size=32, seed=0)


TINY = {"smoke": TierConfig(train_size=600, test_size=200, pretrain_epochs=1, finetune_steps=10)}

TRAIN_ONE = """
import json, sys
from dataclasses import replace
from pathlib import Path
from harness.case import cache, pipeline
from harness.design import registry
from harness.design.config import TierConfig
spec = replace(registry.get("mlp"), tiers={"smoke": TierConfig(600, 200, 1, 10)})
data = spec.dataset.load()(600, 200)
got = cache.pretrained(spec, "smoke", 0, data, Path(sys.argv[1]))
print(json.dumps({"cached": got.cached, "accuracy": got.accuracy}))
"""


def test_two_processes_train_a_shared_baseline_once(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", TRAIN_ONE, str(tmp_path)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for _ in range(2)]
    results = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
    assert sorted(r["cached"] for r in results) == [False, True]
    assert results[0]["accuracy"] == results[1]["accuracy"]
    entries = list(tmp_path.iterdir())
    assert len(entries) == 1 and sorted(p.name for p in entries[0].iterdir()) == [".lock", ".lock.owner", "meta.json",
                                                                          "weights.h5"]


SAME = ("control_accuracy", "control_accuracy_keras", "quant_accuracy", "quant_accuracy_keras", "tflite_bytes",
        "control_tflite_bytes", "weight_bytes", "gzip_bytes", "quantized_kernels", "audit", "qat_final_loss")


def test_same_seed_same_numbers(tmp_path):
    """Determinism: two runs of one case, each training its own baseline and control from scratch,
    agree on every accuracy, byte and audit field."""
    from harness.case import pipeline

    spec = replace(registry.get("mlp"), tiers=TINY)
    case = Case("mlp", Selection("last", 2), QuantConfig(4))
    first, second = (pipeline.measure_here(case, spec, pipeline.Environment(cache_dir=tmp_path / run))
                     for run in ("a", "b"))
    assert {k: first[k] for k in SAME} == {k: second[k] for k in SAME}
    assert first["pretrained_cached"] is second["pretrained_cached"] is False
    assert first["control_cached"] is second["control_cached"] is False


def test_the_float_control_is_fine_tuned_once_per_model_and_changes_no_number(tmp_path):
    from harness.case import pipeline

    spec = replace(registry.get("mlp"), tiers=TINY)
    shared = pipeline.Environment(cache_dir=tmp_path / "shared")
    cases = [Case("mlp", Selection("last", 1), QuantConfig(8)), Case("mlp", Selection("last", 3), QuantConfig(4))]
    first, second = (pipeline.measure_here(case, spec, shared) for case in cases)
    assert (first["control_cached"], second["control_cached"]) == (False, True)
    assert first["control_key"] == second["control_key"]
    assert second["float_fit_s"] is None and second["float_step_ms"] > 0  # timed here, side by side
    alone = pipeline.measure_here(cases[1], spec, pipeline.Environment(cache_dir=tmp_path / "alone"))
    assert alone["control_cached"] is False
    assert {k: second[k] for k in SAME} == {k: alone[k] for k in SAME}


@pytest.mark.slow
def test_sigkill_mid_sweep_then_resume_loses_and_duplicates_nothing(tmp_path):
    selection = "mlp-last1-w8a8 or mlp-last3-w8a8 or mlp-last5-w8a8"
    base = [sys.executable, "-m", "pytest", "benchmarks", "-q", "-p", "no:cacheprovider", "-k", selection,
            "--qat-seeds", "0", "--qat-results", str(tmp_path), "--qat-cache", str(tmp_path / "cache")]
    proc = subprocess.Popen(base + ["--qat-run-id", "crash"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    cases = tmp_path / "crash" / records.CASES_DIR
    deadline = time.time() + 600
    while time.time() < deadline and len(list(cases.glob("*.json"))) < 1:
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    finished = {p.name: p.read_text() for p in cases.glob("*.json")}
    assert 1 <= len(finished) < 3, "kill the sweep mid-way"
    weights = list((tmp_path / "cache").glob("*/weights.h5"))
    assert len(weights) == 1  # the baseline cache survived the kill

    done = subprocess.run(base + ["--qat-resume", "crash"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:]
    assert f"{len(finished)} skipped" in done.stdout  # resumed cases were not re-measured
    for name, text in finished.items():
        assert (cases / name).read_text() == text  # kept as written
    merged = records.load_jsonl(tmp_path / "crash" / "records.jsonl")
    assert sorted(r["case_id"] for r in merged) == ["mlp-last1-w8a8", "mlp-last3-w8a8", "mlp-last5-w8a8"]
    assert not list(cases.glob(".*.tmp"))


@pytest.mark.slow
def test_two_pytest_sessions_at_once_into_different_run_ids_do_not_interfere(tmp_path):
    selection = "mlp-last1-w8a8 or mlp-last3-w4a8"
    base = [sys.executable, "-m", "pytest", "benchmarks", "-q", "-p", "no:cacheprovider", "-k", selection,
            "--qat-seeds", "0", "--qat-results", str(tmp_path), "--qat-cache", str(tmp_path / "cache")]
    procs = {run: subprocess.Popen(base + ["--qat-run-id", run], cwd=ROOT, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True) for run in ("one", "two")}
    outputs = {run: proc.communicate(timeout=1200)[0] for run, proc in procs.items()}
    assert all(proc.returncode == 0 for proc in procs.values()), outputs
    merged = {run: records.load_jsonl(tmp_path / run / "records.jsonl") for run in procs}
    for run, rows in merged.items():
        assert sorted(r["case_id"] for r in rows) == ["mlp-last1-w8a8", "mlp-last3-w4a8"]
        assert {r["run_id"] for r in rows} == {run} and {r["status"] for r in rows} == {"passed"}
        assert (tmp_path / run / "report.md").exists()
    one, two = ({r["case_id"]: r for r in rows} for rows in merged.values())
    for case_id in one:
        assert {k: one[case_id][k] for k in SAME} == {k: two[case_id][k] for k in SAME}
    everything = merged["one"] + merged["two"]
    assert sum(not r["pretrained_cached"] for r in everything) == 1  # the shared baseline: trained once
    assert sum(not r["control_cached"] for r in everything) == 1  # and so was the float control


def test_the_terminal_summary_survives_ptq_and_failed_records(session):
    """PTQ records have no QAT step time and failed ones no bytes: the summary still prints them."""
    common = dict(model="mlp", order="last", n=2, weight_bits=8, tier="smoke", seed=0, units_total=5,
                  param_fraction=0.1, control_accuracy=0.95, quant_accuracy=0.95, accuracy_drop_pp=0.0,
                  tflite_bytes=500, control_tflite_bytes=1000, weight_bytes=400, predicted_weight_bytes=400,
                  size_error_rel=0.0, config_hash="h")
    from harness.session_end import RunEnd

    merged = [dict(common, case_id="mlp-last2-w8a8-ptq", status="passed", method="ptq", step_ratio=None),
              dict(common, case_id="mlp-last2-w8a8", status="passed", method="qat", step_ratio=1.2),
              dict(case_id="mlp-last3-w8a8", status="error", error="ConversionError: x", model="mlp",
                   order="last", n=3, weight_bits=8, method="qat", seed=0, accuracy_drop_pp=None,
                   tflite_bytes=None)]
    session.end = RunEnd(merged=merged)
    text = "\n".join(session.summary_lines())
    assert "mlp-last2-w8a8-ptq" in text and "ConversionError: x" in text and "1.20" in text
