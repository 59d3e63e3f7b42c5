"""`python -m harness perf` runs end to end on a small model and reports ratios, never asserting a time."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.results import records
from harness.tools import perf

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.tf


def test_perf_writes_side_by_side_ratios(tmp_path):
    done = subprocess.run([sys.executable, "-m", "harness", "perf", "--models", "mlp", "--bits", "8",
                           "--repeats", "6", "--steps", "2", "--round-ms", "20", "--results", str(tmp_path), "--run-id", "p"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "p" / "perf.json").read_text())
    mlp = report["models"]["mlp"]
    # mlp's suite step is one XLA function: float and whole-model QAT also with TensorFlow's ops (opstep), and
    # QAT with tfmot's per-step weight-range assigns (assignranges); ratios to the faster float
    assert mlp["train_step"] == "xla"
    assert set(mlp["qat_over_float"]) == {"float-opstep", "qat-whole-w8", "qat-last3-w8", "qat-whole-w8-tfgrad",
                                          "qat-whole-w8-nonative", "qat-whole-w8-tfactivations", "qat-whole-w8-opstep",
                                          "qat-whole-w8-assignranges"}
    assert mlp["qat_over_float"]["float-opstep"]["min"] >= 1.0  # no float is faster than the fastest
    graph = mlp["train_graph"]  # whole-model QAT adds fake-quant ops and the quantizers' range writes
    assert graph["qat-whole-w8"]["nodes"] > graph["float"]["nodes"] > 0
    # the weight ranges are assigned after training, not in the step; the activation ranges' EMA still is
    assert graph["qat-whole-w8"]["variable_writes"] > graph["float"]["variable_writes"] > 0
    assert "train-step graph: float" in (tmp_path / "p" / "perf.md").read_text()
    for spread in mlp["qat_over_float"].values():
        assert spread["min"] <= spread["median"] <= spread["max"] and spread["min"] > 0
        assert spread["rounds"] == 6 and spread["ci95"][0] <= spread["median"] <= spread["ci95"][1]
    assert mlp["steps_per_round"] >= 2 and report["round_ms"] == 20
    assert mlp["latency"]["bytes"]["w8"] < mlp["latency"]["bytes"]["float"]
    markdown = (tmp_path / "p" / "perf.md").read_text()
    assert "qat-whole-w8-tfgrad" in markdown and "qat-whole-w8-nonative" in markdown and "steps per model per round" in markdown
    assert_litert_beside_tflite(mlp["latency"], (tmp_path / "p" / "perf.md").read_text())
    assert_machine_named(report["env"], done.stdout, (tmp_path / "p" / "perf.md").read_text())


def assert_machine_named(env: dict, stdout: str, markdown: str):
    """The CPU model, its int8 ISA flags and the accelerators in perf.json and in the header line:
    the ratios hold for that CPU kind only."""
    assert env["machine"]["cpu"] == records.cpu()
    assert {"gpus", "summary", "driver", "cuda_version", "cudnn_version"} <= set(env["devices"])
    header = stdout.splitlines()[0]
    assert header == perf.header_line(env) and header.startswith(f"perf on {records.cpu()['model']}")
    assert " ".join(env["machine"]["cpu"]["flags"]) in header and env["devices"]["summary"] in header
    assert markdown.splitlines()[0] == header


def assert_litert_beside_tflite(latency: dict, markdown: str):
    """LiteRT timed at batch 1 in the same rounds as tf.lite, ratios against the fastest float of either."""
    assert "litert_error" not in latency and latency["runtimes"]["litert"].startswith("ai-edge-litert ")
    assert set(latency["batch1_ms"]) == {"float", "w8", "litert-float", "litert-w8"}
    assert set(latency["batch32_ms"]) == {"float", "w8"}  # LiteRT is timed at batch 1 only
    assert latency["batch1_fastest_float"] in ("float", "litert-float")
    assert set(latency["batch1_fastest_float_over"]) == {"w8", "litert-w8"}
    for spread in latency["batch1_fastest_float_over"].values():
        assert 0 < spread["min"] <= spread["median"] <= spread["max"]
        # timed by harness/case/latency.py in perf's rounds: the median's 95% interval as a case's latency has
        assert spread["rounds"] == 6 and spread["ci95"][0] <= spread["median"] <= spread["ci95"][1]
    assert latency["threads"] == 1
    # the fastest float of a round is never slower than tf.lite's float: its ratio bounds tf.lite's from below
    assert latency["batch1_fastest_float_over"]["w8"]["max"] <= latency["batch1_float_over"]["w8"]["max"]
    assert latency["runtimes"]["litert"] in markdown


def test_perf_times_inference_with_the_cases_latency_code_against_the_fastest_float(monkeypatch):
    """perf loads and times every file with harness/case/latency.py (load, interleaved), the batch-1 files of
    both runtimes in the same rounds, and divides each round's fastest float (either runtime) by each time."""
    from types import SimpleNamespace

    from harness.case import evaluate, export, latency

    loaded, timed = [], []
    monkeypatch.setattr(export, "to_tflite", lambda model, quantized, quant=None: model.encode())
    monkeypatch.setattr(evaluate, "runtime_name", lambda runtime: runtime)

    def load(content, x, runtime=evaluate.LITERT, batch=1, threads=latency.THREADS):
        loaded.append((content.decode(), runtime, batch, threads))
        return f"{runtime}:{content.decode()}"

    per_round = {f"{evaluate.TFLITE}:float": [2.0, 1.0, 3.0, 2.0, 2.0, 2.0], f"{evaluate.TFLITE}:w8": [1.0] * 6,
                 f"{evaluate.LITERT}:float": [1.0, 2.0, 1.5, 1.0, 1.0, 1.0], f"{evaluate.LITERT}:w8": [0.5] * 6}

    def interleaved(interps, rounds, invokes):
        timed.append((sorted(interps), rounds))
        return {name: list(per_round[value]) for name, value in interps.items()}

    monkeypatch.setattr(latency, "load", load)
    monkeypatch.setattr(latency, "interleaved", interleaved)
    models = {"float": "float", "qat-whole-w8": "w8"}
    out = perf.latency_ratios(models, SimpleNamespace(x_test=None), [8], repeats=6)
    assert {(c, r, b) for c, r, b, _ in loaded} == {("float", evaluate.TFLITE, 1), ("w8", evaluate.TFLITE, 1),
                                                   ("float", evaluate.LITERT, 1), ("w8", evaluate.LITERT, 1),
                                                   ("float", evaluate.TFLITE, 32), ("w8", evaluate.TFLITE, 32)}
    assert {t for *_, t in loaded} == {latency.THREADS}
    assert timed[0] == (["float", "litert-float", "litert-w8", "w8"], 6)  # one set of rounds for both runtimes
    over = out["batch1_fastest_float_over"]  # fastest float per round: 1, 1, 1.5, 1, 1, 1
    assert over["litert-w8"]["median"] == 2.0 and over["w8"]["median"] == 1.0 and over["litert-w8"]["rounds"] == 6
    assert out["batch1_fastest_float"] == "litert-float"
    assert out["batch1_float_over"]["w8"]["median"] == 2.0  # tf.lite's own float over its W8


def test_perf_bad_model_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "harness", "perf", "--models", "nope", "--results", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "unknown model 'nope'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
