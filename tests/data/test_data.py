"""Datasets: embedded subsets, the IDX reader on real and on damaged files, mnist:DIR folders."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from normlab import data
from normlab.data.idx import read_idx
from tests.conftest import require


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
             np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(
        f">{array.ndim}I", *array.shape)
    body = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(body) if compress else body)
    return path


@pytest.mark.parametrize("name, n_train, n_test, shape, scale", [
    ("mnist5k", 4000, 1000, (28, 28), 255), ("digits", 1438, 359, (8, 8), 16)])
def test_embedded_datasets(name, n_train, n_test, shape, scale):
    d = data.load(name)
    assert (len(d.x_train), len(d.x_test)) == (n_train, n_test)
    assert d.image_shape == shape and d.n_features == int(np.prod(shape))
    assert d.x_train.dtype == np.float32 and d.x_train.min() == 0 and d.x_train.max() == 1
    # pixel values are k/scale for integers k (scaling, not normalisation)
    k = d.x_test * scale
    assert np.allclose(k, np.round(k), atol=1e-4)
    # stratified: every class in both splits in the same proportion (to one image)
    tr, te = np.bincount(d.y_train, minlength=10), np.bincount(d.y_test, minlength=10)
    assert np.all(np.abs(te / (tr + te) - n_test / (n_train + n_test)) < 1.0 / (tr + te) + 1e-9)
    # shuffled, not class-sorted, and the same split every time
    assert np.any(np.diff(d.y_train[:50]) < 0)
    again = data.load(name)
    assert np.array_equal(again.y_train, d.y_train) and d.fingerprint == again.fingerprint
    assert d.source and d.n_classes == 10
    assert d.flat("train")[0].shape == (n_train, d.n_features)


def test_mnist5k_train_and_test_disjoint():
    d = data.load("mnist5k")
    rows = {r.tobytes() for r in d.x_train.reshape(len(d.x_train), -1)}
    assert not any(r.tobytes() in rows for r in d.x_test.reshape(len(d.x_test), -1))


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_idx_round_trip(tmp_path, compress, dtype):
    a = (np.arange(2 * 3 * 5) * 7 % 251).astype(dtype).reshape(2, 3, 5)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a", a, compress)), a)


def test_fashion_mnist_from_debian_package():
    require("Fashion-MNIST IDX files", data.FASHION_MNIST_DIR.is_dir(),
            "apt-get install dataset-fashion-mnist")
    d = data.load("fashion-mnist")
    assert (d.x_train.shape, d.x_test.shape) == ((60000, 28, 28), (10000, 28, 28))
    assert np.array_equal(np.bincount(d.y_test), np.full(10, 1000))
    assert d.x_train.max() == 1.0 and d.x_train.min() == 0.0


def _mnist_dir(tmp_path: Path, n=(100, 10)) -> Path:
    rng = np.random.default_rng(0)
    for prefix, count in zip(("train", "t10k"), n, strict=True):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte",
                  rng.integers(0, 256, (count, 28, 28), dtype=np.uint8), compress=True)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte",
                  rng.integers(0, 10, count, dtype=np.uint8))
    return tmp_path


def test_mnist_dir(tmp_path):
    d = data.load(f"mnist:{_mnist_dir(tmp_path)}")
    assert d.x_train.shape == (100, 28, 28) and d.y_test.shape == (10,)
    assert data.load("fashion-mnist", data_dir=tmp_path).name == "fashion-mnist"


def test_mnist_dir_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load(f"mnist:{tmp_path / 'nope'}")
    with pytest.raises(FileNotFoundError, match="train-images"):
        data.load(f"mnist:{tmp_path}")
    with pytest.raises(ValueError, match="expected one of"):
        data.load("cifar")
    folder = _mnist_dir(tmp_path)
    write_idx(folder / "t10k-labels-idx1-ubyte", np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="expected 10 labels"):
        data.load(f"mnist:{folder}")


def test_idx_truncated_and_lying_headers(tmp_path):
    a = np.ones((4, 28, 28), np.uint8)
    path = write_idx(tmp_path / "x", a)
    raw = path.read_bytes()
    path.write_bytes(raw[:-5])
    with pytest.raises(ValueError, match="'.*x'.*(truncated|cannot hold)"):
        read_idx(path)
    # a header claiming 2^32-1 images must be refused before reading, not allocate 3 TB
    path.write_bytes(raw[:4] + struct.pack(">I", 2**32 - 1) + raw[8:])
    with pytest.raises(ValueError, match="cannot hold"):
        read_idx(path)
    gz = tmp_path / "x.gz"
    gz.write_bytes(gzip.compress(raw[:4] + struct.pack(">I", 2**32 - 1) + raw[8:]))
    with pytest.raises(ValueError, match="cannot hold"):
        read_idx(gz)
    gz.write_bytes(gzip.compress(raw)[:-12])  # cut inside the deflate stream
    with pytest.raises(ValueError, match="x.gz"):
        read_idx(gz)
    path.write_bytes(raw + b"extra")
    with pytest.raises(ValueError, match="trailing data"):
        read_idx(path)
    path.write_bytes(b"\x00\x00\x42\x01" + raw[4:])
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(path)


@settings(max_examples=60)
@given(st.binary(max_size=200), st.booleans())
def test_idx_fuzz_random_bytes_only_clean_errors(tmp_path_factory, blob, compress):
    path = tmp_path_factory.mktemp("fuzz") / "f"
    path.write_bytes(gzip.compress(blob) if compress else blob)
    try:
        out = read_idx(path)
    except ValueError as exc:
        assert str(path) in str(exc)
    else:  # random bytes can form a valid tiny file; then it must be consistent
        assert out.nbytes <= len(blob)


@settings(max_examples=40)
@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=3), st.binary(max_size=64))
def test_idx_fuzz_valid_magic_random_sizes(tmp_path_factory, dims, body):
    path = tmp_path_factory.mktemp("fuzz") / "f"
    path.write_bytes(bytes([0, 0, 0x08, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + body)
    try:
        out = read_idx(path)
    except ValueError as exc:
        assert str(path) in str(exc)
    else:
        assert out.shape == tuple(dims) and out.nbytes == len(body)
