"""qatbench harness: the library behind the benchmark cases.

The subpackages follow the pipeline: spec (what a case is) -> models (builders and data) -> case (pre-train,
select, quantize, fine-tune, export, audit, evaluate) -> distributed (several devices or workers) ->
results (records, thresholds, baseline gate) -> analysis (fits, order test, planner, report).
spec, results and analysis import no TensorFlow; harness/backend.py is the one module that does.
"""

import os

__version__ = "0.7.0"  # the one version string (pyproject.toml reads it)


def set_tf_environment(env=None):
    """What TensorFlow must see before it is first imported, in one place: Keras 2 (tfmot needs it),
    quiet C++ logs, and oneDNN kernels on (on the AMD EPYC machines they made conv training 2.5-3x
    faster; they are only on by default on some Intel CPUs). Override oneDNN with TF_ENABLE_ONEDNN_OPTS=0.
    Applied to os.environ, or to a child process's environment."""
    env = os.environ if env is None else env
    env["TF_USE_LEGACY_KERAS"] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    return env
