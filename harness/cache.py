"""Pre-trained float baselines: trained once per (spec, tier, seed), shared by cases and xdist workers.

A file lock makes concurrent workers train a baseline once; weights are written to a temp
file and renamed, so a killed process never leaves a half-written cache entry behind.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from . import train
from .backend import keras
from .data import Dataset
from .config import stable_hash
from .registry import ModelSpec

DEFAULT_CACHE_DIR = Path(os.environ.get("QATBENCH_CACHE", ".qatbench-cache"))


@dataclass(frozen=True)
class Pretrained:
    model: "keras.Model"
    key: str
    accuracy: float  # float Keras accuracy on the test split
    train_s: float  # time it took to pre-train (0 if this process did not train it)
    cached: bool


def build(spec: ModelSpec, data: Dataset) -> "keras.Model":
    return spec.builder.load()(spec.input_shape, data.num_classes)


def code_hash(spec: ModelSpec) -> str:
    """Hash of the builder's and loader's source, so editing a model invalidates its cached weights."""
    import inspect

    sources = [inspect.getsource(ref.load()) for ref in (spec.builder, spec.dataset)]
    return stable_hash(sources)


def cache_key(spec: ModelSpec, tier: str, seed: int) -> str:
    user_weights = os.environ.get(spec.weights_env, "") if spec.weights_env else ""
    return f"{spec.name}-{tier}-s{seed}-{stable_hash([spec.fingerprint(tier), code_hash(spec), user_weights])}"


def pretrained(spec: ModelSpec, tier: str, seed: int, data: Dataset, cache_dir: Path = DEFAULT_CACHE_DIR) -> Pretrained:
    key = cache_key(spec, tier, seed)
    folder = Path(cache_dir) / key
    folder.mkdir(parents=True, exist_ok=True)
    weights, meta = folder / "weights.h5", folder / "meta.json"
    with FileLock(str(folder / ".lock")):
        if weights.exists() and meta.exists():
            model = build(spec, data)
            model.load_weights(str(weights))
            info = json.loads(meta.read_text())
            return Pretrained(model, key, info["accuracy"], 0.0, True)
        model, accuracy, seconds = _train(spec, tier, seed, data)
        tmp = folder / f"weights.tmp-{os.getpid()}.h5"
        model.save_weights(str(tmp))
        os.replace(tmp, weights)
        tmp_meta = folder / f"meta.tmp-{os.getpid()}.json"
        tmp_meta.write_text(json.dumps({"accuracy": accuracy, "train_s": seconds, "key": key,
                                        "data": data.describe()}, indent=1))
        os.replace(tmp_meta, meta)
        return Pretrained(model, key, accuracy, seconds, False)


def _train(spec: ModelSpec, tier: str, seed: int, data: Dataset):
    config = spec.tier(tier)
    train.set_seed(seed)
    model = build(spec, data)
    train.compile_for_training(model, config.learning_rate)
    steps = max(1, len(data.y_train) // config.batch_size) * config.pretrain_epochs
    start = time.perf_counter()
    train.fit_steps(model, data, steps, config.batch_size, seed)
    seconds = time.perf_counter() - start
    return model, train.keras_accuracy(model, data.x_test, data.y_test), seconds
