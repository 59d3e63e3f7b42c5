import gzip
import struct

import numpy as np
import pytest

from harness.models import data


def write_idx(path, array, type_code=0x08):
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(">u1" if type_code == 0x08 else ">i4").tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as handle:
        handle.write(payload)


def test_read_idx_round_trips_gzip_and_plain(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "img.gz", images)
    write_idx(tmp_path / "lab", np.array([7, 300], dtype=np.int32), 0x0C)
    assert np.array_equal(data.read_idx(tmp_path / "img.gz"), images)
    assert data.read_idx(tmp_path / "lab").tolist() == [7, 300]


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="bad magic"):
        data.read_idx(tmp_path / "bad")
    write_idx(tmp_path / "short", np.zeros((4,), dtype=np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-1])
    with pytest.raises(ValueError, match="expected 4 values"):
        data.read_idx(tmp_path / "short")


def test_fashion_mnist_reads_a_folder_in_the_debian_layout(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 12), ("t10k", 5)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (count, 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(count) % 10)
    ds = data.fashion_mnist(train_size=10, folder=tmp_path)
    assert ds.x_train.shape == (10, 28, 28) and ds.x_test.shape == (5, 28, 28)
    assert ds.x_train.dtype == np.float32 and 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0


def test_a_missing_dataset_says_how_to_install_it(tmp_path):
    with pytest.raises(data.MissingDataset, match="apt-get install dataset-fashion-mnist"):
        data.fashion_mnist(folder=tmp_path)


def test_mnist_5k_is_real_stratified_and_fixed():
    a, b = data.mnist_5k(), data.mnist_5k()
    assert len(a.y_train) == 4000 and len(a.y_test) == 1000
    assert np.bincount(a.y_test).tolist() == [100] * 10
    assert np.array_equal(a.y_train, b.y_train) and np.array_equal(a.x_test, b.x_test)
    assert a.x_train.max() == 1.0 and a.x_train.min() == 0.0
    assert not np.array_equal(a.y_train[:50], np.sort(a.y_train[:50]))  # shuffled, not sorted by label


def test_stratified_split_is_disjoint_and_complete():
    y = np.repeat(np.arange(5), 20)
    train, test = data.stratified_split(y, 0.25, seed=3)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(100))
    assert np.bincount(y[test]).tolist() == [5] * 5


def _cifar_batch(count, seed):
    import pickle

    rng = np.random.default_rng(seed)
    return pickle.dumps({b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
                         b"labels": list(rng.integers(0, 10, count))})


def _cifar_tarball(path):
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for name, blob in [(f"data_batch_{i}", _cifar_batch(6, i)) for i in range(1, 6)] + [("test_batch", _cifar_batch(4, 9))]:
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))


def test_cifar10_reads_the_python_tarball_and_its_folder(tmp_path):
    import tarfile

    _cifar_tarball(tmp_path / "cifar-10-python.tar.gz")
    ds = data.cifar10(tmp_path / "cifar-10-python.tar.gz")
    assert ds.x_train.shape == (30, 32, 32, 3) and ds.x_test.shape == (4, 32, 32, 3)
    assert ds.x_train.dtype == np.float32 and ds.x_train.max() <= 1.0
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz") as tar:
        tar.extractall(tmp_path / "x", filter="data")
    folder = data.cifar10(tmp_path / "x" / "cifar-10-batches-py")
    assert np.array_equal(folder.x_test, ds.x_test) and np.array_equal(folder.y_train, ds.y_train)
    # channel order: the pickle stores planes R, G, B of 1024 values each
    import pickle

    raw = pickle.loads(_cifar_batch(4, 9))[b"data"]
    assert np.allclose(ds.x_test[0, 0, 0], raw[0, [0, 1024, 2048]] / 255.0)


def test_cifar10_errors_are_clear(tmp_path):
    with pytest.raises(data.MissingDataset, match="QATBENCH_CIFAR10"):
        data.cifar10(tmp_path / "nope.tar.gz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not the python CIFAR-10 release"):
        data.cifar10(tmp_path / "empty")


def test_images_32x3_prefers_cifar_when_configured(tmp_path, monkeypatch):
    _cifar_tarball(tmp_path / "c.tar.gz")
    monkeypatch.setenv(data.CIFAR10_ENV, str(tmp_path / "c.tar.gz"))
    assert data.images_32x3().name == "cifar-10"
