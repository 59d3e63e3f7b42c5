"""A user's own data from disk: an .npz of arrays or a folder of class sub-folders of images.
Pure numpy (Pillow for images, imported when a folder is read). Every problem is one line naming
the file and the value."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from harness.models.data import Dataset, stratified_split, subset

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
TEST_FRACTION = 0.2  # a folder without train/ and test/ is split 80/20 per class, with a fixed seed


class BadData(ValueError):
    """The data file cannot be used with the model; the message says which value is wrong."""


def load(path, input_shape: tuple, num_classes: int, train_size=None, test_size=None) -> Dataset:
    """The data at ``path`` for a model with ``input_shape`` (no batch axis) and ``num_classes``
    outputs, checked against both. ``train_size``/``test_size`` take a fixed subset (None: all)."""
    path = Path(path)
    if path.is_dir():
        x_train, y_train, x_test, y_test, classes = _image_folder(path, input_shape)
        source = f"image folder {path} ({', '.join(classes)})"
    elif path.suffix == ".npz":
        x_train, y_train, x_test, y_test = _npz(path)
        source = f"npz {path}"
    else:
        raise BadData(f"--qat-data {path}: expected an .npz file (x_train, y_train, x_test, y_test) or a folder of "
                      "class sub-folders of images")
    x_train, y_train = _checked(path, "train", x_train, y_train, input_shape, num_classes)
    x_test, y_test = _checked(path, "test", x_test, y_test, input_shape, num_classes)
    x_train, y_train = subset(x_train, y_train, train_size, seed=1)
    x_test, y_test = subset(x_test, y_test, test_size, seed=2)
    return Dataset(path.stem or path.name, x_train, y_train, x_test, y_test, num_classes, source)


def _npz(path: Path) -> tuple:
    try:
        # allow_pickle=False: an .npz from elsewhere must never run code when read
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in NPZ_KEYS if key not in archive.files]
            if missing:
                raise BadData(f"--qat-data {path}: missing key(s) {', '.join(missing)}; an .npz needs "
                              f"{', '.join(NPZ_KEYS)} (it has: {', '.join(archive.files) or 'nothing'})")
            return tuple(archive[key] for key in NPZ_KEYS)
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as exc:
        if isinstance(exc, BadData):
            raise
        raise BadData(f"--qat-data {path}: not a readable .npz ({type(exc).__name__}: "
                      f"{str(exc).splitlines()[0] if str(exc) else ''})") from None


def _labels(path: Path, split: str, y: np.ndarray, num_classes: int) -> np.ndarray:
    """Integer class ids; one-hot rows are accepted and turned into ids."""
    if y.ndim == 2 and y.shape[1] == num_classes and np.all((y == 0) | (y == 1)) and np.all(y.sum(axis=1) == 1):
        y = y.argmax(axis=1)
    if y.ndim != 1:
        raise BadData(f"--qat-data {path}: y_{split} has shape {y.shape}; expected one class id per example")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.floating) or not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise BadData(f"--qat-data {path}: y_{split} holds {y.dtype} values that are not class ids")
    y = y.astype("int64")
    bad = y[(y < 0) | (y >= num_classes)]
    if bad.size:
        raise BadData(f"--qat-data {path}: y_{split} has label {int(bad[0])} outside the model's {num_classes} "
                      f"classes (0..{num_classes - 1})")
    return y


def _checked(path: Path, split: str, x, y, input_shape: tuple, num_classes: int) -> tuple:
    x, y = np.asarray(x), np.asarray(y)
    if len(x) == 0 or len(y) == 0:
        raise BadData(f"--qat-data {path}: the {split} split is empty")
    if len(x) != len(y):
        raise BadData(f"--qat-data {path}: x_{split} has {len(x)} examples but y_{split} has {len(y)}")
    if tuple(x.shape[1:]) != tuple(input_shape):
        raise BadData(f"--qat-data {path}: x_{split} examples have shape {tuple(x.shape[1:])}, the model's input is "
                      f"{tuple(input_shape)}")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise BadData(f"--qat-data {path}: x_{split} has dtype {x.dtype}; expected numbers")
    dtype = "int32" if np.issubdtype(x.dtype, np.integer) and x.dtype.itemsize <= 4 and x.ndim == 2 else "float32"
    with np.errstate(over="ignore"):  # an overflow becomes inf, refused just below with the file's name
        x = x.astype(dtype)
    if dtype == "float32" and not np.all(np.isfinite(x)):  # after the cast: 1e300 in float64 is inf in float32
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(x))[0])
        raise BadData(f"--qat-data {path}: x_{split} holds NaN or infinite values (first at index {where}, "
                      f"{np.count_nonzero(~np.isfinite(x))} in all); training on them would only collapse")
    return x, _labels(path, split, y, num_classes)


def _image_folder(path: Path, input_shape: tuple) -> tuple:
    """train/ and test/ folders of class folders, or one folder of class folders split 80/20."""
    if (path / "train").is_dir() and (path / "test").is_dir():
        classes = _classes(path / "train")
        x_train, y_train = _read_images(path / "train", classes, input_shape)
        x_test, y_test = _read_images(path / "test", classes, input_shape)
        return x_train, y_train, x_test, y_test, classes
    classes = _classes(path)
    x, y = _read_images(path, classes, input_shape)
    train, test = stratified_split(y, TEST_FRACTION, seed=1234)
    return x[train], y[train], x[test], y[test], classes


def _classes(folder: Path) -> list:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise BadData(f"--qat-data {folder}: no class sub-folders (expected e.g. {folder}/cat/*.png, {folder}/dog/*.png)")
    return classes


def _read_images(folder: Path, classes: list, input_shape: tuple) -> tuple:
    from PIL import Image, UnidentifiedImageError

    if len(input_shape) != 3 or input_shape[-1] not in (1, 3):
        raise BadData(f"--qat-data {folder}: an image folder needs a model input of (height, width, 1 or 3), "
                      f"the model's is {tuple(input_shape)}")
    height, width, channels = input_shape
    xs, ys = [], []
    for label, name in enumerate(classes):
        found = 0
        for file in sorted((folder / name).iterdir()) if (folder / name).is_dir() else ():
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if not file.is_file():  # a FIFO or device would block or never end: refused, never opened
                raise BadData(f"--qat-data {file}: not a regular file")
            found += 1
            try:
                with Image.open(file) as image:
                    image = image.convert("L" if channels == 1 else "RGB").resize((width, height))
                    pixels = np.asarray(image, dtype="float32") / 255.0  # scaled to [0, 1]
            except (OSError, UnidentifiedImageError) as exc:
                raise BadData(f"--qat-data {file}: not a readable image ({type(exc).__name__})") from None
            xs.append(pixels.reshape(height, width, channels))
            ys.append(label)
        if not found:
            raise BadData(f"--qat-data {folder / name}: class folder holds no image ({', '.join(IMAGE_SUFFIXES)})")
    if len(classes) < 2:
        raise BadData(f"--qat-data {folder}: {len(classes)} class folder ({', '.join(classes)}); a classifier "
                      "needs at least 2")
    if not xs:
        return np.zeros((0, height, width, channels), "float32"), np.zeros((0,), "int64")
    return np.stack(xs), np.asarray(ys, dtype="int64")
