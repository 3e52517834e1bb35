"""The ResNet-20-style CNN of the paper-size experiments (He et al. 2016 sec. 4.2): its shape,
the NumPy residual block's hand-written backward against finite differences in float64, and
parity with its torch twin over training steps for every norm of the registry."""

from __future__ import annotations

import numpy as np
import pytest

from normlab import nn
from normlab.engines.numpy import NumpyTrainer, build_numpy
from normlab.engines.numpy_resnet import BasicBlock, GlobalAvgPool
from normlab.engines.spec import NORMS
from normlab.runner.resnet import resnet_spec, stage_sides
from tests.gradcheck import assert_grad_close, numerical_grad

RESNET_NORMS = [n for n in NORMS if n != "activation"]


def test_resnet20_shape():
    spec = resnet_spec((28, 28), 10, "batch")
    blocks = [s for s in spec if s[0] == "resblock"]
    convs = 1 + 2 * len(blocks)
    assert convs + 1 == 20                    # 6n + 2 weighted layers, n = 3
    assert [(b[1], b[2], b[3]) for b in blocks] == [
        (16, 16, 1), (16, 16, 1), (16, 16, 1), (16, 32, 2), (32, 32, 1), (32, 32, 1),
        (32, 64, 2), (64, 64, 1), (64, 64, 1)]
    assert stage_sides((28, 28)) == [(28, 28), (14, 14), (7, 7)]   # the last stage is 7x7
    # 8x8 digits: a stage strides only while the side is above 4 (8 -> 4 -> 4, not 2x2)
    assert stage_sides((8, 8)) == [(8, 8), (4, 4), (4, 4)]
    assert [s[0] for s in spec[:3]] == ["conv", "norm", "relu"] and spec[-2:] == (
        ("gap",), ("linear", 64, 10))
    model = build_numpy(spec, 0.01, np.random.default_rng(0))
    out = model(np.zeros((2, 1, 28, 28), np.float32))
    assert out.shape == (2, 10)
    with pytest.raises(ValueError, match="norm: expected one of"):
        resnet_spec((8, 8), 10, "batchnorm")


def _float64(module: nn.Module) -> nn.Module:
    for m in module.modules():
        for p in m._parameters.values():
            p.data = p.data.astype(np.float64)
        for name, b in list(m._buffers.items()):
            if b.dtype.kind == "f":
                setattr(m, name, b.astype(np.float64))
    return module


@pytest.mark.parametrize("norm,virtual", [("batch", None), ("batch", 2), ("group", None),
                                          ("layer", None), ("instance", None), ("none", None)])
@pytest.mark.parametrize("c_in,c_out,stride", [(4, 4, 1), (4, 8, 2), (4, 8, 1)])
def test_block_backward_matches_finite_differences(norm, virtual, c_in, c_out, stride):
    """Input and every parameter gradient of one block, training mode, float64, against
    central differences: identity and option-A shortcuts (stride 2 + zero channels, and zero
    channels alone), the ghost groups included."""
    side = 6 // stride
    block = _float64(BasicBlock(("resblock", c_in, c_out, stride, norm, side, side, None,
                                 virtual), np.random.default_rng(0)))
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, c_in, 6, 6))
    w = rng.normal(size=(4, c_out, side, side))   # loss = sum(w * block(x)): dy = w

    def loss():
        return float(np.sum(w * block(x)))

    block.zero_grad()
    block(x)
    dx = block.backward(w.copy())
    # the tolerance of the layers' own gradchecks (tests/nn/test_nn_layers.py): a sum of 1,152
    # outputs carries ~1e-14 of float64 rounding, ~1e-8 after dividing by h = 1e-6
    assert_grad_close(dx, numerical_grad(loss, x), rtol=1e-5, atol=1e-7)
    for _, p in block.named_parameters():
        assert_grad_close(p.grad, numerical_grad(loss, p.data), rtol=1e-5, atol=1e-7)


def test_shortcut_backward_is_the_adjoint_of_the_shortcut():
    """<shortcut(x), y> = <x, shortcut_backward(y)> for random x, y: what a backward must be."""
    block = BasicBlock(("resblock", 3, 8, 2, "none", 3, 3, None, None), np.random.default_rng(0))
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(2, 3, 5, 5)), rng.normal(size=(2, 8, 3, 3))
    block._in_shape = x.shape
    s = block.shortcut(x)
    assert s.shape == y.shape and np.all(s[:, :2] == 0) and np.all(s[:, 5:] == 0)
    np.testing.assert_array_equal(s[:, 2:5], x[:, :, ::2, ::2])
    assert np.vdot(s, y) == pytest.approx(np.vdot(x, block.shortcut_backward(y)), rel=1e-12)


def test_global_average_pool_backward():
    pool = GlobalAvgPool()
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 5))
    g = np.random.default_rng(1).normal(size=(2, 3))
    np.testing.assert_allclose(pool(x), x.mean(axis=(2, 3)), rtol=1e-12)
    assert_grad_close(pool.backward(g), numerical_grad(lambda: float(np.sum(g * pool(x))), x))
    with pytest.raises(ValueError, match="dy"):
        pool.backward(np.zeros((2, 4)))


@pytest.mark.parametrize("norm,virtual", [(n, None) for n in RESNET_NORMS]
                         + [("batch", 2), ("renorm", 2)])
def test_resnet_trains_identically_on_both_engines(torch, norm, virtual):
    """Same keys, and three SGD steps from the same weights give the same losses, weights and
    eval outputs on both engines (renorm's schedule ramps inside them)."""
    spec = resnet_spec((8, 8), 10, norm, schedule=(3.0, 5.0, 1, 3, 2), virtual=virtual)
    from normlab.engines.torch import build_torch

    model = build_numpy(spec, 0.01, np.random.default_rng(0))
    twin = build_torch(spec, model.state_dict())
    assert list(twin.state_dict()) == list(model.state_dict())
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, size=4)
    ours = NumpyTrainer(model, 0.05)
    opt = torch.optim.SGD(twin.parameters(), lr=0.05)
    for _ in range(3):
        twin.train()
        loss = torch.nn.functional.cross_entropy(twin(torch.from_numpy(x)), torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert ours.train_step(x, y) == pytest.approx(loss.item(), rel=1e-5, abs=1e-6)
    theirs = {k: v.detach().numpy() for k, v in twin.state_dict().items()}
    for k, v in model.state_dict().items():
        np.testing.assert_allclose(theirs[k], v, rtol=1e-4, atol=1e-5, err_msg=k)
    model.eval()
    twin.eval()
    with torch.no_grad():
        np.testing.assert_allclose(twin(torch.from_numpy(x)).numpy(), model(x), rtol=1e-4,
                                   atol=1e-5)
