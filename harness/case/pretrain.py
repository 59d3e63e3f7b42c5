"""Float pre-training of a model with its tier's recipe (harness/design/config.py PretrainRecipe).

The default recipe is the suite's original loop (the tier's batch and learning rate, constant, float32),
called exactly as before, so tiers that keep it train the same numbers. A fast recipe changes three
things, each measured by ``python -m harness pretrain-speed`` (docs/performance.md):
- larger batches: at a batch of 32 a 2-core step is mostly per-step overhead (fit's loop, callbacks,
  small kernels), so images/s grow with the batch;
- a peak learning rate warmed up linearly, then decayed on a cosine to 0: fewer, larger steps need the
  higher rate, and the decay recovers the accuracy the constant rate leaves;
- bfloat16 compute (Keras' ``mixed_bfloat16``: the variables stay float32) where the CPU has native
  bf16 dot products; on a CPU without them bf16 is emulated and slower, so it trains in float32 there.
The trained weights are copied into the float32 model every later stage uses (control, QAT, conversion):
the variables are the same ones, only the compute dtype differed.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Callable

from harness import progress
from harness.backend import keras
from harness.case import train
from harness.design.config import TierConfig
from harness.models.data import Dataset

# /proc/cpuinfo flags of native bf16 dot products (oneDNN's bf16 convolutions and matmuls use them)
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class Resolved:
    """A recipe as it runs on this machine: every value concrete."""

    batch_size: int
    learning_rate: float
    schedule: str
    warmup_epochs: float
    precision: str  # "float32" or "mixed_bfloat16"

    @property
    def text(self) -> str:
        """One line for records and reports, e.g. 'batch 256, lr 0.003 cosine (warm-up 1 epoch), mixed_bfloat16'."""
        rate = f"lr {self.learning_rate:g} {self.schedule}"
        if self.warmup_epochs:
            rate += f" (warm-up {self.warmup_epochs:g} epoch{'s' if self.warmup_epochs != 1 else ''})"
        return f"batch {self.batch_size}, {rate}, {self.precision}"


def resolve(config: TierConfig, cpu_flags) -> Resolved:
    recipe = config.pretrain
    native = any(flag in set(cpu_flags) for flag in NATIVE_BF16_FLAGS)
    precision = "mixed_bfloat16" if recipe.precision == "bf16-where-native" and native else "float32"
    return Resolved(batch_size=recipe.batch_size or config.batch_size,
                    learning_rate=recipe.learning_rate or config.learning_rate,
                    schedule=recipe.schedule, warmup_epochs=recipe.warmup_epochs, precision=precision)


def learning_rate(resolved: Resolved, steps: int, per_epoch: int):
    """The optimizer's rate: a number for ``constant``, else a warm-up + cosine schedule over ``steps``."""
    if resolved.schedule == "constant":
        return resolved.learning_rate
    warmup = min(steps - 1, int(round(resolved.warmup_epochs * per_epoch)))
    if warmup <= 0:
        return keras.optimizers.schedules.CosineDecay(resolved.learning_rate, decay_steps=max(1, steps))
    return keras.optimizers.schedules.CosineDecay(0.0, decay_steps=steps - warmup, warmup_target=resolved.learning_rate,
                                                  warmup_steps=warmup)


@contextlib.contextmanager
def _policy(name: str):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


class Pretraining:
    """One pre-training run of ``build()`` with a resolved recipe, for ``epochs`` epochs of ``data``."""

    def __init__(self, build: Callable[[], "keras.Model"], resolved: Resolved, seed: int, data: Dataset,
                 epochs: int, xla: bool = False):
        train.set_seed(seed)
        self.build, self.resolved, self.seed, self.data = build, resolved, seed, data
        self.per_epoch = max(1, len(data.y_train) // resolved.batch_size)
        self.steps = self.per_epoch * epochs
        self.model = self._trainable()
        train.compile_for_training(self.model, learning_rate(resolved, self.steps, self.per_epoch), xla)

    def _trainable(self) -> "keras.Model":
        if self.resolved.precision == "float32":
            return self.build()
        with _policy(self.resolved.precision):
            inner = self.build()
        # the loss reads float32 logits: a softmax over bf16 logits (8 bits of mantissa) loses what the
        # cosine tail of the schedule fine-tunes
        logits = keras.layers.Activation("linear", dtype="float32", name="logits_float32")(inner.output)
        return keras.Model(inner.inputs, logits, name=f"{inner.name}_bf16")

    def fit(self, steps: int, shuffle_seed: int) -> float:
        """Train ``steps`` batches; returns the wall seconds."""
        start = time.perf_counter()
        train.fit_steps(self.model, self.data, steps, self.resolved.batch_size, shuffle_seed,
                        steps_per_epoch=self.per_epoch)
        return time.perf_counter() - start

    def float_model(self) -> "keras.Model":
        """The trained model in float32 (the model itself when it trained in float32)."""
        if self.resolved.precision == "float32":
            return self.model
        model = self.build()
        model.set_weights(self.model.get_weights())  # the wrapper's cast adds no weights: same order
        return model


def run(build: Callable[[], "keras.Model"], config: TierConfig, seed: int, data: Dataset, cpu_flags):
    """Pre-train for the tier's epochs in one fit (one shuffle stream, as the original loop).
    Returns (float32 model, its test accuracy, seconds, the resolved recipe)."""
    resolved = resolve(config, cpu_flags)
    run_ = Pretraining(build, resolved, seed, data, config.pretrain_epochs, config.train_step_xla)
    progress.begin_phase("pre-train")
    seconds = run_.fit(run_.steps, seed)
    model = run_.float_model()
    return model, train.keras_accuracy(model, data.x_test, data.y_test), seconds, resolved
