"""normlab.nn.fused: the eval forward with [BatchNorm2d ->] ReLU -> MaxPool2d(2) fused gives the
layers' own bits, on every shape, dtype, tap and NaN, and does fuse where it should."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from normlab import kernels, nn
from normlab.nn import fused

pytestmark = pytest.mark.usefixtures("numba")


@contextmanager
def counting_fused():
    """How many groups went through the fused kernel (and how many of them declined), with
    the numba kernels on."""
    module = kernels.load("fused")
    calls = {"ran": 0, "declined": 0}
    real = module.relu_max_pool_2x2

    def counting(x, affine=None):
        calls["ran"] += 1
        y = real(x, affine)
        calls["declined"] += y is None
        return y

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(module, "relu_max_pool_2x2", counting)
        mp.setenv("NORMLAB_KERNELS", "numba")
        yield calls


@pytest.fixture
def fused_calls():
    with counting_fused() as calls:
        yield calls


def trained_bn(channels: int, dtype, rng: np.random.Generator) -> nn.BatchNorm2d:
    """A BatchNorm2d with non-trivial running statistics and affine parameters."""
    bn = nn.BatchNorm2d(channels, dtype=dtype)
    bn.running_mean[...] = rng.standard_normal(channels)
    bn.running_var[...] = rng.random(channels) + 0.1
    bn.weight.data[...] = rng.standard_normal(channels)
    bn.bias.data[...] = rng.standard_normal(channels)
    return bn


def layer_by_layer(model: nn.Sequential, x: np.ndarray) -> np.ndarray:
    model.eval()
    for layer in model:
        x = layer(x)
    return x


def assert_same_bits(a: np.ndarray, b: np.ndarray) -> None:
    """Equal dtype, shape and bytes (array_equal would let -0.0 pass for +0.0)."""
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 4), c=st.integers(1, 4), h=st.integers(2, 9), w=st.integers(2, 9),
       dtype=st.sampled_from([np.float32, np.float64]), with_bn=st.booleans(),
       integers=st.booleans(), seed=st.integers(0, 2**16))
def test_fused_eval_is_the_layers_bit_for_bit(n, c, h, w, dtype, with_bn, integers, seed):
    """Odd sizes (the last row/column is dropped), signed zeros and ties (integer data)."""
    rng = np.random.default_rng(seed)
    head = [trained_bn(c, dtype, rng)] if with_bn else []
    model = nn.Sequential(*head, nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
    x = (rng.integers(-2, 3, (n, c, h, w)) if integers
         else rng.standard_normal((n, c, h, w))).astype(dtype)
    x.reshape(-1)[::7] = -0.0
    with counting_fused() as calls:
        y, tapped = fused.forward_eval(model, x)
        assert tapped is None
        assert_same_bits(y, layer_by_layer(model, x))
    assert calls == {"ran": 1, "declined": 0}


def test_a_nan_sends_the_group_through_the_layers(fused_calls):
    rng = np.random.default_rng(0)
    model = nn.Sequential(trained_bn(3, np.float32, rng), nn.ReLU(), nn.MaxPool2d(2))
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    x[1, 2, 3, 4] = np.nan
    y = fused.forward_eval(model, x)[0]
    expected = layer_by_layer(model, x)
    assert np.isnan(y[1, 2, 1, 2]) and np.isnan(expected[1, 2, 1, 2])
    assert_same_bits(y, expected)
    assert fused_calls == {"ran": 1, "declined": 1}


def test_the_cnn_fuses_both_groups_and_keeps_its_bits(fused_calls):
    """The experiments' CNN: conv -> BN -> ReLU -> pool, twice."""
    from normlab.engines import make_trainer
    from normlab.runner.cnn import cnn_spec

    rng = np.random.default_rng(1)
    trainer = make_trainer("numpy", cnn_spec((14, 14), 10, "batch"), 0.05, rng, 0.1)
    x = rng.random((40, 1, 14, 14), dtype=np.float32)
    for _ in range(3):   # running statistics away from (0, 1)
        trainer.train_step(x[:20], np.arange(20) % 10)
    logits, _ = trainer.forward_eval(x)
    assert fused_calls == {"ran": 2, "declined": 0}
    assert_same_bits(logits, layer_by_layer(trainer.model, x))


@pytest.mark.parametrize("tap", [0, 1, 2, 3])
def test_a_tap_inside_a_group_keeps_it_apart(fused_calls, tap):
    """tap = the input of layer ``tap``: inside the BN group (1, 2) the group runs as layers;
    at its first layer (0) or after it (3) it is fused."""
    rng = np.random.default_rng(2)
    model = nn.Sequential(trained_bn(2, np.float32, rng), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten())
    x = rng.standard_normal((3, 2, 4, 4)).astype(np.float32)
    y, tapped = fused.forward_eval(model, x, tap=tap)
    model.eval()
    expected = x
    for layer in list(model)[:tap]:
        expected = layer(expected)
    assert_same_bits(tapped, expected)
    assert_same_bits(y, layer_by_layer(model, x))
    # tap 1 (the ReLU's input) splits BN off, leaving ReLU -> pool fused; tap 2 splits both
    assert fused_calls["ran"] == {0: 1, 1: 1, 2: 0, 3: 1}[tap]


@pytest.mark.parametrize("make", [
    lambda: nn.Sequential(nn.BatchNorm2d(2, track_running_stats=False), nn.ReLU(),
                          nn.MaxPool2d(2)),
    lambda: nn.Sequential(nn.ReLU(), nn.MaxPool2d(2, stride=1)),
    lambda: nn.Sequential(nn.ReLU(), nn.MaxPool2d(2, padding=1)),
    lambda: nn.Sequential(nn.ReLU(), nn.MaxPool2d(3)),
    lambda: nn.Sequential(nn.MaxPool2d(2), nn.ReLU()),
], ids=["bn-batch-stats", "stride-1", "padded", "3x3", "pool-first"])
def test_what_does_not_qualify_runs_as_layers(fused_calls, make):
    """A BN without running buffers normalises with the batch: its group runs as layers;
    other pools, or another order, are not a group."""
    model = make()
    x = np.random.default_rng(3).standard_normal((4, 2, 6, 6)).astype(np.float32)
    assert_same_bits(fused.forward_eval(model, x)[0], layer_by_layer(model, x))
    assert fused_calls["ran"] == 0


def test_without_kernels_nothing_fuses(fused_calls, monkeypatch):
    monkeypatch.setenv("NORMLAB_KERNELS", "numpy")
    rng = np.random.default_rng(4)
    model = nn.Sequential(trained_bn(2, np.float32, rng), nn.ReLU(), nn.MaxPool2d(2))
    x = rng.standard_normal((2, 2, 4, 4)).astype(np.float32)
    assert_same_bits(fused.forward_eval(model, x)[0], layer_by_layer(model, x))
    assert fused_calls["ran"] == 0


def test_a_bad_input_raises_the_layers_error(fused_calls):
    """The group checks nothing itself: a BN's channel check and a pool's size check run."""
    rng = np.random.default_rng(5)
    model = nn.Sequential(trained_bn(3, np.float32, rng), nn.ReLU(), nn.MaxPool2d(2))
    with pytest.raises(ValueError, match="expected 3 channels"):
        fused.forward_eval(model, np.zeros((2, 4, 4, 4), np.float32))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        fused.forward_eval(model, np.zeros((2, 3, 1, 4), np.float32))
