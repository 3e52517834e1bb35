"""Saving/loading state dicts: round trips, torch interop, clear errors, atomic writes."""

from __future__ import annotations

import os

import numpy as np
import pytest

import normlab
import normlab.nn as nn


def small_cnn(rng) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, rng=rng), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 10, rng=rng))


def torch_small_cnn(torch):
    T = torch.nn
    return T.Sequential(T.Conv2d(1, 4, 3, padding=1), T.BatchNorm2d(4), T.ReLU(), T.MaxPool2d(2),
                        T.Flatten(), T.Linear(4 * 4 * 4, 10))


def trained(model: nn.Module) -> nn.Module:
    """A few training forwards so running stats and num_batches_tracked are non-trivial."""
    rng = np.random.default_rng(0)
    for _ in range(3):
        model(rng.standard_normal((5, 1, 8, 8)).astype(np.float32) * 2 + 1)
    return model


def assert_same_state(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_file_round_trip_is_lossless(tmp_path):
    model = trained(small_cnn(1))
    path = normlab.save(model, tmp_path / "m.npz")
    assert path == tmp_path / "m.npz" and path.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]        # no temp file left behind
    fresh = normlab.load(small_cnn(2), path)
    assert_same_state(fresh.state_dict(), model.state_dict())
    assert_same_state(normlab.load(None, path), model.state_dict())
    assert int(normlab.load(None, path)["1.num_batches_tracked"]) == 3


def test_normlab_torch_normlab_round_trip_is_lossless(torch, tmp_path):
    model = trained(small_cnn(3))
    ref = torch_small_cnn(torch)
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    back = {k: v.numpy() for k, v in ref.state_dict().items()}
    normlab.save(back, tmp_path / "from_torch.npz")
    fresh = normlab.load(small_cnn(4), tmp_path / "from_torch.npz")
    assert_same_state(fresh.state_dict(), model.state_dict())
    # and torch's own key order is what we produce
    assert list(ref.state_dict()) == list(model.state_dict())


def test_mismatch_error_lists_missing_unexpected_and_misshaped_keys():
    model = small_cnn(0)
    sd = model.state_dict()
    del sd["1.running_var"]
    sd["9.weight"] = np.zeros(3, dtype=np.float32)
    sd["5.bias"] = np.zeros(11, dtype=np.float32)
    before = model.state_dict()
    with pytest.raises(ValueError) as info:
        model.load_state_dict(sd)
    msg = str(info.value)
    assert "missing keys: 1.running_var" in msg
    assert "unexpected keys: 9.weight" in msg
    assert "5.bias: expected shape (10,), got (11,)" in msg
    assert_same_state(model.state_dict(), before)   # nothing was written


def test_non_strict_load_ignores_key_sets_but_not_shapes():
    model = small_cnn(0)
    sd = {"0.weight": np.ones((4, 1, 3, 3), dtype=np.float32), "extra": np.zeros(1)}
    model.load_state_dict(sd, strict=False)
    assert np.all(model[0].weight.data == 1)
    with pytest.raises(ValueError, match="0.bias: expected shape"):
        model.load_state_dict({"0.bias": np.zeros(5)}, strict=False)


def test_load_keeps_dtype_and_array_identity():
    model = small_cnn(0)
    weight = model[0].weight.data
    sd = {k: v.astype(np.float64) if v.dtype == np.float32 else v
          for k, v in small_cnn(1).state_dict().items()}
    model.load_state_dict(sd)
    assert model[0].weight.data is weight and weight.dtype == np.float32
    np.testing.assert_array_equal(weight, sd["0.weight"].astype(np.float32))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_file_gives_clear_error(tmp_path, damage):
    path = normlab.save(small_cnn(0), tmp_path / "m.npz")
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a zip file at all" * 10)
    else:
        path.write_bytes(b"")
    with pytest.raises(ValueError, match="not a readable .npz state dict"):
        normlab.load(small_cnn(0), path)


def test_flipped_bytes_inside_an_array_are_detected(tmp_path):
    path = normlab.save({"w": np.arange(1000, dtype=np.float32)}, tmp_path / "w.npz")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF                   # inside the array payload: CRC mismatch
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt or truncated"):
        normlab.load(None, path)


def test_failed_save_leaves_existing_file_untouched(tmp_path):
    path = normlab.save({"w": np.ones(3)}, tmp_path / "w.npz")
    with pytest.raises(TypeError, match="obj"):
        normlab.save({"w": np.array([object()], dtype=object)}, path)
    np.testing.assert_array_equal(normlab.load(None, path)["w"], np.ones(3))
    assert sorted(os.listdir(tmp_path)) == ["w.npz"]


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="path: expected a file in an existing directory"):
        normlab.save({"w": np.ones(1)}, tmp_path / "missing" / "w.npz")
    with pytest.raises(FileNotFoundError, match="path"):
        normlab.load(None, tmp_path / "nope.npz")
    with pytest.raises(TypeError, match="obj: expected a normlab Module or a mapping"):
        normlab.save(3, tmp_path / "x.npz")
