"""The kernels' output pool: reuses a buffer only when nothing references it any more."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest

import normlab.functional as F
from normlab.kernels import outputs

# every test here needs numba: skipped without it, a failure under NORMLAB_REQUIRE_ALL=1
pytestmark = pytest.mark.usefixtures("numba")

BIG = (512, 1024)   # 2 MB of float32: above MIN_BYTES


def _addr(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


@pytest.fixture(autouse=True)
def _pool_on(monkeypatch):
    monkeypatch.setenv("NORMLAB_OUTPUT_POOL", "1")
    monkeypatch.setenv("NORMLAB_KERNELS", "auto")


def test_freed_output_is_reused():
    a = outputs.empty(BIG, np.float32)
    where = _addr(a)
    del a
    b = outputs.empty(BIG, np.float32)
    assert _addr(b) == where
    assert b.shape == BIG and b.dtype == np.float32 and b.flags.c_contiguous


def test_held_output_is_never_handed_out_again():
    a = outputs.empty(BIG, np.float32)
    a[...] = 1.0
    b = outputs.empty(BIG, np.float32)
    assert _addr(b) != _addr(a)
    b[...] = 2.0
    assert (a == 1.0).all()


def test_a_view_keeps_its_buffer():
    a = outputs.empty(BIG, np.float32)
    view = a[3:5].T
    where = _addr(a)
    del a
    b = outputs.empty(BIG, np.float32)
    assert _addr(b) != where
    del view, b
    assert _addr(outputs.empty(BIG, np.float32)) == where


def test_same_bytes_other_dtype_and_shape_share_a_buffer():
    a = outputs.empty(BIG, np.float32)
    where = _addr(a)
    del a
    b = outputs.empty((BIG[0] // 2, BIG[1]), np.float64)
    assert _addr(b) == where and b.dtype == np.float64


def test_small_outputs_and_disabled_pool_are_plain_arrays(monkeypatch):
    small = outputs.empty((4, 4), np.float32)
    assert small.base is None
    monkeypatch.setenv("NORMLAB_OUTPUT_POOL", "0")
    a = outputs.empty(BIG, np.float32)
    assert a.base is None


def test_pool_stays_within_budget(monkeypatch):
    outputs.release()   # earlier tests in this worker may have left more than 8 MB pooled
    monkeypatch.setattr(outputs, "POOL_BYTES", 8 << 20)
    held = [outputs.empty((n, 1024), np.float32) for n in (512, 640, 768, 896, 1024)]
    assert outputs.pooled_bytes() <= 8 << 20
    del held
    for n in range(512, 2048, 128):   # new sizes evict free buffers, never exceed the budget
        outputs.empty((n, 1024), np.float32)
        assert outputs.pooled_bytes() <= 8 << 20


def test_threads_never_share_a_buffer():
    got: list[np.ndarray] = []
    lock = threading.Lock()

    def grab():
        for _ in range(50):
            a = outputs.empty(BIG, np.float32)
            with lock:
                got.append(a)

    threads = [threading.Thread(target=grab) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({_addr(a) for a in got}) == len(got)


def test_layer_outputs_survive_later_calls():
    """y from one call is still intact after more calls of the same shape (the real use)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 32, 16, 16)).astype(np.float32)   # 2 MB
    y1, cache1 = F.batch_norm_train(x)
    keep = y1.copy()
    dx1, _, _ = F.batch_norm_backward(np.ones_like(x), cache1)
    keep_dx = dx1.copy()
    for _ in range(3):
        y2, cache2 = F.batch_norm_train(x * 2 + 1)
        F.batch_norm_backward(rng.normal(size=x.shape).astype(np.float32), cache2)
        F.group_norm_forward(x, 4)
        F.layer_norm_forward(x, (16, 16))
    np.testing.assert_array_equal(y1, keep)
    np.testing.assert_array_equal(dx1, keep_dx)


def test_release_frees_only_unreferenced_buffers():
    outputs.release()
    kept = outputs.empty(BIG, np.float32)
    dropped = outputs.empty((BIG[0] * 2, BIG[1]), np.float32)
    del dropped
    before = outputs.pooled_bytes()
    assert outputs.release() == 2 * kept.nbytes
    assert outputs.pooled_bytes() == before - 2 * kept.nbytes
    assert outputs.pooled_bytes() >= kept.nbytes   # the buffer in use stays pooled
    assert _addr(outputs.empty(BIG, np.float32)) != _addr(kept)


@pytest.mark.parametrize("value, budget", [
    ("", outputs.POOL_BYTES), ("1", outputs.POOL_BYTES), ("on", outputs.POOL_BYTES),
    ("TRUE", outputs.POOL_BYTES), (" yes ", outputs.POOL_BYTES),
    ("0", 0), ("off", 0), ("False", 0), ("no", 0),
    ("512K", 512 << 10), ("4M", 4 << 20), ("2g", 2 << 30), ("64 M", 64 << 20)])
def test_output_pool_variable_values(monkeypatch, value, budget):
    monkeypatch.setenv("NORMLAB_OUTPUT_POOL", value)
    assert outputs.pool_budget() == budget


@pytest.mark.parametrize("value", ["2", "-1", "maybe", "1.5G", "0M", "4T", "M", "on off"])
def test_output_pool_variable_refuses_anything_else(monkeypatch, value):
    """Only 0 used to mean anything: 'off' or a typo silently left the pool on."""
    monkeypatch.setenv("NORMLAB_OUTPUT_POOL", value)
    with pytest.raises(ValueError, match=f"NORMLAB_OUTPUT_POOL: expected .* got {value!r}"):
        outputs.empty(BIG, np.float32)


def test_output_pool_budget_from_the_variable(monkeypatch):
    """A 3M budget keeps at most one 2 MB buffer; 'off' hands out plain arrays."""
    gc.collect()   # buffers an earlier test left in reference cycles would be reused here
    outputs.release()
    monkeypatch.setenv("NORMLAB_OUTPUT_POOL", "3M")
    held = [outputs.empty(BIG, np.float32) for _ in range(3)]
    assert len(held) == 3 and outputs.pooled_bytes() == 2 << 20
    monkeypatch.setenv("NORMLAB_OUTPUT_POOL", "off")
    assert outputs.empty(BIG, np.float32).base is None
