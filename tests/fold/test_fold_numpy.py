"""normlab.fold on NumPy-engine models: folded models compute what the eval-mode originals do.

Random Conv2d/Linear/BN stacks (hypothesis: channels, kernel, stride, padding, groups, bias,
affine, BN before or after the layer) with random running statistics, including near-zero
running_var. Bound: max |folded - original| <= 1e-5 (float32) / 1e-12 (float64) relative to the
magnitude of the computation (``magnitude``), the scale float rounding is proportional to.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from normlab import nn
from normlab.fold import Affine, bn_to_affine, fold_bn
from normlab.functional import batch_norm_eval
from normlab.nn.batchnorm import BatchNormBase as _BatchNorm
from tests.gradcheck import numerical_grad

SETTINGS = settings(max_examples=25)
REL_TOL = {np.float32: 1e-5, np.float64: 1e-12}


def randomize_bn(model, rng, tiny_var: bool) -> None:
    for m in model.modules():
        if isinstance(m, _BatchNorm) and m.track_running_stats:
            c = m.num_features
            m.running_mean[...] = rng.normal(size=c) * 2
            var = rng.uniform(0, 3, c)
            if tiny_var:
                var[::2] = rng.uniform(0, 1e-7, len(var[::2]))
            m.running_var[...] = var
            if m.affine:
                m.weight.data[...] = rng.normal(size=c)
                m.bias.data[...] = rng.normal(size=c)


def magnitude(model, x) -> float:
    """Float64 forward of the "absolute" model (|W|, |b|, |x|, BN mean -> -|mean|, |gamma|,
    |beta|): it bounds every intermediate sum the forward rounds. Relative to the output alone
    no float32 model is accurate when running_mean nearly cancels the layer output."""
    absolute = copy.deepcopy(model)
    for m in absolute.modules():
        for p in m._parameters.values():
            p.data = np.abs(p.data).astype(np.float64)
        for name, b in list(m._buffers.items()):
            if b.dtype.kind == "f":
                setattr(m, name, np.abs(b).astype(np.float64))
        if isinstance(m, _BatchNorm) and m.track_running_stats:
            m.running_mean = -m.running_mean
    # The largest intermediate, not just the output: an error made before a Tanh passes through
    # it with slope <= 1 while the Tanh squashes the value itself to <= 1.
    h, largest = np.abs(x).astype(np.float64), 0.0
    for layer in absolute if isinstance(absolute, nn.Sequential) else [absolute]:
        h = layer(h)
        largest = max(largest, float(np.abs(h).max()))
    return largest


def assert_same_output(original, folded, x) -> float:
    want, got = original(x), folded(x)
    assert got.dtype == want.dtype and got.shape == want.shape
    err = float(np.abs(got.astype(np.float64) - want).max())
    scale = max(magnitude(original, x), 1.0)
    assert err <= REL_TOL[x.dtype.type] * scale, f"max abs error {err:.3g} vs magnitude {scale:.3g}"
    return err


def snapshot(model) -> dict:
    return model.state_dict()


def assert_unchanged(before: dict, model) -> None:
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k, v in before.items():
        np.testing.assert_array_equal(v, after[k], err_msg=k)


@st.composite
def conv_stacks(draw):
    size = draw(st.integers(5, 9))
    c = draw(st.sampled_from([2, 4]))
    blocks, c_in, s = [], c, size
    for _ in range(draw(st.integers(1, 3))):
        c_out = draw(st.sampled_from([2, 4, 6]))
        k, stride = draw(st.integers(1, 3)), draw(st.integers(1, 2))
        padding = draw(st.integers(0, 1))
        s_out = (s + 2 * padding - k) // stride + 1
        if s_out < 1:
            k, stride, padding, s_out = 1, 1, 0, s
        blocks.append(dict(c_in=c_in, c_out=c_out, k=k, stride=stride, padding=padding,
                           groups=draw(st.sampled_from([1, 2])), bias=draw(st.booleans()),
                           affine=draw(st.booleans()), bn_first=draw(st.booleans()),
                           relu=draw(st.booleans())))
        c_in, s = c_out, s_out
    return size, c, blocks


def build(blocks, dtype, rng):
    layers = []
    for b in blocks:
        conv = nn.Conv2d(b["c_in"], b["c_out"], b["k"], stride=b["stride"], padding=b["padding"],
                         groups=b["groups"], bias=b["bias"], rng=rng, dtype=dtype)
        if b["bn_first"]:
            layers += [nn.BatchNorm2d(b["c_in"], affine=b["affine"], dtype=dtype), conv]
        else:
            layers += [conv, nn.BatchNorm2d(b["c_out"], affine=b["affine"], dtype=dtype)]
        if b["relu"]:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


@SETTINGS
@given(spec=conv_stacks(), dtype=st.sampled_from([np.float32, np.float64]),
       tiny_var=st.booleans(), seed=st.integers(0, 2**16))
def test_conv_stacks_fold_exactly(spec, dtype, tiny_var, seed):
    size, c, blocks = spec
    rng = np.random.default_rng(seed)
    model = build(blocks, dtype, rng)
    randomize_bn(model, rng, tiny_var)
    model.eval()
    before = snapshot(model)

    folded, report = fold_bn(model)

    x = rng.normal(size=(3, c, size, size)).astype(dtype)
    assert_same_output(model, folded, x)
    assert_unchanged(before, model)
    assert not any(isinstance(m, _BatchNorm) for m in folded.modules())
    assert len(report.folded) == len(blocks) and not report.skipped
    assert not folded.training and all(not m.training for m in folded.modules())
    # A BN right after its conv is always merged into that conv; never an Affine then.
    n_after = sum(not b["bn_first"] for b in blocks)
    merged_back = [into for _, into in report.folded
                   if not into.startswith("Affine") and "following" not in into]
    assert len(merged_back) >= n_after


@SETTINGS
@given(widths=st.lists(st.integers(1, 6), min_size=2, max_size=4), bias=st.booleans(),
       affine=st.booleans(), bn_first=st.booleans(), tiny_var=st.booleans(),
       seed=st.integers(0, 2**16))
def test_linear_stacks_fold_exactly(widths, bias, affine, bn_first, tiny_var, seed):
    rng = np.random.default_rng(seed)
    layers = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        lin = nn.Linear(a, b, bias=bias, rng=rng)
        layers += [nn.BatchNorm1d(a, affine=affine), lin] if bn_first else \
                  [lin, nn.BatchNorm1d(b, affine=affine)]
        layers.append(nn.Tanh())
    model = nn.Sequential(*layers)
    randomize_bn(model, rng, tiny_var)
    model.eval()
    folded, report = fold_bn(model)
    assert_same_output(model, folded, rng.normal(size=(5, widths[0])).astype(np.float32))
    # Every BN merges into a Linear and leaves its rank check in its place.
    block = ["FoldedLinearCheck", "Linear"] if bn_first else ["Linear", "FoldedLinearCheck"]
    assert [type(m).__name__ for m in folded] == (block + ["Tanh"]) * (len(widths) - 1)
    assert all(m.bias is not None for m in folded if isinstance(m, nn.Linear))


@pytest.mark.parametrize("bn_first", [False, True])
def test_a_linear_fold_refuses_the_3d_input_it_would_get_wrong(bn_first):
    """BatchNorm1d also takes (N, C, L) and normalises dim 1, while a Linear maps the last dim:
    with C == features both the model and a plain merge run, and the merge computes something
    else (0.68 apart here). The folded model refuses that input instead."""
    rng = np.random.default_rng(0)
    lin, bn = nn.Linear(4, 4, rng=rng), nn.BatchNorm1d(4)
    model = nn.Sequential(*([bn, lin] if bn_first else [lin, bn]))
    randomize_bn(model, rng, False)
    model.eval()
    folded, report = fold_bn(model)
    assert len(report.folded) == 1
    assert_same_output(model, folded, rng.normal(size=(5, 4)).astype(np.float32))
    x3 = rng.normal(size=(2, 4, 4)).astype(np.float32)
    model(x3)   # the unfolded model accepts it
    with pytest.raises(ValueError, match=r"expected a 2-D \(N, features\) tensor where "
                                         r"BatchNorm '[01]' was folded into a Linear.*\(2, 4, 4\)"):
        folded(x3)


def test_affine_and_padded_conv_and_nested_modules():
    """BN after ReLU before a padded conv -> Affine; nested custom modules fold inside."""
    rng = np.random.default_rng(0)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1, rng=rng), nn.BatchNorm2d(3))
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x):
            return self.bn(self.body(x)) + x

    model = nn.Sequential(nn.ReLU(), nn.BatchNorm2d(3), nn.Conv2d(3, 3, 3, padding=1, rng=rng),
                          Block(), nn.BatchNorm2d(3, track_running_stats=False))
    randomize_bn(model, rng, tiny_var=True)
    model.eval()
    folded, report = fold_bn(model)
    x = rng.normal(size=(2, 3, 5, 5)).astype(np.float32)
    assert_same_output(model, folded, x)
    into = dict(report.folded)
    assert into["1"].startswith("Affine") and "pads with zeros" in into["1"]
    assert into["3.body.1"] == "3.body.0"
    assert into["3.bn"].startswith("Affine")
    assert "track_running_stats=False" in dict(report.skipped)["4"]
    assert isinstance(folded[1], Affine) and isinstance(folded[3].bn, Affine)


def test_shared_layer_is_not_merged():
    rng = np.random.default_rng(1)
    lin = nn.Linear(3, 3, rng=rng)
    model = nn.Sequential(lin, nn.BatchNorm1d(3), lin)
    randomize_bn(model, rng, tiny_var=False)
    model.eval()
    folded, report = fold_bn(model)
    assert_same_output(model, folded, rng.normal(size=(4, 3)).astype(np.float32))
    assert "shared" in dict(report.folded)["1"] and isinstance(folded[1], Affine)


@pytest.mark.parametrize("which", ["root", "one bn"])
def test_training_mode_is_refused(which):
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    if which == "one bn":
        model.eval()
        model[1].train()
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"model: expected an eval-mode model .*model\.eval\(\)"):
        fold_bn(model)
    assert_unchanged(before, model)


def test_bad_arguments():
    with pytest.raises(TypeError, match="model: expected a normlab.nn.Module, got list"):
        fold_bn([])
    with pytest.raises(TypeError, match="bn: expected a normlab.nn BatchNorm"):
        bn_to_affine(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="bn: expected track_running_stats=True"):
        bn_to_affine(nn.BatchNorm1d(2, track_running_stats=False))
    with pytest.raises(ValueError, match="shift: expected shape"):
        Affine(np.ones(3), np.ones(2))


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5), (2, 3, 4, 4), (2, 3, 2, 3, 2)])
def test_affine_matches_bn_eval_and_gradcheck(shape):
    rng = np.random.default_rng(2)
    c = shape[1]
    bn = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}[len(shape)]
    bn = bn(c, dtype=np.float64)
    # Moderate running_var: finite differences of a loss scaled by 1/sqrt(eps) lose digits.
    randomize_bn(bn, rng, tiny_var=False)
    bn.eval()
    scale, shift = bn_to_affine(bn)
    x = rng.normal(size=shape)
    want = batch_norm_eval(x, bn.running_mean, bn.running_var, bn.weight.data, bn.bias.data)
    affine = Affine(scale, shift, dtype=np.float64)
    np.testing.assert_allclose(affine(x), want, rtol=1e-12, atol=1e-12)

    dy = rng.normal(size=shape)
    affine(x)
    dx = affine.backward(dy)

    def loss() -> float:
        return float((affine.forward(x) * dy).sum())

    np.testing.assert_allclose(dx, numerical_grad(lambda: loss(), x), rtol=1e-6, atol=1e-8)
    for p in (affine.scale, affine.shift):
        np.testing.assert_allclose(p.grad, numerical_grad(lambda: loss(), p.data),
                                   rtol=1e-6, atol=1e-8)
