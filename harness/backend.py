"""The one place that imports TensorFlow, tf_keras and tfmot.

tfmot works only with Keras 2; with TF >= 2.16 ``tf.keras`` is Keras 3 unless
``TF_USE_LEGACY_KERAS=1`` is set before TensorFlow is first imported.
"""

import os

import harness

harness.set_tf_environment()

import warnings  # noqa: E402

warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
from tensorflow.lite.python import schema_py_generated as tflite_schema  # noqa: E402
from tensorflow_model_optimization.python.core.quantization.keras import quant_ops  # noqa: E402

if not keras.__version__.startswith("2."):  # pragma: no cover - environment guard
    raise ImportError(f"qatbench needs Keras 2 (tf_keras), found Keras {keras.__version__}")

quantize = tfmot.quantization.keras

__all__ = ["tf", "keras", "tfmot", "quantize", "quant_ops", "tflite_schema", "versions", "numerics", "set_threads"]


def versions() -> dict:
    return {
        "tensorflow": tf.__version__,
        "tf_keras": keras.__version__,
        "tfmot": getattr(tfmot, "__version__", "unknown"),
    }


def set_threads(threads: int) -> None:
    """Intra- and inter-op threads (0 keeps TensorFlow's default); before the first op runs."""
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def numerics() -> dict:
    """Settings that change rounding, not the experiment: like another CPU, they are recorded and
    key the caches (a cached model is reused only under the same numerics), but stay out of the
    config hash, so the regression gate compares runs across them and measures how far they move."""
    return {
        "onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "fast_fakequant_grad": os.environ.get("QATBENCH_FAST_FAKEQUANT_GRAD", "1"),
    }
