"""normlab.torch.fold_bn: folded torch models compute what the eval-mode originals compute.

Random Conv/ConvTranspose/Linear -> BN stacks (hypothesis) with random running statistics,
including near-zero running_var (scale ~ 1/sqrt(eps) amplifies rounding the most). Error bound:
max |folded - original| <= 1e-5 (float32) / 1e-12 (float64) relative to the magnitude of the
computation (``magnitude``), the scale float rounding errors are proportional to.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=25)
REL_TOL = {"float32": 1e-5, "float64": 1e-12}


def randomize_bn(torch, model, gen, tiny_var: bool) -> None:
    """Random running stats and affine parameters; some running_var near zero."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=gen) * 2)
            var = torch.rand(c, generator=gen) * 3
            if tiny_var:
                var[::2] = torch.rand(len(var[::2]), generator=gen) * 1e-7
            m.running_var.copy_(var)
            if m.affine:
                m.weight.data.copy_(torch.randn(c, generator=gen))
                m.bias.data.copy_(torch.randn(c, generator=gen))


def magnitude(torch, model, x):
    """Float64 forward of the "absolute" model: |W|, |b|, |x|, BN mean -> -|mean|, |gamma|, |beta|.

    It bounds every intermediate sum the float32 forward rounds (|sum w x| <= sum |w||x|; ReLU
    and tanh are monotone), so float32 rounding error is a small multiple of eps32 times the
    largest intermediate value. Intermediates, not just the output: an error made before a tanh
    passes through it with slope <= 1 while the tanh squashes the value itself to <= 1.
    Relative to the OUTPUT alone no float32 model is accurate: when running_mean nearly cancels
    the conv output, (z - mean) * scale is small while z * scale and mean * scale are not.
    """
    nn = torch.nn
    absolute = copy.deepcopy(model).double()
    with torch.no_grad():
        for m in absolute.modules():
            for p in m.parameters(recurse=False):
                p.abs_()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_(-m.running_mean.abs())
        largest = [0.0]

        def record(module, inputs, output):
            largest[0] = max(largest[0], output.abs().max().item())

        hooks = [m.register_forward_hook(record) for m in absolute.modules()]
        absolute(x.double().abs())
        for h in hooks:
            h.remove()
        return largest[0]


def assert_same_output(torch, original, folded, x, dtype: str) -> float:
    """max |folded - original| <= tol * magnitude of the computation (see ``magnitude``)."""
    with torch.no_grad():
        want, got = original(x), folded(x)
    err = (got - want).abs().max().item()
    scale = max(magnitude(torch, original, x), 1.0)
    assert err <= REL_TOL[dtype] * scale, f"max abs error {err:.3g} vs magnitude {scale:.3g}"
    return err


def state_of(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_unchanged(torch, before: dict, model) -> None:
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k


@st.composite
def conv_stacks(draw):
    """Spec of a channels-first stack: (dims, input size, channels, [layer specs])."""
    dims = draw(st.sampled_from([1, 2, 2, 3]))
    size = draw(st.integers(5, 9)) if dims < 3 else draw(st.integers(4, 6))
    c = draw(st.sampled_from([2, 4]))
    layers = []
    c_in, s = c, size
    for _ in range(draw(st.integers(1, 3))):
        groups = draw(st.sampled_from([1, 2]))
        c_out = draw(st.sampled_from([2, 4, 6]))
        k = draw(st.integers(1, 3))
        stride = draw(st.integers(1, 2))
        padding = draw(st.integers(0, 1))
        transposed = draw(st.booleans())
        if transposed:
            s_out = (s - 1) * stride - 2 * padding + k
        else:
            s_out = (s + 2 * padding - k) // stride + 1
        if s_out < 1:
            k, stride, padding, s_out = 1, 1, 0, s
        layers.append(dict(c_in=c_in, c_out=c_out, k=k, stride=stride, padding=padding,
                           groups=groups, transposed=transposed, bias=draw(st.booleans()),
                           affine=draw(st.booleans()), relu=draw(st.booleans())))
        c_in, s = c_out, s_out
    return dims, size, c, layers


def build_conv_stack(torch, dims, layers):
    nn = torch.nn
    conv = {(1, False): nn.Conv1d, (2, False): nn.Conv2d, (3, False): nn.Conv3d,
            (1, True): nn.ConvTranspose1d, (2, True): nn.ConvTranspose2d,
            (3, True): nn.ConvTranspose3d}
    bn = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims]
    mods = []
    for spec in layers:
        mods.append(conv[dims, spec["transposed"]](
            spec["c_in"], spec["c_out"], spec["k"], stride=spec["stride"],
            padding=spec["padding"], groups=spec["groups"], bias=spec["bias"]))
        mods.append(bn(spec["c_out"], affine=spec["affine"]))
        if spec["relu"]:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)



@SETTINGS
@given(spec=conv_stacks(), dtype=st.sampled_from(["float32", "float64"]),
       tiny_var=st.booleans(), seed=st.integers(0, 2**16), wrap=st.booleans())
def test_conv_stacks_fold_exactly(torch, spec, dtype, tiny_var, seed, wrap):
    folded, report = fold_random_stack(torch, build_conv_stack, spec, dtype, tiny_var, seed,
                                       wrap)
    layers = spec[3]
    assert len(report.folded) == len(layers) and not report.skipped, str(report)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                   for m in folded.modules())


def fold_random_stack(torch, build, spec, dtype, tiny_var, seed, wrap):
    """Build ``spec`` with ``build``, randomise its BN statistics, fold it; check the folded
    model computes the same and the original is untouched; return (folded, report)."""
    from normlab.torch.fold import fold_bn

    dims, size, c, layers = spec
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = build(torch, dims, layers).to(getattr(torch, dtype))
    if wrap:  # the same stack inside a custom module: exercised through torch.fx
        model = Wrapper(torch, model).to(getattr(torch, dtype))
    randomize_bn(torch, model, gen, tiny_var)
    model.eval()
    before = state_of(model)
    folded, report = fold_bn(model)
    x = torch.randn((3, c) + (size,) * dims, generator=gen).to(getattr(torch, dtype))
    assert_same_output(torch, model, folded, x, dtype)
    assert_unchanged(torch, before, model)
    return folded, report


def Wrapper(torch, body):
    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = body

        def forward(self, x):
            return self.body(x) * 2.0

    return Wrapped()


@SETTINGS
@given(widths=st.lists(st.integers(1, 7), min_size=2, max_size=4), bias=st.booleans(),
       affine=st.booleans(), tiny_var=st.booleans(), seed=st.integers(0, 2**16))
def test_linear_stacks_fold_exactly(torch, widths, bias, affine, tiny_var, seed):
    from normlab.torch.fold import fold_bn

    nn = torch.nn
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mods = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        mods += [nn.Linear(a, b, bias=bias), nn.BatchNorm1d(b, affine=affine), nn.Tanh()]
    model = nn.Sequential(*mods)
    randomize_bn(torch, model, gen, tiny_var)
    model.eval()
    folded, report = fold_bn(model)
    assert_same_output(torch, model, folded, torch.randn(5, widths[0], generator=gen), "float32")
    assert [bn for bn, _ in report.folded] == [str(i) for i in range(1, len(mods), 3)]
    # Identity placeholders keep the other layers' state-dict keys; every Linear gets a bias.
    assert set(folded.state_dict()) == {f"{i}.{p}" for i in range(0, len(mods), 3)
                                        for p in ("weight", "bias")}


def test_input_model_is_not_mutated_and_bias_is_created(torch):
    from normlab.torch.fold import fold_bn

    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4)).eval()
    randomize_bn(torch, model, torch.Generator().manual_seed(0), tiny_var=False)
    before = state_of(model)
    folded, _ = fold_bn(model)
    assert_unchanged(torch, before, model)
    assert model[0].bias is None and isinstance(model[1], nn.BatchNorm2d)
    assert folded[0].bias is not None and isinstance(folded[1], nn.Identity)
    assert folded[0].weight.dtype == torch.float32


@pytest.mark.parametrize("which", ["root", "one bn"])
def test_training_mode_is_refused(torch, which):
    from normlab.torch.fold import fold_bn

    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    if which == "one bn":
        model.eval()
        model[1].train()
    before = state_of(model)
    with pytest.raises(ValueError, match=r"model: expected an eval-mode model .*model\.eval\(\)"):
        fold_bn(model)
    assert_unchanged(torch, before, model)


def test_bad_model_type(torch):
    from normlab.torch.fold import fold_bn

    with pytest.raises(TypeError, match="model: expected a torch.nn.Module, got dict"):
        fold_bn({})


def test_graph_reports_what_it_cannot_fold(torch):
    """Branching outputs, shared layers, non-module inputs and batch-stat BNs are reported."""
    from normlab.torch.fold import fold_bn

    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv_ok = nn.Conv2d(3, 4, 3, padding=1)
            self.bn_ok = nn.BatchNorm2d(4)
            self.conv_branch = nn.Conv2d(4, 4, 1)
            self.bn_branch = nn.BatchNorm2d(4)       # conv_branch's output also feeds the sum
            self.shared = nn.Conv2d(4, 4, 1)
            self.bn_shared = nn.BatchNorm2d(4)       # shared conv is called twice
            self.bn_after_add = nn.BatchNorm2d(4)    # input is an add: folds FORWARD
            self.conv_nostats = nn.Conv2d(4, 4, 1)
            self.bn_nostats = nn.BatchNorm2d(4, track_running_stats=False)
            self.convt = nn.ConvTranspose2d(4, 4, 2, stride=2, groups=2)
            self.bn_t = nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.bn_ok(self.conv_ok(x))
            z = self.conv_branch(y)
            y = self.bn_branch(z) + z
            y = self.bn_shared(self.shared(y)) + self.shared(y)
            y = self.bn_after_add(y + 1)
            y = self.bn_nostats(self.conv_nostats(y))
            return self.bn_t(self.convt(y))

    model = Net()
    randomize_bn(torch, model, torch.Generator().manual_seed(1), tiny_var=True)
    model.eval()
    folded, report = fold_bn(model)
    assert_same_output(torch, model, folded, torch.randn(2, 3, 6, 6), "float32")
    assert dict(report.folded) == {"bn_ok": "conv_ok", "bn_t": "convt",
                                   "bn_after_add": "conv_nostats (the following layer)"}
    reasons = dict(report.skipped)
    assert set(reasons) == {"bn_branch", "bn_shared", "bn_nostats"}
    assert "also used by" in reasons["bn_branch"]
    assert "its output feeds add()" in reasons["bn_branch"]
    assert "called more than once" in reasons["bn_shared"]
    assert "track_running_stats=False" in reasons["bn_nostats"]
    assert all(line in str(report) for line in report.lines())
    names = dict(folded.named_modules())
    assert "bn_ok" not in names and "bn_t" not in names and "bn_branch" in names


def test_untraceable_module_folds_inside_children(torch):
    """Data-dependent control flow defeats fx; traceable children are still folded."""
    from normlab.torch.fold import fold_bn

    nn = torch.nn

    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.body(x)
            return self.bn(y) if y.sum() > 0 else y

    model = Gate()
    randomize_bn(torch, model, torch.Generator().manual_seed(2), tiny_var=False)
    model.eval()
    folded, report = fold_bn(model)
    assert_same_output(torch, model, folded, torch.randn(2, 3, 5, 5), "float32")
    assert dict(report.folded) == {"body.1": "body.0"}
    assert "cannot be traced by torch.fx" in dict(report.skipped)["bn"]


def test_linear_before_bn2d_and_leading_bn_are_reported(torch):
    from normlab.torch.fold import fold_bn

    nn = torch.nn
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Linear(4, 3), nn.BatchNorm2d(3)).eval()
    folded, report = fold_bn(model)
    reasons = dict(report.skipped)
    assert "no preceding layer" in reasons["0"] and "before Linear 1" in reasons["0"]
    assert "only BatchNorm1d" in reasons["2"] and "no following layer" in reasons["2"]
    x = torch.randn(2, 3, 5, 4)
    assert_same_output(torch, model, folded, x, "float32")


def test_deepcopy_independence(torch):
    """Folding twice gives the same model: the first fold did not touch the input."""
    from normlab.torch.fold import fold_bn

    nn = torch.nn
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)).eval()
    randomize_bn(torch, model, torch.Generator().manual_seed(3), tiny_var=False)
    a, _ = fold_bn(model)
    b, _ = fold_bn(copy.deepcopy(model))
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), b.state_dict()[k].numpy())


# -- BN folded into the FOLLOWING layer ---------------------------------------------------------
@st.composite
def bn_first_stacks(draw):
    """(dims, size, c, [layer specs]) for [ReLU?] -> BN -> Conv blocks, padding modes included."""
    dims = draw(st.sampled_from([1, 2, 2, 3]))
    size = draw(st.integers(5, 9)) if dims < 3 else draw(st.integers(4, 6))
    c = draw(st.sampled_from([2, 4]))
    layers = []
    c_in, s = c, size
    for _ in range(draw(st.integers(1, 3))):
        c_out = draw(st.sampled_from([2, 4, 6]))
        k, stride, padding = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(
            st.integers(0, 1))
        s_out = (s + 2 * padding - k) // stride + 1
        if s_out < 2 or s < 2:  # reflect padding needs pad < size
            k, stride, padding, s_out = 1, 1, 0, s
        layers.append(dict(c_in=c_in, c_out=c_out, k=k, stride=stride, padding=padding,
                           groups=draw(st.sampled_from([1, 2])), bias=draw(st.booleans()),
                           mode=draw(st.sampled_from(["zeros", "zeros", "replicate", "reflect",
                                                      "circular"])),
                           affine=draw(st.booleans()), relu=draw(st.booleans())))
        c_in, s = c_out, s_out
    return dims, size, c, layers


def build_bn_first_stack(torch, dims, layers):
    nn = torch.nn
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
    bn = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims]
    mods = []
    for spec in layers:
        if spec["relu"]:
            mods.append(nn.ReLU())
        mods.append(bn(spec["c_in"], affine=spec["affine"]))
        mods.append(conv(spec["c_in"], spec["c_out"], spec["k"], stride=spec["stride"],
                         padding=spec["padding"], groups=spec["groups"], bias=spec["bias"],
                         padding_mode=spec["mode"]))
    return nn.Sequential(*mods)


@SETTINGS
@given(spec=bn_first_stacks(), dtype=st.sampled_from(["float32", "float64"]),
       tiny_var=st.booleans(), seed=st.integers(0, 2**16), wrap=st.booleans())
def test_bn_before_conv_folds_into_it_exactly(torch, spec, dtype, tiny_var, seed, wrap):
    """A BN with no conv right before it folds into the following conv unless that zero-pads."""
    folded, report = fold_random_stack(torch, build_bn_first_stack, spec, dtype, tiny_var, seed,
                                       wrap)
    layers = spec[3]
    # Expected from the spec alone: BN i (module index j) merges backwards when conv i-1 is
    # right before it, else forwards unless the conv zero-pads.
    prefix = "body." if wrap else ""
    expected_folded, expected_skipped, j = {}, set(), 0
    for i, layer in enumerate(layers):
        j += layer["relu"]
        bn_name, conv_name = f"{prefix}{j}", f"{prefix}{j + 1}"
        if i > 0 and not layer["relu"]:
            expected_folded[bn_name] = f"{prefix}{j - 1}"
        elif layer["padding"] == 0 or layer["mode"] != "zeros":
            expected_folded[bn_name] = f"{conv_name} (the following layer)"
        else:
            expected_skipped.add(bn_name)
        j += 2
    assert dict(report.folded) == expected_folded, str(report)
    assert set(dict(report.skipped)) == expected_skipped, str(report)
    for why in dict(report.skipped).values():
        assert "pads with zeros, which are not BN's zero point" in why
    kept = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    assert kept == len(expected_skipped)


@SETTINGS
@given(widths=st.lists(st.integers(1, 7), min_size=2, max_size=4), bias=st.booleans(),
       affine=st.booleans(), tiny_var=st.booleans(), seed=st.integers(0, 2**16))
def test_bn_before_linear_folds_into_it_exactly(torch, widths, bias, affine, tiny_var, seed):
    from normlab.torch.fold import fold_bn

    nn = torch.nn
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mods = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        mods += [nn.Tanh(), nn.BatchNorm1d(a, affine=affine), nn.Linear(a, b, bias=bias)]
    model = nn.Sequential(*mods)
    randomize_bn(torch, model, gen, tiny_var)
    model.eval()
    before = state_of(model)
    folded, report = fold_bn(model)
    assert_same_output(torch, model, folded, torch.randn(5, widths[0], generator=gen), "float32")
    assert_unchanged(torch, before, model)
    assert dict(report.folded) == {str(i): f"{i + 1} (the following layer)"
                                   for i in range(1, len(mods), 3)}
    assert not report.skipped
    assert set(folded.state_dict()) == {f"{i}.{p}" for i in range(2, len(mods), 3)
                                        for p in ("weight", "bias")}


def test_following_fold_is_refused_where_inexact(torch):
    """Graph path: a BN feeding two consumers, a padded conv, a ConvTranspose or a shared conv
    stays, with the reason; a BN fed by the input folds into its only consumer."""
    from normlab.torch.fold import fold_bn

    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn_in = nn.BatchNorm2d(3)           # the input -> conv_in: folds forward
            self.conv_in = nn.Conv2d(3, 4, 3, groups=1)
            self.bn_two = nn.BatchNorm2d(4)          # feeds conv_a and the sum
            self.conv_a = nn.Conv2d(4, 4, 1)
            self.bn_pad = nn.BatchNorm2d(4)          # feeds a zero-padded conv
            self.conv_pad = nn.Conv2d(4, 4, 3, padding=1)
            self.bn_t = nn.BatchNorm2d(4)            # feeds a ConvTranspose
            self.convt = nn.ConvTranspose2d(4, 4, 1)
            self.bn_shared = nn.BatchNorm2d(4)       # feeds a conv called twice
            self.shared = nn.Conv2d(4, 4, 1)

        def forward(self, x):
            y = torch.relu(self.conv_in(self.bn_in(x)))
            b = self.bn_two(y)
            y = torch.relu(self.conv_a(b) + b)
            y = torch.relu(self.conv_pad(self.bn_pad(y)))
            y = torch.relu(self.convt(self.bn_t(y)))
            return self.shared(self.bn_shared(y)) + self.shared(y)

    model = Net()
    randomize_bn(torch, model, torch.Generator().manual_seed(4), tiny_var=True)
    model.eval()
    before = state_of(model)
    folded, report = fold_bn(model)
    assert_same_output(torch, model, folded, torch.randn(2, 3, 7, 7), "float32")
    assert_unchanged(torch, before, model)
    assert dict(report.folded) == {"bn_in": "conv_in (the following layer)"}
    reasons = dict(report.skipped)
    assert set(reasons) == {"bn_two", "bn_pad", "bn_t", "bn_shared"}
    assert "used by conv_a, add()" in reasons["bn_two"]
    assert "conv_pad pads with zeros, which are not BN's zero point" in reasons["bn_pad"]
    assert "ConvTranspose2d convt" in reasons["bn_t"]
    assert "called more than once" in reasons["bn_shared"]
    assert folded.conv_in.bias is not None
