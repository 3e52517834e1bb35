"""BatchNorm1d/2d/3d modules against torch.nn over random shapes and several training steps."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import normlab.nn as nn

CLASSES = {1: "BatchNorm1d", 2: "BatchNorm2d", 3: "BatchNorm3d"}


@st.composite
def bn_case(draw):
    dim = draw(st.sampled_from([1, 2, 3]))
    c = draw(st.integers(1, 4))
    n = draw(st.integers(2, 5))
    spatial = {1: draw(st.sampled_from([(), (1,), (3,)])), 2: (draw(st.integers(1, 3)),
               draw(st.integers(1, 3))), 3: (2, draw(st.integers(1, 2)), 2)}[dim]
    kwargs = {"momentum": draw(st.sampled_from([0.1, 0.5, None])),
              "affine": draw(st.booleans()), "track_running_stats": draw(st.booleans()),
              "eps": draw(st.sampled_from([1e-5, 1e-3]))}
    return dim, (n, c, *spatial), kwargs, draw(st.integers(0, 2**16))


@settings(max_examples=30)
@given(case=bn_case())
def test_batchnorm_module_matches_torch_over_steps(torch, case):
    dim, shape, kwargs, seed = case
    rng = np.random.default_rng(seed)
    ours = getattr(nn, CLASSES[dim])(shape[1], **kwargs)
    ref = getattr(torch.nn, CLASSES[dim])(shape[1], **kwargs)
    if kwargs["affine"]:
        ours.weight.data[...] = rng.uniform(0.5, 2, shape[1])
        ours.bias.data[...] = rng.standard_normal(shape[1])
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    for step in range(4):
        training = step < 3                  # three training steps, then eval
        ours.train(training)
        ref.train(training)
        x = (rng.standard_normal(shape) * 3 + 2).astype(np.float32)
        dy = rng.standard_normal(shape).astype(np.float32)
        xt = torch.from_numpy(x).requires_grad_(True)
        yt = ref(xt)
        yt.backward(torch.from_numpy(dy))
        y = ours(x)
        dx = ours.backward(dy)
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-4, atol=2e-5)
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-3, atol=2e-4)
        for name, p in ours.named_parameters():
            np.testing.assert_allclose(p.grad, getattr(ref, name).grad.numpy(),
                                       rtol=1e-4, atol=1e-4)
        sd, ref_sd = ours.state_dict(), ref.state_dict()
        assert list(sd) == list(ref_sd)
        for key in sd:
            np.testing.assert_allclose(sd[key], ref_sd[key].numpy(), rtol=1e-5, atol=1e-6,
                                       err_msg=f"{key} after step {step}")


def test_momentum_none_is_the_cumulative_average():
    bn = nn.BatchNorm1d(2, momentum=None, dtype=np.float64)
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((6, 2)) * (i + 1) + i for i in range(5)]
    for x in batches:
        bn(x)
    np.testing.assert_allclose(bn.running_mean, np.mean([b.mean(0) for b in batches], axis=0))
    np.testing.assert_allclose(bn.running_var,
                               np.mean([b.var(0, ddof=1) for b in batches], axis=0))
    assert int(bn.num_batches_tracked) == 5


def test_untracked_bn_uses_batch_stats_in_eval():
    bn = nn.BatchNorm2d(3, track_running_stats=False, dtype=np.float64).eval()
    x = np.random.default_rng(0).standard_normal((4, 3, 2, 2)) * 5 + 3
    y = bn(x)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, rtol=1e-4)


def test_eval_is_one_multiply_add_with_running_stats():
    """Alg. 2: y = gamma / sqrt(var + eps) * x + (beta - gamma * mean / sqrt(var + eps))."""
    bn = nn.BatchNorm1d(3, dtype=np.float64).eval()
    bn.running_mean[...] = [1.0, -2.0, 0.5]
    bn.running_var[...] = [4.0, 0.25, 1.0]
    bn.weight.data[...] = [2.0, 1.0, -1.0]
    bn.bias.data[...] = [0.0, 1.0, 3.0]
    x = np.random.default_rng(0).standard_normal((5, 3))
    scale = bn.weight.data / np.sqrt(bn.running_var + bn.eps)
    np.testing.assert_allclose(bn(x), x * scale + (bn.bias.data - bn.running_mean * scale))
    assert int(bn.num_batches_tracked) == 0


@pytest.mark.parametrize("momentum", [0.1, None])
def test_instance_norm_running_stats_match_torch(torch, momentum):
    ours = nn.InstanceNorm1d(3, momentum=momentum, track_running_stats=True)
    ref = torch.nn.InstanceNorm1d(3, momentum=momentum, track_running_stats=True)
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = (rng.standard_normal((2, 3, 4)) + 1).astype(np.float32)
        np.testing.assert_allclose(ours(x), ref(torch.from_numpy(x)).numpy(), atol=1e-5)
    sd, ref_sd = ours.state_dict(), ref.state_dict()
    assert list(sd) == list(ref_sd)
    for key in sd:
        np.testing.assert_allclose(sd[key], ref_sd[key].numpy(), rtol=1e-6, err_msg=key)


def test_groupnorm_with_one_group_is_layernorm_over_chw():
    x = np.random.default_rng(0).standard_normal((2, 4, 3, 3))
    gn = nn.GroupNorm(1, 4, affine=False, dtype=np.float64)
    ln = nn.LayerNorm((4, 3, 3), elementwise_affine=False, dtype=np.float64)
    np.testing.assert_allclose(gn(x), ln(x), atol=1e-12)
    dy = np.random.default_rng(1).standard_normal(x.shape)
    np.testing.assert_allclose(gn.backward(dy), ln.backward(dy), atol=1e-12)
