"""Accuracy of a .tflite model in the TFLite interpreter."""

from __future__ import annotations

import numpy as np

from harness.backend import tf


def interpreter(content: bytes, threads: int = 1) -> "tf.lite.Interpreter":
    return tf.lite.Interpreter(model_content=content, num_threads=threads)


def tflite_predict(content: bytes, x: np.ndarray, batch_size: int = 1000, threads: int = 1) -> np.ndarray:
    interp = interpreter(content, threads)
    inp = interp.get_input_details()[0]
    if inp["dtype"] not in (np.float32, np.int32, np.int64):
        raise TypeError(f"expected a float32 or integer token input, found {inp['dtype']}")
    outputs = []
    for start in range(0, len(x), batch_size):
        batch = np.ascontiguousarray(x[start:start + batch_size], dtype=inp["dtype"])
        interp.resize_tensor_input(inp["index"], batch.shape)
        interp.allocate_tensors()
        interp.set_tensor(inp["index"], batch)
        interp.invoke()
        outputs.append(interp.get_tensor(interp.get_output_details()[0]["index"]).copy())
    return np.concatenate(outputs)


def tflite_labels(content: bytes, x: np.ndarray, threads: int = 1) -> np.ndarray:
    """Predicted class of every example in the TFLite interpreter."""
    return np.argmax(tflite_predict(content, x, threads=threads), axis=-1)


def tflite_accuracy(content: bytes, x: np.ndarray, y: np.ndarray, threads: int = 1) -> float:
    return float(np.mean(tflite_labels(content, x, threads) == y))
