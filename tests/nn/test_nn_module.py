"""Module bookkeeping: registration, modes, traversal, gradient accumulation, state-dict keys."""

from __future__ import annotations

import numpy as np
import pytest

import normlab.nn as nn


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 3, rng=0), nn.BatchNorm1d(3), nn.Sigmoid(),
                         nn.Linear(3, 2, bias=False, rng=1))


def test_state_dict_keys_and_dtypes_match_torch(torch):
    T = torch.nn
    ref = T.Sequential(T.Linear(4, 3), T.BatchNorm1d(3), T.Sigmoid(), T.Linear(3, 2, bias=False))
    sd, ref_sd = mlp().state_dict(), ref.state_dict()
    assert list(sd) == list(ref_sd) == ["0.weight", "0.bias", "1.weight", "1.bias",
                                        "1.running_mean", "1.running_var",
                                        "1.num_batches_tracked", "3.weight"]
    for key in sd:
        assert sd[key].shape == tuple(ref_sd[key].shape), key
        assert str(sd[key].dtype) == str(ref_sd[key].dtype).replace("torch.", ""), key


@pytest.mark.parametrize("kwargs", [{"affine": False}, {"track_running_stats": False},
                                    {"affine": False, "track_running_stats": False}])
def test_optional_bn_state_is_absent_like_torch(torch, kwargs):
    assert list(nn.BatchNorm2d(3, **kwargs).state_dict()) == \
        list(torch.nn.BatchNorm2d(3, **kwargs).state_dict())


def test_nested_module_names(torch):
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(2, 2, 1, rng=0), nn.BatchNorm2d(2))
            self.head = nn.Linear(2, 1, rng=0)

    class TorchBlock(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Conv2d(2, 2, 1), torch.nn.BatchNorm2d(2))
            self.head = torch.nn.Linear(2, 1)

    assert list(Block().state_dict()) == list(TorchBlock().state_dict())
    assert [n for n, _ in Block().named_parameters()] == \
        [n for n, _ in TorchBlock().named_parameters()]


def test_train_eval_propagate_and_sequential_indexing():
    m = mlp()
    assert all(layer.training for layer in m)
    assert m.eval() is m and not any(layer.training for layer in m.modules())
    m.train()
    assert m[1].training and isinstance(m[1], nn.BatchNorm1d)
    assert len(m) == 4 and isinstance(m[-1], nn.Linear)
    assert [type(x) for x in m[1:3]] == [nn.BatchNorm1d, nn.Sigmoid]
    assert len(m.parameters()) == 5


def test_backward_accumulates_until_zero_grad():
    m = mlp()
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    dy = np.ones((5, 2), dtype=np.float32)
    m(x)
    m.backward(dy)
    first = [p.grad.copy() for p in m.parameters()]
    m(x)
    m.backward(dy)
    for g1, p in zip(first, m.parameters(), strict=True):
        np.testing.assert_allclose(p.grad, 2 * g1, rtol=1e-6, atol=1e-7)
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())


def test_setting_none_unregisters_a_parameter():
    layer = nn.Linear(3, 2, rng=0)
    layer.bias = None
    assert list(layer.state_dict()) == ["weight"]


def test_forward_validates_before_running_stats_change():
    bn = nn.BatchNorm1d(3)
    before = bn.state_dict()
    for bad, err in [(np.ones((4, 5), dtype=np.float32), ValueError),      # channels
                     (np.ones((1, 3), dtype=np.float32), ValueError),      # 1 value per channel
                     (np.ones((2, 3, 2, 2), dtype=np.float32), ValueError),  # ndim
                     (np.ones((4, 3), dtype=np.int64), TypeError)]:
        with pytest.raises(err, match="x: expected"):
            bn(bad)
    after = bn.state_dict()
    for key in before:
        np.testing.assert_array_equal(before[key], after[key])


@pytest.mark.parametrize("make, match", [
    (lambda: nn.BatchNorm1d(0), "num_features"),
    (lambda: nn.BatchNorm2d(3, momentum=1.5), "momentum"),
    (lambda: nn.BatchNorm2d(3, eps=0), "eps"),
    (lambda: nn.GroupNorm(3, 4), "num_groups"),
    (lambda: nn.Conv2d(3, 4, 3, groups=2), "groups"),
    (lambda: nn.Linear(3, -1), "out_features"),
    (lambda: nn.Dropout(1.5), "p: expected"),
    (lambda: nn.MaxPool2d(2, padding=2), "padding"),
])
def test_bad_constructor_arguments_are_named(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_dtype_argument_gives_float64_state():
    bn = nn.BatchNorm2d(2, dtype=np.float64)
    assert bn.weight.data.dtype == bn.running_var.dtype == np.float64
    assert bn.num_batches_tracked.dtype == np.int64
    y = bn(np.random.default_rng(0).standard_normal((3, 2, 2, 2)))
    assert y.dtype == np.float64 and int(bn.num_batches_tracked) == 1


def test_same_seed_same_weights_and_manual_seed():
    assert np.array_equal(nn.Linear(5, 4, rng=3).weight.data, nn.Linear(5, 4, rng=3).weight.data)
    nn.init.manual_seed(11)
    a = nn.Conv2d(2, 3, 3).weight.data
    nn.init.manual_seed(11)
    assert np.array_equal(a, nn.Conv2d(2, 3, 3).weight.data)
    assert not np.array_equal(a, nn.Conv2d(2, 3, 3).weight.data)


def test_init_functions_have_their_textbook_scale():
    rng = np.random.default_rng(0)
    shape = (400, 300)
    np.testing.assert_allclose(nn.init.normal(shape, 0.01, rng).std(), 0.01, rtol=0.02)
    np.testing.assert_allclose(nn.init.xavier_normal(shape, rng=rng).std(),
                               np.sqrt(2 / 700), rtol=0.02)
    np.testing.assert_allclose(nn.init.xavier_uniform(shape, rng=rng).std(),
                               np.sqrt(2 / 700), rtol=0.02)
    np.testing.assert_allclose(nn.init.kaiming_normal(shape, rng=rng).std(),
                               np.sqrt(2 / 300), rtol=0.02)
    np.testing.assert_allclose(nn.init.kaiming_uniform(shape, nonlinearity="relu", rng=rng).std(),
                               np.sqrt(2 / 300), rtol=0.02)
    assert nn.init.fan_in_out((8, 3, 5, 5)) == (75, 200)


def test_backward_without_input_grad_gives_the_same_parameter_grads():
    x = np.random.default_rng(0).standard_normal((2, 1, 5, 5))
    dy = np.random.default_rng(1).standard_normal((2, 3))

    def net():
        return nn.Sequential(nn.Conv2d(1, 2, 3, rng=0, dtype=np.float64), nn.Flatten(),
                             nn.Linear(18, 3, rng=1, dtype=np.float64))

    a, b = net(), net()
    a(x)
    b(x)
    assert a.backward(dy).shape == x.shape
    assert b.backward(dy, input_grad=False) is None
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        np.testing.assert_array_equal(p.grad, q.grad)
    lin = nn.Linear(4, 2, rng=0)
    lin(np.ones((3, 4), dtype=np.float32))
    assert lin.backward_params(np.ones((3, 2), dtype=np.float32)) is None
    np.testing.assert_array_equal(lin.bias.grad, [3, 3])
