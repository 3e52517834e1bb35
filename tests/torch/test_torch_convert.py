"""to_torch / from_torch between NumPy-engine Sequential models and torch.nn.Sequential."""

from __future__ import annotations

import numpy as np
import pytest

from normlab import nn


def _mlp():
    return nn.Sequential(nn.Linear(6, 5, rng=0, dtype=np.float64), nn.BatchNorm1d(5,
                         dtype=np.float64), nn.Sigmoid(), nn.Dropout(0.0),
                         nn.Linear(5, 3, rng=1, dtype=np.float64), nn.LayerNorm(3,
                         dtype=np.float64), nn.Tanh())


def _cnn():
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, rng=0, dtype=np.float64),
                         nn.BatchNorm2d(4, dtype=np.float64), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 4, 1, bias=False, rng=1, dtype=np.float64),
                         nn.GroupNorm(2, 4, dtype=np.float64), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(4, 3, rng=2, dtype=np.float64))


@pytest.mark.parametrize("build,shape", [(_mlp, (8, 6)), (_cnn, (3, 2, 4, 4))])
def test_to_torch_identical_outputs_in_train_and_eval(torch, build, shape):
    import normlab.torch as nt

    m = build()
    rng = np.random.default_rng(0)
    m(rng.normal(size=shape))  # non-trivial running statistics before converting
    t = nt.to_torch(m)
    assert isinstance(t, torch.nn.Sequential) and t.training
    assert list(t.state_dict()) == list(m.state_dict())
    x = rng.normal(size=shape)
    np.testing.assert_allclose(t(torch.from_numpy(x)).detach().numpy(), m(x), rtol=1e-10,
                               atol=1e-12)
    for k, v in t.state_dict().items():  # the training step moved both identically
        np.testing.assert_allclose(v.numpy(), m.state_dict()[k], rtol=1e-12)
    m.eval()
    t.eval()
    np.testing.assert_allclose(t(torch.from_numpy(x)).detach().numpy(), m(x), rtol=1e-10,
                               atol=1e-12)


def test_from_torch_round_trip(torch):
    import normlab.torch as nt

    torch.manual_seed(0)
    t = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.ReLU(),
                            torch.nn.Linear(3, 2)).double()
    t(torch.randn(5, 4, dtype=torch.float64))
    t.eval()
    m = nt.from_torch(t)
    assert not m.training and isinstance(m, nn.Sequential)
    assert m[0].weight.data.dtype == np.float64
    x = np.random.default_rng(1).normal(size=(5, 4))
    np.testing.assert_allclose(m(x), t(torch.from_numpy(x)).detach().numpy(), rtol=1e-12)
    back = nt.to_torch(m)
    for k, v in t.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k


def test_unsupported_layers_raise(torch):
    import normlab.torch as nt

    with pytest.raises(TypeError, match="GELU"):
        nt.from_torch(torch.nn.Sequential(torch.nn.GELU()))
    with pytest.raises(ValueError, match="ceil_mode"):
        nt.from_torch(torch.nn.Sequential(torch.nn.MaxPool2d(2, ceil_mode=True)))
    with pytest.raises(TypeError, match="BatchRenorm2d"):
        nt.from_torch(torch.nn.Sequential(nt.BatchRenorm2d(3)))
