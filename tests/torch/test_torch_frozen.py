"""FrozenBatchNorm2d, freeze_bn / unfreeze_bn."""

from __future__ import annotations

import pytest


def _model(torch):
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                            torch.nn.Sequential(torch.nn.Conv2d(4, 2, 1), torch.nn.BatchNorm2d(2)))
    m.train()
    for _ in range(3):  # non-trivial running statistics
        m(torch.randn(4, 3, 6, 6) * 2 + 1)
    with torch.no_grad():
        m[1].weight.uniform_(0.5, 1.5)
        m[1].bias.normal_()
    return m


def test_freeze_keeps_inference_behaviour_even_in_train_mode(torch):
    import normlab.torch as nt

    m = _model(torch)
    x = torch.randn(2, 3, 6, 6)
    m.eval()
    want = m(x)
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    frozen = nt.freeze_bn(m)
    assert frozen is m
    assert isinstance(m[1], nt.FrozenBatchNorm2d) and isinstance(m[3][1], nt.FrozenBatchNorm2d)
    m.train()
    torch.testing.assert_close(m(x), want)
    m(torch.randn(2, 3, 6, 6) * 5)  # training steps must not move the statistics
    for k, v in m.state_dict().items():
        torch.testing.assert_close(v, sd[k])
    assert set(m.state_dict()) == set(sd)  # same keys as with plain BN
    params = dict(m.named_parameters())
    assert "1.weight" not in params and "0.weight" in params  # frozen affine is not trained


def test_unfreeze_restores_class_state_and_trainability(torch):
    import normlab.torch as nt

    m = _model(torch)
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    nt.freeze_bn(m)
    with torch.no_grad():
        m[1].running_mean.add_(1.0)  # state changed while frozen must survive unfreezing
    sd["1.running_mean"] += 1.0
    m.train()
    nt.unfreeze_bn(m)
    assert type(m[1]) is torch.nn.BatchNorm2d and m[1].training
    assert m[1].weight.requires_grad
    for k, v in m.state_dict().items():
        torch.testing.assert_close(v, sd[k])


def test_frozen_state_dict_loads_into_batchnorm2d(torch):
    import normlab.torch as nt

    bn = torch.nn.BatchNorm2d(3)
    bn(torch.randn(4, 3, 2, 2))
    f = nt.FrozenBatchNorm2d.from_bn(bn)
    other = torch.nn.BatchNorm2d(3)
    other.load_state_dict(f.state_dict())
    other.eval()
    x = torch.randn(2, 3, 2, 2)
    torch.testing.assert_close(other(x), f(x))
    g = nt.FrozenBatchNorm2d(3)
    g.load_state_dict(bn.state_dict())
    torch.testing.assert_close(g(x), f(x))


def test_freeze_a_bare_bn_and_refuse_untracked(torch):
    import normlab.torch as nt

    assert isinstance(nt.freeze_bn(torch.nn.BatchNorm1d(3)), nt.FrozenBatchNorm2d)
    m = torch.nn.Sequential(torch.nn.BatchNorm2d(3),
                            torch.nn.BatchNorm2d(3, track_running_stats=False))
    with pytest.raises(ValueError, match="track_running_stats"):
        nt.freeze_bn(m)
    assert type(m[0]) is torch.nn.BatchNorm2d  # nothing was replaced before the error
    with pytest.raises(ValueError, match="channels"):
        nt.FrozenBatchNorm2d(3)(torch.randn(2, 4, 2, 2))
