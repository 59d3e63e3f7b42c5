"""Pre-trained float baselines: trained once per (spec, tier, seed), shared by cases and xdist workers.

A file lock makes concurrent workers train a baseline once; weights are written to a temp
file and renamed, so a killed process never leaves a half-written cache entry behind.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Optional

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
        _write_atomic(weights, lambda tmp: model.save_weights(str(tmp)))
        _write_atomic(meta, lambda tmp: tmp.write_text(json.dumps(
            {"accuracy": accuracy, "train_s": seconds, "key": key, "data": data.describe()}, indent=1)))
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


@dataclass(frozen=True)
class Control:
    """The float control of a (model, tier, seed): the pre-trained model fine-tuned for the tier's
    steps without quantization, with its .tflite and accuracies. Every case of that model compares
    against the same control, so it is fine-tuned once and shared like the pre-trained baseline."""

    model: "keras.Model"
    tflite: bytes
    keras_accuracy: float
    tflite_accuracy: float
    stats: Optional[train.TrainStats]  # None when loaded: its fit timings belong to another case
    key: str
    cached: bool


def _pipeline_code_hash() -> str:
    """Source of what shapes a control: fine-tuning, annotation/cloning, conversion, evaluation."""
    import inspect

    from . import evaluate, export, quantize
    from .backend import versions

    return stable_hash([inspect.getsource(m) for m in (train, quantize, export, evaluate)] + [versions()])


def float_control(base: Pretrained, produce: Callable[[], Control], rebuild: Callable[[], "keras.Model"],
                  cache_dir: Path = DEFAULT_CACHE_DIR) -> Control:
    """The control for ``base``: loaded if cached, else ``produce()``d and stored (locked, atomic).
    ``rebuild()`` returns the compiled float architecture the cached weights are loaded into."""
    key = f"{base.key}-control-{_pipeline_code_hash()}"
    memo = (str(Path(cache_dir).resolve()), key)
    if memo in _IN_MEMORY:  # this process loaded or trained it already: its train step is traced too
        return _IN_MEMORY[memo]
    control = _load_or_produce(key, base, produce, rebuild, cache_dir)
    _IN_MEMORY.clear()  # cases run model by model: keep only the latest control in memory
    _IN_MEMORY[memo] = replace(control, cached=True, stats=None)
    return control


_IN_MEMORY: dict = {}


def _load_or_produce(key: str, base: Pretrained, produce, rebuild, cache_dir: Path) -> Control:
    folder = Path(cache_dir) / base.key / f"control-{key.rsplit('-', 1)[-1]}"
    folder.mkdir(parents=True, exist_ok=True)
    weights, tflite, meta = folder / "weights.h5", folder / "control.tflite", folder / "meta.json"
    with FileLock(str(folder / ".lock")):
        if weights.exists() and tflite.exists() and meta.exists():
            model = rebuild()
            model.load_weights(str(weights))
            info = json.loads(meta.read_text())
            return Control(model, tflite.read_bytes(), info["keras_accuracy"], info["tflite_accuracy"],
                           None, key, True)
        control = produce()
        _write_atomic(weights, lambda tmp: control.model.save_weights(str(tmp)))
        _write_atomic(tflite, lambda tmp: tmp.write_bytes(control.tflite))
        _write_atomic(meta, lambda tmp: tmp.write_text(json.dumps({
            "keras_accuracy": control.keras_accuracy, "tflite_accuracy": control.tflite_accuracy,
            "key": key, "stats": asdict(control.stats) if control.stats else None}, indent=1)))
        return Control(control.model, control.tflite, control.keras_accuracy, control.tflite_accuracy,
                       control.stats, key, False)


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Cache files are written beside their final name and renamed: a killed process leaves no
    half-written entry (records use records.write_text_atomic; weights files need a path to write to)."""
    tmp = path.with_name(f"{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
