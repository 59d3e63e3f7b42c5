"""The pre-training cache key holds what shapes a pre-trained model's numerics (harness/case/cache.py
key_material): the TensorFlow thread counts in effect and the numerics settings. A full test run once served
the smoke tier mlp models pre-trained at --qat-threads 1 by a test (mlp s0 0.951 instead of 0.942)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.tf

CHILD = """
import json, sys
from harness.backend import set_threads
set_threads(int(sys.argv[1]))  # as the session does with --qat-threads, before the first op
from harness.case import cache
from harness.design import registry
spec = registry.get("mlp")
print(json.dumps({"key": cache.cache_key(spec, "smoke", 0), "threads": cache.threads_in_effect()}))
"""


def key_with_threads(threads: int) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", CHILD, str(threads)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_two_thread_settings_give_two_keys():
    one, two = key_with_threads(1), key_with_threads(2)
    assert one["threads"]["intra_op"] == one["threads"]["inter_op"] == 1
    assert two["threads"]["intra_op"] == two["threads"]["inter_op"] == 2
    assert one["key"] != two["key"]


def test_the_default_thread_count_is_keyed_as_the_cpus_this_process_may_use():
    """TensorFlow's default (0) runs one intra-op thread per CPU: keyed as that count, so a run at the
    default and one at --qat-threads with that many share their entries."""
    from harness.backend import tf
    from harness.case import cache

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    configured = tf.config.threading.get_intra_op_parallelism_threads()
    assert cache.threads_in_effect()["intra_op"] == (configured or cpus)


@pytest.fixture
def mlp():
    from harness.design import registry

    return registry.get("mlp")


def test_the_onednn_switch_and_other_numerics_variables_change_the_key(mlp, monkeypatch):
    from harness.case import cache

    for name in cache.NUMERICS_ENV + ("TF_ENABLE_ONEDNN_OPTS",):
        monkeypatch.delenv(name, raising=False)
    plain = cache.cache_key(mlp, "smoke", 0)
    assert cache.key_material(mlp, "smoke", 0)["numerics_env"] == {}  # unset: the default, not in the key
    keys = {plain}
    for name, value in (("TF_ENABLE_ONEDNN_OPTS", "0"), ("ONEDNN_MAX_CPU_ISA", "AVX2"),
                        ("ONEDNN_DEFAULT_FPMATH_MODE", "BF16"), ("XLA_FLAGS", "--xla_cpu_enable_fast_math=true")):
        monkeypatch.setenv(name, value)
        keys.add(cache.cache_key(mlp, "smoke", 0))
        monkeypatch.delenv(name)
    assert len(keys) == 5 and cache.cache_key(mlp, "smoke", 0) == plain


def test_thread_counts_in_the_key_material_are_those_tensorflow_runs(mlp, monkeypatch):
    from harness.backend import tf
    from harness.case import cache

    monkeypatch.setattr(tf.config.threading, "get_intra_op_parallelism_threads", lambda: 3)
    three = cache.key_material(mlp, "smoke", 0)
    monkeypatch.setattr(tf.config.threading, "get_intra_op_parallelism_threads", lambda: 4)
    four = cache.key_material(mlp, "smoke", 0)
    assert (three["threads"]["intra_op"], four["threads"]["intra_op"]) == (3, 4)
    assert cache.cache_key(mlp, "smoke", 0, three) != cache.cache_key(mlp, "smoke", 0, four)
