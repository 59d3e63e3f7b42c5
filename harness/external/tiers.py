"""The ModelSpec of a user's model file (--qat-model-file): tiers sized to its unit count, and
thresholds from the spec defaults. Pure: the model was loaded and its units counted elsewhere."""

from __future__ import annotations

import re
from pathlib import Path

from harness.design.config import TierConfig
from harness.design.registry import ModelSpec, Ref
from harness.design.thresholds import Thresholds

ALL_BITS = tuple(range(2, 9))
SMOKE_N = (0, 1, 3)  # plus L: a few cuts, cheap enough to run before a long sweep
FULL_N_LIMIT = 12  # up to this many units, the full tier tries every N; beyond it a doubling grid


def spec_name(path) -> str:
    """The case-id prefix of a model file: its stem in lower case, other characters as "_"."""
    stem = re.sub(r"[^a-z0-9_]", "_", Path(path).stem.lower()).strip("_") or "model"
    return stem if stem[0].isalpha() else f"m_{stem}"[:40]


def n_grid(units: int, tier: str) -> tuple:
    if tier == "smoke":
        return tuple(sorted({n for n in SMOKE_N if n <= units} | {units}))
    if units <= FULL_N_LIMIT:
        return tuple(range(units + 1))
    doubling = {0, units}
    n = 1
    while n < units:
        doubling.add(n)
        n *= 2
    return tuple(sorted(doubling))


def tiers(units: int) -> dict:
    """No pre-training (the file is the trained float model): a seed changes only the fine-tuning."""
    common = dict(train_size=None, test_size=None, pretrain_epochs=0, pretrain_per_seed=False,
                  timing_seeds=(0,), timing_rounds=2)
    return {
        "smoke": TierConfig(finetune_steps=100, n_values=n_grid(units, "smoke"), bits=(8, 4), seeds=(0, 1, 2),
                            timing_steps=3, **common),
        "full": TierConfig(finetune_steps=500, n_values=n_grid(units, "full"), bits=(8, 4),
                           orders=("last", "first", "single", "type"), seeds=(0, 1, 2), methods=("qat", "ptq"),
                           **common),
        "reference": TierConfig(finetune_steps=200, n_values=n_grid(units, "full"), bits=(8, 4),
                                orders=("last", "first"), seeds=(0, 1, 2), methods=("qat", "ptq"), **common),
    }


def thresholds(max_drop_pp, num_classes: int, majority: float, n_test: int) -> Thresholds:
    """The spec defaults, except what depends on the model and data: no whole-model compression
    target (it depends on the architecture), a control floor a quarter of the way from chance (the
    majority class: a control at chance is a failure) to perfect, and a TFLite-vs-Keras tolerance
    of at least two test examples."""
    defaults = Thresholds()
    drop = tuple((bits, float(max_drop_pp)) for bits in ALL_BITS) if max_drop_pp is not None else defaults.max_drop_pp
    return Thresholds(max_drop_pp=drop, min_whole_compression=(),
                      min_control_accuracy=round(majority + (1.0 - majority) / 4, 4),
                      tflite_vs_keras_pp=max(defaults.tflite_vs_keras_pp, 200.0 / max(1, n_test)))


def spec_from_counts(model_path, data_path, custom: str, input_shape: tuple, num_classes: int, units: int,
                    kinds: tuple, limits: Thresholds, keep_float: bool, trust: bool = False) -> ModelSpec:
    """The spec whose builder loads the file and whose loader reads the data (both bound by path);
    ``trust``: built by model_file.build_trusted (--qat-trust-model-file), which may run the file's code."""
    name = spec_name(model_path)
    builder = "harness.external.model_file:build_trusted" if trust else "harness.external.model_file:build"
    return ModelSpec(
        name=name,
        builder=Ref(builder, (str(model_path), custom or "")),
        dataset=Ref("harness.external.data_files:load", (str(data_path), tuple(input_shape), num_classes)),
        input_shape=tuple(input_shape), num_units=units, unit_kinds=tuple(kinds), thresholds=limits,
        tiers=tiers(units), description=f"{model_path} on {data_path}", keep_unsupported_float=keep_float,
    )
