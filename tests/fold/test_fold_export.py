"""normlab.torch.fold_export: BatchNorm folded at the ATen level of a torch.export program.

Same random stacks and error bound as tests/fold/test_fold_torch.py (the eager model's largest
intermediate, see ``magnitude``), for the graphs torch.export emits as is (aten.conv2d +
aten.batch_norm) and after run_decompositions (aten.convolution +
_native_batch_norm_legit_no_training + getitem).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fold.test_fold_torch import (
    assert_same_output,
    build_conv_stack,
    conv_stacks,
    randomize_bn,
)

# Exporting twice per example costs ~0.1-0.3 s: fewer examples than the eager tests.
SETTINGS = settings(max_examples=12)


def bn_calls(torch, program) -> int:
    aten = torch.ops.aten
    kinds = (aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default)
    return sum(n.op == "call_function" and n.target in kinds for n in program.graph.nodes)


def program_state(program) -> dict:
    return {k: v.detach().clone() for k, v in program.state_dict.items()}


def assert_program_unchanged(torch, before: dict, program) -> None:
    after = program.state_dict
    assert before.keys() == after.keys()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k


@SETTINGS
@given(spec=conv_stacks(), dtype=st.sampled_from(["float32", "float64"]),
       tiny_var=st.booleans(), seed=st.integers(0, 2**16), decompose=st.booleans())
def test_exported_conv_stacks_fold_exactly(torch, spec, dtype, tiny_var, seed, decompose):
    from normlab.torch.fold_export import fold_bn_export

    dims, size, c, layers = spec
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = build_conv_stack(torch, dims, layers).to(getattr(torch, dtype))
    randomize_bn(torch, model, gen, tiny_var)
    model.eval()
    x = torch.randn((3, c) + (size,) * dims, generator=gen).to(getattr(torch, dtype))
    program = torch.export.export(model, (x,))
    if decompose:
        program = program.run_decompositions()
    before = program_state(program)

    folded, report = fold_bn_export(program, (x,))

    assert isinstance(folded, torch.export.ExportedProgram)
    assert_same_output(torch, model, folded.module(), x, dtype)
    assert_program_unchanged(torch, before, program)
    assert bn_calls(torch, program) == len(layers)
    assert bn_calls(torch, folded) == 0
    # nn_module_stack names the eager modules: BN i sits right after conv i.
    conv_index = [i for i, m in enumerate(model) if not isinstance(
        m, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.ReLU))]
    assert dict(report.folded) == {str(i + 1): str(i) for i in conv_index}, str(report)
    assert not report.skipped
    assert not any("running" in k for k in folded.state_dict)


def test_exported_following_folds_and_reasons(torch):
    """A BN fed by the input folds into the unpadded conv after it; a BN before a zero-padded
    conv, one with two consumers and a Linear-on-addmm (decomposed) stay, with the reason."""
    from normlab.torch.fold_export import fold_bn_export

    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn_in = nn.BatchNorm2d(3)
            self.conv_in = nn.Conv2d(3, 4, 3, bias=False, groups=1)
            self.bn_pad = nn.BatchNorm2d(4)
            self.conv_pad = nn.Conv2d(4, 4, 3, padding=1, groups=2)
            self.bn_two = nn.BatchNorm2d(4)
            self.conv_a = nn.Conv2d(4, 4, 1)
            self.bn_lin = nn.BatchNorm1d(4)
            self.lin = nn.Linear(4, 3)

        def forward(self, x):
            y = torch.relu(self.conv_in(self.bn_in(x)))
            y = torch.relu(self.conv_pad(self.bn_pad(y)))
            b = self.bn_two(y)
            y = torch.relu(self.conv_a(b) + b)
            return self.lin(self.bn_lin(y.mean((2, 3))))

    model = Net()
    randomize_bn(torch, model, torch.Generator().manual_seed(5), tiny_var=True)
    model.eval()
    x = torch.randn(2, 3, 7, 7)
    program = torch.export.export(model, (x,))
    before = program_state(program)
    folded, report = fold_bn_export(program, (x,))
    assert_same_output(torch, model, folded.module(), x, "float32")
    assert_program_unchanged(torch, before, program)
    assert dict(report.folded) == {"bn_in": "conv_in (the following layer)",
                                   "bn_lin": "lin (the following layer)"}
    reasons = dict(report.skipped)
    assert set(reasons) == {"bn_pad", "bn_two"}
    assert "conv_pad pads with zeros, which are not BN's zero point" in reasons["bn_pad"]
    assert "not by one following layer only" in reasons["bn_two"]
    assert "conv_a" in reasons["bn_two"] and "add" in reasons["bn_two"]
    assert bn_calls(torch, folded) == 2


def test_training_mode_export_is_reported_not_folded(torch):
    from normlab.torch.fold_export import fold_bn_export

    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))  # left in training mode
    x = torch.randn(2, 3, 6, 6)
    program = torch.export.export(model, (x,))
    folded, report = fold_bn_export(program, (x,))
    assert not report.folded
    assert "training mode" in dict(report.skipped)["1"]
    assert bn_calls(torch, folded) == 1


def test_bad_arguments(torch):
    from normlab.torch.fold_export import fold_bn_export

    with pytest.raises(TypeError, match="program: expected a torch.export.ExportedProgram, "
                                        "got Sequential"):
        fold_bn_export(torch.nn.Sequential(), (torch.zeros(1),))
    program = torch.export.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),))
    with pytest.raises(TypeError, match="example_inputs: expected a tuple of inputs, got Tensor"):
        fold_bn_export(program, torch.zeros(1, 2))
