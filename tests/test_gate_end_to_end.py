"""The gate on real runs: a small model re-measured with other numerics (oneDNN off) passes its own
baseline, and the same model with a deliberately broken quantizer fails it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.tf, pytest.mark.slow]
SELECTION = ["-k", "mlp-last1-w8a8 or mlp-last3-w8a8 or mlp-last5-w8a8", "--qat-bits", "8", "--qat-seeds", "0,1,2"]


def run_suite(tmp_path, run_id, *extra, onednn="1", plugins=()):
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=onednn, PYTHONPATH=str(ROOT / "tests" / "plugins"))
    args = [sys.executable, "-m", "pytest", "benchmarks", "-p", "no:cacheprovider", "-q", *SELECTION,
            "--qat-results", str(tmp_path / "results"), "--qat-run-id", run_id,
            "--qat-cache", str(tmp_path / f"cache-onednn{onednn}")]
    for plugin in plugins:
        args += ["-p", plugin]
    return subprocess.run(args + list(extra), cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)


def test_other_numerics_pass_and_a_broken_quantizer_fails(tmp_path):
    saved = tmp_path / "baseline.json"
    first = run_suite(tmp_path, "saved", "--qat-save-baseline", str(saved))
    assert first.returncode == 0, first.stdout[-3000:]
    gate = ["--qat-baseline", str(saved), "--qat-strict-baseline"]
    other = run_suite(tmp_path, "onednn-off", *gate, onednn="0")
    assert other.returncode == 0, other.stdout[-3000:]
    assert "baseline gate" in other.stdout and "regressed" not in other.stdout
    broken = run_suite(tmp_path, "broken", *gate, plugins=("break_w8_as_w2",))
    assert broken.returncode != 0, broken.stdout[-3000:]
    assert "baseline regressed" in broken.stdout, broken.stdout[-3000:]
    for done in (first, other, broken):  # the session end and its summary ran without an internal error
        assert "summary failed" not in done.stdout and "session end:" not in done.stdout, done.stdout[-3000:]
