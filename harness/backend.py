"""The one place that imports TensorFlow, tf_keras and tfmot.

tfmot works only with Keras 2; with TF >= 2.16 ``tf.keras`` is Keras 3 unless
``TF_USE_LEGACY_KERAS=1`` is set before TensorFlow is first imported.
"""

import copy
import functools
import os
import shutil
import subprocess

import harness

harness.set_tf_environment()

import warnings  # noqa: E402

warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
from tensorflow.lite.python import schema_py_generated as tflite_schema  # noqa: E402
from tensorflow_model_optimization.python.core.quantization.keras import quant_ops  # noqa: E402
from tensorflow_model_optimization.python.core.quantization.keras.quantize_aware_activation import (  # noqa: E402
    QuantizeAwareActivation)
from tensorflow.python.ops import control_flow_util  # noqa: E402  (how tf.function knows it is under XLA)
# While it is on, tf_keras refuses to unmarshal a Lambda's Python bytecode from a model file (.h5,
# SavedModel; load_model's safe_mode argument covers only .keras): harness/external/model_file.py
from tf_keras.src.saving.serialization_lib import SafeModeScope as safe_mode_scope  # noqa: E402

if not keras.__version__.startswith("2."):  # pragma: no cover - environment guard
    raise ImportError(f"qatbench needs Keras 2 (tf_keras), found Keras {keras.__version__}")

# Random layers (mlp's Dropout) draw from tf.random.Generator instead of TensorFlow's legacy stateful
# random ops, which an XLA-compiled train step (mlp's: TierConfig.train_step_xla) does not reproduce from
# the seed: two seeded runs gave different weights. The Generator does, with and without XLA. Set before
# any layer is built (a layer picks its generator when constructed); versions() records it.
keras.backend.experimental.enable_tf_random_generator()

quantize = tfmot.quantization.keras

__all__ = ["tf", "keras", "tfmot", "quantize", "quant_ops", "QuantizeAwareActivation", "control_flow_util",
           "tflite_schema", "versions", "numerics", "set_threads", "ThreadsFixed", "devices", "safe_mode_scope"]


def versions() -> dict:
    return {
        "tensorflow": tf.__version__,
        "tf_keras": keras.__version__,
        "tfmot": getattr(tfmot, "__version__", "unknown"),
        "keras_rng": "generator" if keras.backend.experimental.is_tf_random_generator_enabled() else "legacy",
    }


class ThreadsFixed(RuntimeError):
    """TensorFlow already runs with other threads: they cannot change in this process."""


def set_threads(threads: int) -> None:
    """Intra- and inter-op threads (0 keeps TensorFlow's default), before the first op runs. A no-op when
    TensorFlow already has these; ThreadsFixed (one line) when it started with others."""
    if not threads:
        return
    threading = tf.config.threading
    current = (threading.get_intra_op_parallelism_threads(), threading.get_inter_op_parallelism_threads())
    if current == (threads, threads):
        return
    try:
        threading.set_intra_op_parallelism_threads(threads)
        threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        raise ThreadsFixed(f"--qat-threads {threads}: TensorFlow already runs in this process with {current[0]} "
                           f"intra-op and {current[1]} inter-op threads (0: its default), set before the option "
                           "could apply; run without --qat-threads, or start TensorFlow later") from None


def numerics() -> dict:
    """Settings that change rounding, not the experiment: like another CPU, they are recorded and
    key the caches (a cached model is reused only under the same numerics), but stay out of the
    config hash, so the regression gate compares runs across them and measures how far they move."""
    return {
        "onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "fast_fakequant_grad": os.environ.get("QATBENCH_FAST_FAKEQUANT_GRAD", "1"),
        "xla_fakequant": os.environ.get("QATBENCH_XLA_FAKEQUANT", "1"),
        "native_fakequant": os.environ.get("QATBENCH_NATIVE_FAKEQUANT", "1"),
    }


def devices() -> dict:
    """The accelerators TensorFlow sees and the CUDA stack it was built for, recorded in each run's
    ``env`` (not in ``versions()``/``numerics()``: those key hashes and caches, and a record from a
    GPU runner must stay comparable with one from a CPU). A copy: callers may edit their record."""
    return copy.deepcopy(_devices())


@functools.lru_cache(maxsize=None)  # nvidia-smi can take seconds: once per process, not per case
def _devices() -> dict:
    gpus = []
    for device in tf.config.list_physical_devices("GPU"):  # lists without initializing the runtime
        details = tf.config.experimental.get_device_details(device)
        capability = details.get("compute_capability")
        gpus.append({"name": device.name, "device_name": details.get("device_name"),
                     "compute_capability": ".".join(map(str, capability)) if capability else None})
    build = tf.sysconfig.get_build_info()
    names = ", ".join(sorted({g["device_name"] or g["name"] for g in gpus}))
    return {
        "gpus": gpus,
        "summary": f"{len(gpus)} GPU: {names}" if gpus else "no GPU visible to TensorFlow: CPU only",
        "driver": _nvidia_driver(),
        # What TensorFlow was built against (its [and-cuda] extra pulls matching CUDA/cuDNN wheels),
        # not a probe of the libraries loaded: those must match it or TensorFlow lists no GPU.
        "cuda_version": build.get("cuda_version"),
        "cudnn_version": build.get("cudnn_version"),
        "is_cuda_build": bool(build.get("is_cuda_build", False)),
    }


def _nvidia_driver() -> str | None:
    """The NVIDIA driver version from nvidia-smi, or None where it is absent, hangs or fails: a
    record must be written even on a machine whose driver is broken."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return None
    try:
        done = subprocess.run([binary, "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    found = sorted({line.strip() for line in done.stdout.splitlines() if line.strip()})
    return ", ".join(found) if done.returncode == 0 and found else None
