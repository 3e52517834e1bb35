"""Every layer: float64 finite-difference gradcheck of backward (input and parameters), and
forward/backward parity with the torch.nn layer given the same weights and buffers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

import normlab.nn as nn
from tests.gradcheck import assert_grad_close, numerical_grad


@dataclass
class Spec:
    name: str
    ours: Callable          # dtype -> normlab module
    theirs: Callable        # torch -> torch module
    shape: tuple
    mode: str = "train"     # "train" or "eval"

    def __str__(self) -> str:
        return self.name


SPECS = [
    Spec("linear", lambda d: nn.Linear(5, 3, rng=0, dtype=d), lambda t: t.nn.Linear(5, 3), (4, 5)),
    Spec("linear-3d-nobias", lambda d: nn.Linear(5, 3, bias=False, rng=1, dtype=d),
         lambda t: t.nn.Linear(5, 3, bias=False), (2, 4, 5)),
    Spec("conv-stride-pad", lambda d: nn.Conv2d(3, 4, 3, stride=2, padding=1, rng=2, dtype=d),
         lambda t: t.nn.Conv2d(3, 4, 3, stride=2, padding=1), (2, 3, 7, 6)),
    Spec("conv-groups-dilation",
         lambda d: nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2, bias=False, rng=3,
                             dtype=d),
         lambda t: t.nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2, bias=False),
         (2, 4, 5, 5)),
    Spec("conv-rect", lambda d: nn.Conv2d(2, 3, (2, 3), stride=(1, 2), rng=4, dtype=d),
         lambda t: t.nn.Conv2d(2, 3, (2, 3), stride=(1, 2)), (1, 2, 5, 6)),
    Spec("maxpool", lambda d: nn.MaxPool2d(2), lambda t: t.nn.MaxPool2d(2), (2, 3, 4, 5)),
    Spec("maxpool-pad", lambda d: nn.MaxPool2d(3, stride=2, padding=1),
         lambda t: t.nn.MaxPool2d(3, stride=2, padding=1), (2, 2, 5, 5)),
    Spec("avgpool", lambda d: nn.AvgPool2d(2), lambda t: t.nn.AvgPool2d(2), (2, 3, 4, 5)),
    Spec("avgpool-pad", lambda d: nn.AvgPool2d(3, stride=2, padding=1),
         lambda t: t.nn.AvgPool2d(3, stride=2, padding=1), (2, 2, 5, 5)),
    Spec("flatten", lambda d: nn.Flatten(), lambda t: t.nn.Flatten(), (2, 3, 2, 2)),
    Spec("relu", lambda d: nn.ReLU(), lambda t: t.nn.ReLU(), (3, 5)),
    Spec("sigmoid", lambda d: nn.Sigmoid(), lambda t: t.nn.Sigmoid(), (3, 5)),
    Spec("tanh", lambda d: nn.Tanh(), lambda t: t.nn.Tanh(), (3, 5)),
    Spec("bn1d", lambda d: nn.BatchNorm1d(4, dtype=d), lambda t: t.nn.BatchNorm1d(4), (6, 4)),
    Spec("bn1d-3d-eval", lambda d: nn.BatchNorm1d(4, dtype=d), lambda t: t.nn.BatchNorm1d(4),
         (3, 4, 2), "eval"),
    Spec("bn1d-noaffine", lambda d: nn.BatchNorm1d(3, affine=False, dtype=d),
         lambda t: t.nn.BatchNorm1d(3, affine=False), (5, 3, 2)),
    Spec("bn1d-notrack-eval", lambda d: nn.BatchNorm1d(3, track_running_stats=False, dtype=d),
         lambda t: t.nn.BatchNorm1d(3, track_running_stats=False), (5, 3), "eval"),
    Spec("bn2d", lambda d: nn.BatchNorm2d(3, dtype=d), lambda t: t.nn.BatchNorm2d(3),
         (3, 3, 2, 3)),
    Spec("bn2d-eval", lambda d: nn.BatchNorm2d(3, dtype=d), lambda t: t.nn.BatchNorm2d(3),
         (2, 3, 2, 2), "eval"),
    Spec("bn3d", lambda d: nn.BatchNorm3d(2, momentum=None, dtype=d),
         lambda t: t.nn.BatchNorm3d(2, momentum=None), (2, 2, 2, 1, 3)),
    Spec("layernorm", lambda d: nn.LayerNorm((3, 4), dtype=d), lambda t: t.nn.LayerNorm((3, 4)),
         (2, 2, 3, 4)),
    Spec("layernorm-noaffine", lambda d: nn.LayerNorm(4, elementwise_affine=False, dtype=d),
         lambda t: t.nn.LayerNorm(4, elementwise_affine=False), (3, 4)),
    Spec("groupnorm", lambda d: nn.GroupNorm(2, 4, dtype=d), lambda t: t.nn.GroupNorm(2, 4),
         (3, 4, 2, 3)),
    Spec("instancenorm1d", lambda d: nn.InstanceNorm1d(3, dtype=d),
         lambda t: t.nn.InstanceNorm1d(3), (2, 3, 5)),
    Spec("instancenorm2d-tracked",
         lambda d: nn.InstanceNorm2d(3, affine=True, track_running_stats=True, dtype=d),
         lambda t: t.nn.InstanceNorm2d(3, affine=True, track_running_stats=True), (2, 3, 3, 2)),
    Spec("instancenorm2d-tracked-eval",
         lambda d: nn.InstanceNorm2d(3, affine=True, track_running_stats=True, dtype=d),
         lambda t: t.nn.InstanceNorm2d(3, affine=True, track_running_stats=True), (2, 3, 3, 2),
         "eval"),
]


def perturb(layer: nn.Module, rng: np.random.Generator) -> None:
    """Move norm parameters and running stats off their trivial 1/0 initial values."""
    sd = layer.state_dict()
    for key, value in sd.items():
        if key.endswith("running_var"):
            sd[key] = rng.uniform(0.5, 2.0, value.shape).astype(value.dtype)
        elif key.endswith(("running_mean", "weight", "bias")) and isinstance(layer, (
                nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm,
                nn.InstanceNorm2d)):
            sd[key] = (value + 0.5 * rng.standard_normal(value.shape)).astype(value.dtype)
    layer.load_state_dict(sd)


def build(spec: Spec, dtype) -> nn.Module:
    layer = spec.ours(dtype)
    perturb(layer, np.random.default_rng(0))
    return layer.train(spec.mode == "train")


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_backward_matches_finite_differences(spec):
    rng = np.random.default_rng(1)
    layer = build(spec, np.float64)
    x = rng.standard_normal(spec.shape)
    dy = rng.standard_normal(layer(x).shape)

    def f() -> float:
        return float(np.sum(layer(x) * dy))

    layer(x)
    dx = layer.backward(dy)
    grads = {name: p.grad.copy() for name, p in layer.named_parameters()}
    assert_grad_close(dx, numerical_grad(f, x), rtol=1e-5, atol=1e-7)
    for name, p in layer.named_parameters():
        assert_grad_close(grads[name], numerical_grad(f, p.data), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_forward_backward_match_torch(spec, torch):
    rng = np.random.default_rng(2)
    layer = build(spec, np.float32)
    ref = spec.theirs(torch)
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    ref.train(spec.mode == "train")
    for step in range(2):  # twice: the second forward sees updated running statistics
        x = rng.standard_normal(spec.shape).astype(np.float32)
        y = layer(x)
        xt = torch.from_numpy(x).requires_grad_(True)
        yt = ref(xt)
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-5, atol=1e-5,
                                   err_msg=f"forward, step {step}")
        assert y.dtype == np.float32
        dy = rng.standard_normal(y.shape).astype(np.float32)
        dx = layer.backward(dy)
        yt.backward(torch.from_numpy(dy))
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-4, atol=1e-5,
                                   err_msg=f"dx, step {step}")
        # grads accumulate over the two steps, in both engines
        for name, p in layer.named_parameters():
            np.testing.assert_allclose(p.grad, dict(ref.named_parameters())[name].grad.numpy(),
                                       rtol=1e-4, atol=1e-5, err_msg=f"{name}.grad")
    sd, ref_sd = layer.state_dict(), ref.state_dict()
    assert list(sd) == list(ref_sd)
    for key, value in sd.items():
        np.testing.assert_allclose(value, ref_sd[key].numpy(), rtol=1e-5, atol=1e-6, err_msg=key)


def test_cross_entropy_matches_torch_and_finite_differences(torch):
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((6, 4)) * 30  # large logits: the stable log-softmax matters
    labels = rng.integers(0, 4, 6)
    loss = nn.CrossEntropyLoss()
    value = loss(logits, labels)
    grad = loss.backward()
    lt = torch.from_numpy(logits).requires_grad_(True)
    ref = torch.nn.functional.cross_entropy(lt, torch.from_numpy(labels))
    ref.backward()
    np.testing.assert_allclose(value, ref.item(), rtol=1e-12)
    np.testing.assert_allclose(grad, lt.grad.numpy(), rtol=1e-10, atol=1e-14)
    assert_grad_close(grad, numerical_grad(lambda: loss(logits, labels), logits))


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("label_dtype", [np.int64, np.uint8])
def test_cross_entropy_paths_match_torch(torch, monkeypatch, backend, dtype, label_dtype):
    """The fused kernel and the NumPy path: same loss and gradient as torch (float32 within
    float32 rounding), dloss scales the gradient, a bad label raises before the cache moves."""
    monkeypatch.setenv("NORMLAB_KERNELS", backend)
    rng = np.random.default_rng(5)
    logits = (rng.standard_normal((60, 10)) * 8).astype(dtype)
    labels = rng.integers(0, 10, 60).astype(label_dtype)
    loss = nn.CrossEntropyLoss()
    value = loss(logits, labels)
    grad = loss.backward(0.5)
    lt = torch.from_numpy(logits.astype(np.float64)).requires_grad_(True)
    ref = torch.nn.functional.cross_entropy(lt, torch.from_numpy(labels.astype(np.int64)))
    (0.5 * ref).backward()
    tol = 1e-6 if dtype == np.float32 else 1e-12
    assert grad.dtype == dtype and grad.shape == logits.shape
    np.testing.assert_allclose(value, ref.item(), rtol=tol)
    np.testing.assert_allclose(grad, lt.grad.numpy(), rtol=tol * 10, atol=tol * 0.1)
    cache = loss._cache
    bad = labels.copy()
    bad[7] = 10
    with pytest.raises(ValueError, match=r"labels: expected class indices in \[0, 10\)"):
        loss(logits, bad)
    assert loss._cache is cache


def test_mse_matches_torch_and_finite_differences(torch):
    rng = np.random.default_rng(4)
    pred, target = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    loss = nn.MSELoss()
    value = loss(pred, target)
    grad = loss.backward()
    pt = torch.from_numpy(pred).requires_grad_(True)
    ref = torch.nn.functional.mse_loss(pt, torch.from_numpy(target))
    ref.backward()
    np.testing.assert_allclose(value, ref.item(), rtol=1e-12)
    np.testing.assert_allclose(grad, pt.grad.numpy(), rtol=1e-12)
    assert_grad_close(grad, numerical_grad(lambda: loss(pred, target), pred))


def test_dropout_is_inverted_seeded_and_off_in_eval():
    x = np.ones((200, 50), dtype=np.float32)
    a, b = nn.Dropout(0.3, rng=7), nn.Dropout(0.3, rng=7)
    ya, yb = a(x), b(x)
    assert np.array_equal(ya, yb)                                    # same seed, same mask
    assert set(np.unique(ya)) == {0.0, np.float32(1 / 0.7)}          # inverted scaling
    assert abs((ya == 0).mean() - 0.3) < 0.02
    dy = np.random.default_rng(0).standard_normal(x.shape).astype(np.float32)
    np.testing.assert_array_equal(a.backward(dy), dy * ya)           # same mask, same scale
    a.eval()
    assert a(x) is x and a.backward(dy) is dy
    assert np.all(nn.Dropout(1.0, rng=0)(x) == 0)


def test_dropout_gradcheck_with_fixed_mask():
    x = np.random.default_rng(5).standard_normal((4, 6))
    dy = np.random.default_rng(6).standard_normal((4, 6))
    layer = nn.Dropout(0.5)

    def f() -> float:
        layer.rng = np.random.default_rng(11)  # redraw the same mask for every evaluation
        return float(np.sum(layer(x) * dy))

    f()
    assert_grad_close(layer.backward(dy), numerical_grad(f, x))


def test_maxpool_routes_ties_to_the_first_maximum(torch):
    x = np.zeros((1, 1, 2, 2), dtype=np.float32)
    pool = nn.MaxPool2d(2)
    pool(x)
    dx = pool.backward(np.ones((1, 1, 1, 1), dtype=np.float32))
    xt = torch.zeros(1, 1, 2, 2, requires_grad=True)
    torch.nn.functional.max_pool2d(xt, 2).sum().backward()
    np.testing.assert_array_equal(dx, xt.grad.numpy())


def test_default_init_has_torch_bounds():
    layer = nn.Linear(400, 300, rng=0)
    bound = 1 / np.sqrt(400)
    for p in (layer.weight.data, layer.bias.data):
        assert p.dtype == np.float32
        assert np.abs(p).max() <= bound
        assert np.abs(p).max() > 0.98 * bound   # uniform over the whole interval
    np.testing.assert_allclose(layer.weight.data.std(), bound / np.sqrt(3), rtol=0.02)
    conv = nn.Conv2d(8, 4, 3, rng=0)
    assert np.abs(conv.weight.data).max() <= 1 / np.sqrt(8 * 9)
