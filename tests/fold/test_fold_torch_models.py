"""fold_bn / freeze_bn on the batch-norm patterns of real models (timm, torchvision).

The models are the replicas in ``tests/torch_replicas.py``. Every folded model is checked three
ways: its output equals the eval-mode original's (``assert_same_output``: float32 round-off
relative to the magnitude of the computation), the ``batch_norm`` operations it still runs
(counted while it runs) are exactly the ones the report says were not folded, and the report
names every batch norm once and ends with ``folded X of Y``.
"""

from __future__ import annotations

import copy
import io

import pytest

from tests.fold.test_fold_torch import Wrapper, assert_same_output, assert_unchanged, state_of


def checked_fold(torch, model, x):
    """fold_bn(model) with the three checks above; returns (folded, report)."""
    from normlab.torch.fold import count_bn_ops, fold_bn

    model.eval()
    before = state_of(model)
    ops_before = count_bn_ops(model, x)
    folded, report = fold_bn(model)
    assert_unchanged(torch, before, model)
    assert_same_output(torch, model, folded, x, "float32")
    assert count_bn_ops(folded, x) == len(report.skipped), str(report)
    assert len(report.folded) + len(report.skipped) == ops_before, str(report)
    names = [n for entries in (report.folded, report.skipped, report.notes) for n, _ in entries]
    assert len(names) == len(set(names)), f"a batch norm listed twice:\n{report}"
    assert str(report).splitlines()[-1] == (
        f"folded {len(report.folded)} of {ops_before} batch norm operations "
        f"({len(report.skipped)} still run)")
    return folded, report


def test_norm_act_layers_fold_and_keep_their_activation(torch):
    """timm's BatchNormAct2d (F.batch_norm in its own forward) and a super().forward norm+act:
    every BN folds into its conv, and the SiLU/drop-path after it stays."""
    from tests.torch_replicas import EfficientNetReplica, randomize_bn

    model = randomize_bn(EfficientNetReplica())
    x = torch.randn(2, 3, 16, 16)
    folded, report = checked_fold(torch, model, x)
    assert not report.skipped and len(report.folded) == 8, str(report)
    into = dict(report.folded)
    assert into["bn1"] == "conv_stem" and into["blocks.0.bn2"] == "blocks.0.conv_dw"
    assert into["bn2"] == "conv_head"   # BNActSuper: super().forward(x) inside
    assert sum(isinstance(m, torch.nn.SiLU) for m in folded.modules()) == \
        sum(isinstance(m, torch.nn.SiLU) for m in model.modules())
    assert "not counted" not in str(report)


def test_norm_act_in_a_sequential_is_not_dropped(torch):
    """nn.Sequential(conv, BatchNormAct2d): folded into the conv through fx, ReLU kept; a
    leading one (densenet's transition) cannot fold into the conv past its ReLU."""
    from tests.torch_replicas import BatchNormAct2d, DenseTransition, randomize_bn

    nn = torch.nn
    seq = randomize_bn(nn.Sequential(nn.Conv2d(3, 4, 3), BatchNormAct2d(4), nn.Conv2d(4, 4, 1)))
    _, report = checked_fold(torch, seq, torch.randn(2, 3, 6, 6))
    assert dict(report.folded) == {"1": "0"}
    transition = randomize_bn(DenseTransition(4, 2))
    _, report = checked_fold(torch, transition, torch.randn(2, 4, 6, 6))
    assert not report.folded
    why = dict(report.skipped)["norm"]
    assert "its input comes from the input" in why and "norm.act (ReLU)" in why


def test_densenet_features_fold_where_exact(torch):
    """timm's ``densenet121.features`` pattern: norms after a concatenation or before a ReLU
    stay; norms right after a conv fold; the output is the original's."""
    from tests.torch_replicas import densenet_features, randomize_bn

    model = randomize_bn(densenet_features())
    _, report = checked_fold(torch, model, torch.randn(2, 3, 8, 8))
    into, why = dict(report.folded), dict(report.skipped)
    assert into["norm0"] == "conv0"
    assert into["denseblock1.denselayer1.norm2"] == "denseblock1.denselayer1.conv1"
    assert "cat()" in why["denseblock1.denselayer2.norm1"]
    assert "transition1.norm.act (ReLU)" in why["transition1.norm"]


@pytest.mark.parametrize("where", ["sequential", "graph"])
def test_linear_bn1d_fold_refuses_3d_input(torch, where):
    """Linear -> BatchNorm1d is exact only on (N, features): on (N, L, features) BN1d
    normalises dim 1. The folded model raises there instead of computing something else."""
    from normlab.torch.fold import FoldedLinearCheck, fold_bn

    nn = torch.nn
    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(16, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.BatchNorm1d(16),
                         nn.Linear(16, 4))
    model = body if where == "sequential" else Wrapper(torch, body)
    from tests.torch_replicas import randomize_bn

    randomize_bn(model).eval()
    folded, report = checked_fold(torch, model, torch.randn(5, 16))
    assert len(report.folded) == 2
    assert sum(isinstance(m, FoldedLinearCheck) for m in folded.modules()) == 2
    x3 = torch.randn(2, 16, 16)
    model(x3)   # the original accepts it: BN1d normalises dim 1 of (N, C, L)
    with pytest.raises(ValueError, match=r"input: expected a 2-D \(N, features\) tensor .* "
                                         r"got shape \(2, 16, 16\)"):
        folded(x3)
    assert fold_bn(model)[0] is not model


def test_frozen_batch_norms_fold(torch):
    """normlab's FrozenBatchNorm2d (freeze_bn) and torchvision's (timm's
    freeze_batch_norm_2d) are fixed affine maps: folded like BNs, counted as operations."""
    import normlab.torch as nt
    from tests.torch_replicas import ResNetReplica, randomize_bn, tv_freeze

    x = torch.randn(2, 3, 8, 8)
    for freeze in (nt.freeze_bn, tv_freeze):
        model = freeze(randomize_bn(ResNetReplica()).eval())
        _, report = checked_fold(torch, model, x)
        assert len(report.folded) == 6 and not report.skipped, str(report)


def test_frozen_norm_act_folds_and_an_unknown_one_is_reported(torch):
    """timm's FrozenBatchNormAct2d (what freeze_batch_norm_2d makes of BatchNormAct2d) folds
    and keeps its activation; a frozen norm+act of an unknown class is not folded, but
    reported once (as still run) and counted; a tracked InstanceNorm is no batch norm."""
    from tests.torch_replicas import FrozenBatchNormAct2d, OtherFrozenNormAct, randomize_bn

    nn = torch.nn
    model = Wrapper(torch, nn.Sequential(
        nn.Conv2d(3, 4, 3), FrozenBatchNormAct2d(4), nn.Conv2d(4, 4, 1), OtherFrozenNormAct(4),
        nn.InstanceNorm2d(4, track_running_stats=True)))
    randomize_bn(model)
    folded, report = checked_fold(torch, model, torch.randn(2, 3, 6, 6))
    assert dict(report.folded) == {"body.1": "body.0"}
    assert [n for n, _ in report.skipped] == ["body.3"]
    assert "own arithmetic" in report.skipped[0][1]
    assert sum(isinstance(m, nn.ReLU) for m in folded.modules()) == 1   # body.1's act


def test_folds_after_convert_sync_batchnorm(torch):
    """normlab's SyncBatchNorm is a plain BN at inference: every one folds (fx used to fail on
    its forward, leaving all but the Sequential ones)."""
    import normlab.torch as nt
    from tests.torch_replicas import ResNetReplica, randomize_bn

    model = nt.convert_sync_batchnorm(randomize_bn(ResNetReplica()))
    _, report = checked_fold(torch, model, torch.randn(2, 3, 8, 8))
    assert len(report.folded) == 6 and not report.skipped, str(report)


def test_weight_standardisation_is_no_batch_norm_and_blocks_folding(torch):
    """timm's ScaledStdConv2d calls batch_norm on its weight: noted, not counted; a BN after
    it cannot fold into it (its forward standardises whatever weight it is given)."""
    from normlab.torch.fold_export import fold_bn_export
    from tests.torch_replicas import ScaledStdConv2d, randomize_bn

    nn = torch.nn
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 6)
    seq = randomize_bn(nn.Sequential(ScaledStdConv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()))
    _, report = checked_fold(torch, seq, x)
    assert "(ScaledStdConv2d), not a Linear/Conv" in dict(report.skipped)["1"]
    graph = Wrapper(torch, seq)
    _, report = checked_fold(torch, graph, x)
    assert "conv2d()" in dict(report.skipped)["body.1"]
    assert [n for n, _ in report.notes] == ["body.0"]
    assert "weight standardisation" in report.notes[0][1]
    program = torch.export.export(graph.eval(), (x,))
    _, report = fold_bn_export(program, (x,))
    assert len(report.notes) == 1 and len(report.skipped) == 1, str(report)
    assert "training mode" not in str(report)


def test_untraceable_subclass_is_kept_whole(torch):
    from tests.torch_replicas import UntraceableBN, randomize_bn

    nn = torch.nn
    model = randomize_bn(Wrapper(torch, nn.Sequential(nn.Conv2d(3, 4, 3), UntraceableBN(4))))
    _, report = checked_fold(torch, model, torch.randn(2, 3, 6, 6))
    assert "cannot be traced by torch.fx" in dict(report.skipped)["body.1"]


def test_an_untraceable_layer_is_kept_whole_and_the_rest_folds(torch):
    """tf_efficientnet's 'same' conv defeats fx; the block is traced around it: the norm after
    the 1x1 convs folds, the one after the 'same' conv (its own forward) stays."""
    from tests.torch_replicas import SameBlock, randomize_bn

    model = randomize_bn(torch.nn.Sequential(SameBlock(4), SameBlock(4)))
    _, report = checked_fold(torch, model, torch.randn(2, 4, 9, 9))
    assert dict(report.folded) == {"0.bn1": "0.conv_pw", "0.bn3": "0.conv_pwl",
                                   "1.bn1": "1.conv_pw", "1.bn3": "1.conv_pwl"}
    assert "0.conv_dw (Conv2dSame), not a Linear/Conv" in dict(report.skipped)["0.bn2"]


@pytest.mark.parametrize("how", ["parametrization", "hook"])
def test_layers_that_compute_their_weight_are_not_written(torch, how):
    """weight_norm (a parametrization, or the older forward pre-hook) recomputes the weight on
    every call: weights folded into it would be overwritten."""
    import warnings

    from tests.torch_replicas import randomize_bn

    nn = torch.nn
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)   # the hook form is deprecated
        norm = nn.utils.parametrizations.weight_norm if how == "parametrization" else \
            nn.utils.weight_norm
        conv = norm(nn.Conv2d(3, 4, 3))
    model = randomize_bn(nn.Sequential(conv, nn.BatchNorm2d(4)))
    _, report = checked_fold(torch, model, torch.randn(2, 3, 6, 6))
    assert "parametrization or hook" in dict(report.skipped)["1"]


def test_freeze_keeps_what_a_subclass_adds(torch):
    """freeze_bn on norm+act layers: eval output unchanged; in train mode the normalisation
    stays on the running statistics and the activation stays; unfreeze_bn restores; the frozen
    model pickles."""
    import normlab.torch as nt
    from tests.torch_replicas import BatchNormAct2d, EfficientNetReplica, randomize_bn

    model = randomize_bn(EfficientNetReplica()).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        want = model(x)
    before = state_of(model)
    nt.freeze_bn(model)
    assert isinstance(model.bn1, BatchNormAct2d) and not model.bn1.weight.requires_grad
    assert isinstance(model.bn1.act, torch.nn.SiLU)
    model.train()
    assert model.bn1.act.training and not model.bn1.training
    with torch.no_grad():
        torch.testing.assert_close(model(x), want)
    assert_unchanged(torch, before, model)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), want)
    copy.deepcopy(model)
    nt.unfreeze_bn(model)
    assert type(model.bn1) is BatchNormAct2d and model.bn1.training
    assert model.bn1.weight.requires_grad


def test_fold_cli_prints_the_summary(torch, tmp_path):
    from typer.testing import CliRunner

    from normlab.cli import app
    from tests.torch_replicas import EfficientNetReplica, randomize_bn

    src, out = tmp_path / "m.pt", tmp_path / "f.pt"
    torch.save(randomize_bn(EfficientNetReplica()).eval(), src)
    result = CliRunner().invoke(app, ["fold", str(src), "-o", str(out), "--trust-model",
                                      "--input-shape", "1,3,16,16"])
    assert result.exit_code == 0, result.output
    assert "folded 8 of 8 batch norm operations (0 still run)" in result.output
