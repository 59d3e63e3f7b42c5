"""Accuracy of a .tflite model, measured in LiteRT (ai-edge-litert), the runtime devices ship.

``tf.lite.Interpreter`` is deprecated in favour of LiteRT and may run other kernel versions, so it is
only the fallback for a model LiteRT cannot load or run. Every output says which runtime computed it
(``Measured.runtime``: "ai-edge-litert 2.3.0", or "tf.lite 2.21.0 (LiteRT failed: <why>)"), and
the case record carries it as ``tflite_runtime``: a fallback is never silent.
"""

from __future__ import annotations

from importlib import metadata

import numpy as np

from harness.backend import tf

LITERT, TFLITE = "litert", "tflite"  # the two runtimes ``interpreter`` can build


def _litert_interpreter(content: bytes, threads: int):
    # imported here, not at module level: a missing or broken wheel is then one model's load
    # failure, which falls back to tf.lite and says so, instead of breaking every import of the harness
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=content, num_threads=threads)


def _tflite_interpreter(content: bytes, threads: int):
    return tf.lite.Interpreter(model_content=content, num_threads=threads)


# Runtime -> loader; tests replace an entry to make a runtime fail.
LOADERS = {LITERT: _litert_interpreter, TFLITE: _tflite_interpreter}


def runtime_name(runtime: str) -> str:
    """Package and version of a runtime, as records name it."""
    if runtime == LITERT:
        try:
            return f"ai-edge-litert {metadata.version('ai-edge-litert')}"
        except metadata.PackageNotFoundError:
            return "ai-edge-litert (not installed)"
    return f"tf.lite {tf.__version__}"


def interpreter(content: bytes, threads: int = 1, runtime: str = LITERT):
    """An interpreter of ``content`` in ``runtime`` (no fallback: the caller asked for this runtime)."""
    if runtime not in LOADERS:
        raise ValueError(f"unknown runtime {runtime!r}, expected one of {sorted(LOADERS)}")
    return LOADERS[runtime](content, threads)


class Measured(np.ndarray):
    """Outputs or labels of a .tflite model that carry the name of the runtime that computed them."""

    runtime: str | None = None

    def __array_finalize__(self, obj):
        # views and results computed from a Measured keep its runtime (argmax, slices, comparisons)
        self.runtime = getattr(obj, "runtime", None)

    @classmethod
    def of(cls, values: np.ndarray, runtime: str) -> "Measured":
        out = np.asarray(values).view(cls)
        out.runtime = runtime
        return out


class InputError(TypeError):
    """An input the harness cannot feed: the same in every runtime, so no reason to fall back."""


def _run(interp, x: np.ndarray, batch_size: int) -> np.ndarray:
    inp = interp.get_input_details()[0]
    if inp["dtype"] not in (np.float32, np.int32, np.int64):
        raise InputError(f"expected a float32 or integer token input, found {inp['dtype']}")
    outputs = []
    for start in range(0, len(x), batch_size):
        batch = np.ascontiguousarray(x[start:start + batch_size], dtype=inp["dtype"])
        interp.resize_tensor_input(inp["index"], batch.shape)
        interp.allocate_tensors()
        interp.set_tensor(inp["index"], batch)
        interp.invoke()
        outputs.append(interp.get_tensor(interp.get_output_details()[0]["index"]).copy())
    return np.concatenate(outputs)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


def run_in(runtime: str, content: bytes, x: np.ndarray, batch_size: int = 1000, threads: int = 1) -> Measured:
    """Outputs of every example in ``runtime``, no fallback (tests compare the two runtimes with it)."""
    return Measured.of(_run(interpreter(content, threads, runtime), x, batch_size), runtime_name(runtime))


def tflite_predict(content: bytes, x: np.ndarray, batch_size: int = 1000, threads: int = 1) -> Measured:
    """Outputs of every example in LiteRT; in tf.lite if LiteRT cannot load or run the model, with
    LiteRT's error in ``runtime``. An InputError is not a runtime failure and is raised as is."""
    try:
        return run_in(LITERT, content, x, batch_size, threads)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - LiteRT raises RuntimeError, ValueError, ImportError...
        reason = one_line(exc)
    outputs = run_in(TFLITE, content, x, batch_size, threads)
    return Measured.of(outputs, f"{outputs.runtime} (LiteRT failed: {reason})")


def tflite_labels(content: bytes, x: np.ndarray, threads: int = 1) -> Measured:
    """Predicted class of every example (``.runtime`` names the runtime, see tflite_predict)."""
    outputs = tflite_predict(content, x, threads=threads)
    return Measured.of(np.argmax(outputs, axis=-1), outputs.runtime)


def tflite_accuracy(content: bytes, x: np.ndarray, y: np.ndarray, threads: int = 1) -> float:
    return float(np.mean(tflite_labels(content, x, threads) == y))
