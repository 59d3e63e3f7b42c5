"""`python -m harness perf` runs end to end on a small model and reports ratios, never asserting a time."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.tf


def test_perf_writes_side_by_side_ratios(tmp_path):
    done = subprocess.run([sys.executable, "-m", "harness", "perf", "--models", "mlp", "--bits", "8",
                           "--repeats", "2", "--steps", "2", "--results", str(tmp_path), "--run-id", "p"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "p" / "perf.json").read_text())
    mlp = report["models"]["mlp"]
    assert set(mlp["qat_over_float"]) == {"qat-whole-w8", "qat-last3-w8", "qat-whole-w8-tfgrad"}
    for spread in mlp["qat_over_float"].values():
        assert spread["min"] <= spread["median"] <= spread["max"] and spread["min"] > 0
    assert mlp["latency"]["bytes"]["w8"] < mlp["latency"]["bytes"]["float"]
    assert "qat-whole-w8-tfgrad" in (tmp_path / "p" / "perf.md").read_text()


def test_perf_bad_model_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "harness", "perf", "--models", "nope", "--results", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "unknown model 'nope'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
