"""Fuzzing the file readers: hypothesis byte strings into the IDX reader, the .npz state-dict
loader and the checkpoint reader. The only acceptable failure is a clear ``ValueError`` (a
checkpoint's :class:`CorruptCheckpoint` is one); never another exception, and never a huge
allocation from a header that lies about its size (sizes are capped against the file length).
"""

from __future__ import annotations

import gzip
import io
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from normlab import nn, serialization
from normlab.data import MIN_SIDE, MIN_TRAIN_IMAGES, load_idx_folder
from normlab.data.idx import read_idx
from normlab.fold.archive import load_model
from normlab.runner.store import read_checkpoint, write_checkpoint
from tests.data.test_data import write_idx

FUZZ = settings(max_examples=60,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
# no reader may allocate more than this for inputs of at most a few KB
MAX_PEAK = 16 * 2**20


def _read(reader, path):
    """Run ``reader(path)`` under tracemalloc; return (result or exception, peak bytes)."""
    tracemalloc.start()
    try:
        try:
            out = reader(path)
        except ValueError as exc:
            out = exc
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return out, peak


idx_types = st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E])


@st.composite
def idx_blobs(draw):
    """Mostly well-formed headers with lying sizes and random bodies, sometimes gzipped."""
    kind = draw(st.sampled_from(["random", "header", "valid-then-mutate"]))
    if kind == "random":
        blob = draw(st.binary(max_size=512))
    else:
        ndim = draw(st.integers(0, 4))
        dims = draw(st.lists(st.integers(0, 2**32 - 1), min_size=ndim, max_size=ndim))
        if kind == "valid-then-mutate":
            dims = draw(st.lists(st.integers(0, 6), min_size=ndim, max_size=ndim))
        t = draw(idx_types)
        body_len = draw(st.integers(0, 600))
        blob = bytes([0, 0, t, ndim]) + struct.pack(f">{ndim}I", *dims) + bytes(body_len)
        if kind == "valid-then-mutate" and blob and draw(st.booleans()):
            i = draw(st.integers(0, len(blob) - 1))
            blob = blob[:i] + bytes([draw(st.integers(0, 255))]) + blob[i + 1:]
    if draw(st.booleans()):
        blob = gzip.compress(blob)
        if draw(st.booleans()):   # damage the compressed stream
            blob = blob[: draw(st.integers(0, len(blob)))]
    return blob


@FUZZ
@given(blob=idx_blobs())
def test_idx_reader_only_raises_value_error(tmp_path, blob):
    path = tmp_path / "fuzz-idx"
    path.write_bytes(blob)
    out, peak = _read(read_idx, path)
    assert isinstance(out, (np.ndarray, ValueError)), type(out)
    if isinstance(out, ValueError):
        assert "fuzz-idx" in str(out)   # names the file
    assert peak < MAX_PEAK


def test_idx_lying_header_is_refused_without_allocating(tmp_path):
    """A 12-byte file claiming 2^32 - 1 float64 values: refused from the file length."""
    path = tmp_path / "liar"
    path.write_bytes(bytes([0, 0, 0x0E, 1]) + struct.pack(">I", 2**32 - 1) + bytes(4))
    out, peak = _read(read_idx, path)
    assert isinstance(out, ValueError) and "cannot hold" in str(out)
    assert peak < 2**20
    gz = tmp_path / "liar.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    out, peak = _read(read_idx, gz)
    assert isinstance(out, ValueError) and peak < 2**20


def _npz_bytes(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


VALID_NPZ = _npz_bytes({"weight": np.arange(6, dtype=np.float32), "num_batches_tracked":
                        np.array(3, dtype=np.int64)})


@st.composite
def npz_blobs(draw):
    kind = draw(st.sampled_from(["random", "flip", "truncate", "npy"]))
    if kind == "random":
        return draw(st.binary(max_size=512))
    if kind == "npy":
        buf = io.BytesIO()
        np.save(buf, np.arange(3))
        blob = buf.getvalue()
    else:
        blob = VALID_NPZ
    if kind == "truncate":
        return blob[: draw(st.integers(0, len(blob) - 1))]
    flips = draw(st.lists(st.tuples(st.integers(0, len(blob) - 1), st.integers(1, 255)),
                          min_size=1, max_size=4))
    data = bytearray(blob)
    for i, v in flips:
        data[i] ^= v
    return bytes(data)


@FUZZ
@given(blob=npz_blobs())
def test_state_dict_loader_only_raises_value_error(tmp_path, blob):
    path = tmp_path / "fuzz.npz"
    path.write_bytes(blob)
    out, peak = _read(serialization.read_state_dict, path)
    assert isinstance(out, (dict, ValueError)), type(out)
    assert peak < MAX_PEAK
    if isinstance(out, dict):   # a damage that left a readable archive: loading still checks
        model = nn.BatchNorm1d(6)
        before = model.state_dict()
        try:
            model.load_state_dict(out)
        except (ValueError, TypeError):
            for k, v in model.state_dict().items():
                np.testing.assert_array_equal(v, before[k])


def test_npz_member_with_lying_size_is_refused(tmp_path):
    """A zip member whose .npy header claims a huge array but holds a few bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (4000000000,), }"
        header += b" " * (118 - len(header)) + b"\n"
        zf.writestr("weight.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", 118) + header
                    + bytes(16))
    path = tmp_path / "liar.npz"
    path.write_bytes(buf.getvalue())
    out, peak = _read(serialization.read_state_dict, path)
    assert isinstance(out, ValueError) and "liar.npz" in str(out)
    assert peak < MAX_PEAK


@FUZZ
@given(data=st.data())
def test_checkpoint_reader_only_raises_value_error(tmp_path, data):
    path = tmp_path / "run.done"
    write_checkpoint(path, {"metrics": {"acc": [0.5, 0.75]}, "step": 3},
                     {"w": np.ones((2, 3), np.float32)})
    blob = bytearray(path.read_bytes())
    how = data.draw(st.sampled_from(["flip", "truncate", "random"]))
    if how == "flip":
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] ^= data.draw(st.integers(1, 255))
    elif how == "truncate":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    else:
        blob = bytearray(data.draw(st.binary(max_size=256)))
    path.write_bytes(bytes(blob))
    out, peak = _read(read_checkpoint, path)
    assert isinstance(out, ValueError), "every damaged checkpoint is detected"
    assert peak < MAX_PEAK


@pytest.mark.parametrize("size", [0, 1, 7])
def test_tiny_files_are_clear_errors(tmp_path, size):
    path = tmp_path / "tiny"
    path.write_bytes(bytes(size))
    for reader in (read_idx, serialization.read_state_dict, read_checkpoint):
        with pytest.raises(ValueError):
            reader(path)


# -- a fold archive's declared architecture: checked against the stored arrays first -----------
def _archive(path, layers, arrays=None, dtype="float32"):
    """An .npz as normlab.fold.archive.save_model writes it, with any spec and arrays."""
    import json

    spec = {"format": "normlab.sequential/1", "dtype": dtype, "layers": layers}
    np.savez(path, __architecture__=np.array(json.dumps(spec)), **(arrays or {}))
    return path


def test_huge_declared_layer_without_weights_allocates_nothing(tmp_path):
    """The issue's file: Linear(30000, 30000) declared, no weights stored (under 1 KB). fold
    used to build and initialise the layer -- 3.6 GB, 74 s -- before noticing; now the declared
    size is refused from the spec alone."""
    path = _archive(tmp_path / "huge.npz", [{"type": "Linear", "args": [30000, 30000]}])
    assert path.stat().st_size < 1024
    out, peak = _read(load_model, path)
    assert isinstance(out, ValueError), out
    assert "at most 1073741824 bytes" in str(out) and "900030000" in str(out)
    assert peak < MAX_PEAK
    # within the budget but not backed by the file: refused for the missing array, same way
    path = _archive(tmp_path / "big.npz", [{"type": "Linear", "args": [3000, 3000]}])
    out, peak = _read(load_model, path)
    assert isinstance(out, ValueError) and "0.weight of shape (3000, 3000)" in str(out)
    assert peak < MAX_PEAK


def test_deflated_arrays_above_the_budget_are_refused_before_reading(tmp_path):
    """1 MB of deflated zeros unpacks to 1 GB: the zip directory's sizes are summed first."""
    path = tmp_path / "zeros.npz"
    np.savez_compressed(path, **{"0.weight": np.zeros((64, 1024, 1024), np.float32)})
    out, peak = _read(lambda p: load_model(p, max_bytes=64 << 20), path)
    assert isinstance(out, ValueError) and "expected at most 67108864 bytes" in str(out)
    assert peak < MAX_PEAK


LAYER_TYPES = ["Linear", "Conv2d", "BatchNorm1d", "BatchNorm2d", "InstanceNorm2d",
               "BatchRenorm1d", "LayerNorm", "GroupNorm", "LSTM", "Affine", "ReLU", "MaxPool2d",
               "Flatten", "NoSuchLayer"]
junk = st.one_of(st.integers(-3, 10**7), st.none(), st.text(max_size=3), st.booleans(),
                 st.lists(st.integers(-1, 10**6), max_size=3))


@st.composite
def fold_archives(draw):
    """Specs with random layer types and arguments (often huge), stored arrays random small
    ones under plausible keys: what a damaged or malicious fold archive could hold."""
    layers = [{"type": draw(st.sampled_from(LAYER_TYPES)),
               "args": draw(st.lists(junk, max_size=3)),
               "kwargs": draw(st.dictionaries(st.sampled_from(["bias", "affine", "groups",
                                                                "kernel_size", "norm"]), junk,
                                              max_size=2))}
              for _ in range(draw(st.integers(1, 3)))]
    keys = draw(st.lists(st.sampled_from(["0.weight", "0.bias", "1.weight", "0.running_mean",
                                          "0.weight_ih_l0", "1.scale"]), max_size=4,
                         unique=True))
    arrays = {k: np.ones(draw(st.lists(st.integers(0, 6), max_size=3)), np.float32)
              for k in keys}
    return layers, arrays


@FUZZ
@given(archive=fold_archives())
def test_fold_archive_loader_only_raises_value_error(tmp_path, archive):
    path = _archive(tmp_path / "fuzz.npz", *archive)
    out, peak = _read(load_model, path)
    assert isinstance(out, (tuple, ValueError)), type(out)
    assert peak < MAX_PEAK


# -- mnist:DIR folders: bad labels and images refused at load time, naming the file -------------
label_arrays = st.one_of(
    st.lists(st.integers(-128, 127), min_size=1, max_size=8).map(lambda v: np.array(v, np.int8)),
    st.lists(st.integers(0, 255), min_size=1, max_size=8).map(lambda v: np.array(v, np.uint8)),
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=1,
             max_size=8).map(lambda v: np.array(v, np.float32)))


@FUZZ
@given(labels=label_arrays, image_shape=st.tuples(st.sampled_from([0, 1, 7, 8]),
                                                  st.sampled_from([0, 3, 8, 9])))
def test_mnist_folder_loader_refuses_bad_labels_and_images(tmp_path, labels, image_shape):
    folder = tmp_path / "mnist"
    folder.mkdir(exist_ok=True)
    labels = np.resize(labels, MIN_TRAIN_IMAGES)   # enough images to train on
    n = len(labels)
    for prefix in ("train", "t10k"):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", np.zeros((n, *image_shape), np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)
    out, peak = _read(lambda f: load_idx_folder(f, "mnist", "fuzz"), folder)
    assert peak < MAX_PEAK
    good = labels.dtype.kind in "iu" and labels.min() >= 0 and labels.max() <= 9
    if good and min(image_shape) >= MIN_SIDE:
        assert not isinstance(out, ValueError), out
        assert out.y_train.dtype == np.int64 and np.array_equal(out.y_train, labels)
    else:
        assert isinstance(out, ValueError) and "-idx" in str(out)   # names the file
