"""Pre-training and fine-tuning, with per-step timing and a NaN guard."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from harness.backend import keras, tf
from harness import progress
from harness.case import weight_ranges
from harness.models.data import Dataset

WARMUP_STEPS = 3  # the first steps trace the graph; they are not step time


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainStats:
    steps: int
    step_ms_median: float
    step_ms_min: float
    wall_s: float
    final_loss: float


class _StepTimer(keras.callbacks.Callback):
    """Per-step wall time and loss (and the live progress, which does nothing unless a reporter listens)."""

    def __init__(self, steps: int = 0, steps_per_epoch: int = 0):
        super().__init__()
        self.times, self.losses, self._start = [], [], 0.0
        self.steps, self.steps_per_epoch = steps, steps_per_epoch

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._start)
        loss = float((logs or {}).get("loss", 0.0))
        self.losses.append(loss)
        progress.step(len(self.losses), self.steps, self.steps_per_epoch)
        if not math.isfinite(loss):
            self.model.stop_training = True


def set_seed(seed: int) -> None:
    keras.utils.set_random_seed(seed)


def compile_for_training(model: "keras.Model", learning_rate: float, xla: bool = False) -> None:
    """``xla``: the whole train step as one XLA-compiled function (TierConfig.train_step_xla)."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=xla,
    )


def _train_dataset(data: Dataset, batch_size: int, seed: int, options=None) -> "tf.data.Dataset":
    ds = tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train))
    ds = ds.shuffle(len(data.y_train), seed=seed, reshuffle_each_iteration=True)
    ds = ds.repeat().batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return ds.with_options(options) if options is not None else ds


def fit_steps(model: "keras.Model", data: Dataset, steps: int, batch_size: int, seed: int,
              dataset_options=None, callbacks=(), steps_per_epoch: int = 0) -> TrainStats:
    """Train a compiled model for exactly ``steps`` batches. Raises TrainingDiverged on NaN/inf loss.
    Under a tf.distribute strategy, ``batch_size`` is the global batch and ``dataset_options`` carries
    the shard policy (harness/distributed/strategy.py); ``callbacks`` run after the step timer.
    ``steps_per_epoch`` only labels the live progress (harness/progress.py) in epochs."""
    timer, ranges = _StepTimer(steps, steps_per_epoch), weight_ranges.RangeSync(steps)
    start = time.perf_counter()
    with weight_ranges.skipping():
        model.fit(_train_dataset(data, batch_size, seed, dataset_options), steps_per_epoch=steps, epochs=1,
                  callbacks=[timer, ranges, *callbacks], verbose=0)
    wall = time.perf_counter() - start
    weight_ranges.retire_fit_step(model)
    if timer.losses and not math.isfinite(timer.losses[-1]):
        raise TrainingDiverged(f"loss became {timer.losses[-1]} at step {len(timer.losses)}")
    if ranges.unsynced():
        raise RuntimeError(f"qatbench: fit stopped after {len(timer.losses)} of {steps} steps, before the "
                           "weight ranges the steps skipped could be assigned")
    timed = np.array(timer.times[WARMUP_STEPS:] or timer.times) * 1000.0
    return TrainStats(steps=len(timer.times), step_ms_median=float(np.median(timed)),
                      step_ms_min=float(np.min(timed)), wall_s=wall,
                      final_loss=float(timer.losses[-1]) if timer.losses else float("nan"))


def keras_outputs(model: "keras.Model", x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Outputs of every example, in Keras (fake-quant models simulate their bit width)."""
    return model.predict(x, batch_size=batch_size, verbose=0)


def keras_labels(model: "keras.Model", x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Predicted class of every example, in Keras (fake-quant models simulate their bit width)."""
    return np.argmax(keras_outputs(model, x, batch_size), axis=-1)


def keras_accuracy(model: "keras.Model", x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    return float(np.mean(keras_labels(model, x, batch_size) == y))


def side_by_side_step_ms(models: dict, data: Dataset, batch_size: int, rounds: int = 3, steps: int = 10,
                         per_round: bool = False) -> dict:
    """Median train-step time (ms) of each compiled model, timed in alternating rounds so machine
    noise hits all of them alike. Calls each model's compiled train function directly (what fit
    runs per step; fit's traced one when there is one), without fit's per-step Python callbacks.
    The models' weights are restored afterwards (optimizer slots are not).
    With ``per_round`` the result is a list of per-round medians per model."""
    runners, saved = {}, {name: model.get_weights() for name, model in models.items()}
    for name, model in models.items():
        iterator = iter(_train_dataset(data, batch_size, seed=0))
        step = weight_ranges.fit_step(model) or model.train_function or model.make_train_function()
        for _ in range(WARMUP_STEPS):
            step(iterator)
        runners[name] = (step, iterator)
    samples = {name: [] for name in models}
    for _ in range(rounds):
        for name, (step, iterator) in runners.items():
            times = []
            for _ in range(steps):
                start = time.perf_counter()
                logs = step(iterator)
                float(logs["loss"])  # wait for the step to finish
                times.append(time.perf_counter() - start)
            samples[name].append(times)
    for name, model in models.items():
        model.set_weights(saved[name])
    if per_round:
        return {name: [float(np.median(t)) * 1000.0 for t in rounds_] for name, rounds_ in samples.items()}
    return {name: float(np.median(np.concatenate(rounds_))) * 1000.0 for name, rounds_ in samples.items()}
