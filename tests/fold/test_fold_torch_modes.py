"""fold_bn on three mechanisms from real models (issue 27): a forward that caches a traced
value, batch norms left unfolded inside traced norm+act layers, and folding a folded model.

Each unfolded batch norm must stay the module it was (its class, its train/eval mode, its
running statistics), so that ``train()``, ``recalibrate_bn`` and ``bn_health`` still see it.
"""

from __future__ import annotations

import pytest

from tests.fold.test_fold_torch_models import checked_fold


def branchy(torch, body):
    """``body`` then a data-dependent branch fx cannot trace, so that fold_bn traces ``body``
    more than once (the whole model fails, then the parts)."""
    class Branch(torch.nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.branch = body, Branch()

        def forward(self, x):
            return self.branch(self.body(x))
    return Model()


def test_a_value_cached_during_a_trace_is_not_reused(torch):
    """timm's CascadedGroupAttention caches its biases by str(device): under fx the key and
    value are Proxies, which a second trace found and used (RuntimeError from graph.lint())."""
    from tests.torch_replicas import CachedBiasAttention, randomize_bn

    model = branchy(torch, randomize_bn(CachedBiasAttention()))
    folded, report = checked_fold(torch, model, torch.randn(2, 4, 5, 5))
    assert dict(report.folded) == {"body.bn": "body.conv"}, str(report)
    for m in folded.modules():   # no trace leaves a Proxy in the model
        for v in vars(m).values():
            assert not any(isinstance(u, torch.fx.Proxy)
                           for u in (v.values() if isinstance(v, dict) else [v]))
    assert list(model.body.attention_bias_cache) == ["cpu"]   # only what eager runs cached


_SHARED_CACHE: dict = {}


def test_a_graph_reading_another_trace_is_refused_not_a_crash(torch):
    """A cache outside the model (here a module-level dict) cannot be reset between traces:
    the module that reads it is left unfolded with the reason, and the rest folds."""
    class GlobalCache(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(4, 4, 1), torch.nn.BatchNorm2d(4)
            self.shift = torch.nn.Parameter(torch.randn(4, 1, 1))

        def forward(self, x):
            return self.bn(self.conv(x)) + _SHARED_CACHE.setdefault(str(x.device),
                                                                     self.shift * 2)

    _SHARED_CACHE.clear()
    body = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 1), torch.nn.BatchNorm2d(4), GlobalCache())
    model = branchy(torch, body).eval()
    x = torch.randn(2, 4, 5, 5)
    checked_fold(torch, model, x)    # the first fold fills the cache with a Proxy
    assert any(isinstance(v, torch.fx.Proxy) for v in _SHARED_CACHE.values())
    _SHARED_CACHE.clear()
    _SHARED_CACHE["cpu"] = model.body[2].shift.detach() * 2   # what eager use would cache
    folded, report = checked_fold(torch, branchy(torch, body).eval(), x)
    _SHARED_CACHE.clear()
    assert dict(report.folded) == {"body.1": "body.0"}, str(report)
    (name, why), = report.skipped
    assert name == "body.2.bn" and "does not belong to this Graph" in why, why


@pytest.fixture
def preact(torch):
    """PreActReplica folded: (model, folded, report, the names of the BNs kept, input)."""
    from tests.torch_replicas import PreActReplica, randomize_bn

    model = randomize_bn(PreActReplica())
    x = torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    folded, report = checked_fold(torch, model, x)
    kept = [name for name, _ in report.skipped]
    return model, folded, report, kept, x


def test_unfolded_norm_act_layers_stay_modules(torch, preact):
    """resnetv2's pre-activation norms read the stem's output (also the shortcut's) or a sum:
    they stay, as the BatchNormAct2d they are, and the norms after a conv fold."""
    from tests.torch_replicas import BatchNormAct2d

    model, folded, report, kept, _ = preact
    assert kept == ["stages.0.norm1", "stages.1.norm1", "norm"], str(report)
    assert sorted(dict(report.folded)) == ["stages.0.norm2", "stages.1.norm2"]
    for name in kept:
        m = folded.get_submodule(name)
        assert type(m) is BatchNormAct2d and m.running_mean.shape == (4,)
        assert "kept whole, so that it keeps its train/eval mode" in dict(report.skipped)[name]


def test_unfolded_norm_act_layers_keep_their_mode(torch, preact):
    """folded.train(): the kept norms normalise with batch statistics and update their running
    statistics, exactly as the original's do (fx had fixed training=False into the graph)."""
    import torch.nn.functional as F

    model, folded, _, kept, x = preact
    seen = {}
    hook = folded.get_submodule(kept[0]).register_forward_hook(
        lambda m, i, o: seen.update(x=i[0].detach(), y=o.detach()))
    folded.train()
    before = folded.get_submodule(kept[0]).running_mean.clone()
    folded(x)
    hook.remove()
    bn = folded.get_submodule(kept[0])
    want = F.relu(F.batch_norm(seen["x"], None, None, bn.weight, bn.bias, True, 0.0, bn.eps))
    torch.testing.assert_close(seen["y"], want)
    assert not torch.equal(bn.running_mean, before)
    assert int(bn.num_batches_tracked) == 1
    folded.eval()
    assert not any(m.training for m in folded.modules())


def test_recalibrate_and_health_find_the_kept_norms(torch, preact):
    import normlab.torch as nt

    model, folded, _, kept, x = preact
    assert nt.recalibrate_bn(folded, [x]) == 1
    first = folded.get_submodule(kept[0])   # reads the stem's output, which no BN changes
    stem = folded.stem(x).detach()
    torch.testing.assert_close(first.running_mean, stem.mean((0, 2, 3)))
    torch.testing.assert_close(first.running_var, stem.var((0, 2, 3)))
    kinds = {h.name: h.kind for h in nt.bn_health(folded, [x]).layers}
    assert kinds == {name: "BatchNormAct2d" for name in kept}


def test_a_folded_model_folds_again(torch, preact):
    """The folded GraphModule is in eval mode throughout (fx's bare holder modules start in
    training mode) and folds again: nothing more to fold, the same ops still run."""
    model, folded, report, kept, x = preact
    assert not any(m.training for m in folded.modules())
    again, second = checked_fold(torch, folded, x)
    assert not second.folded and [n for n, _ in second.skipped] == kept, str(second)
    torch.testing.assert_close(again(x), model(x), rtol=1e-5, atol=1e-5)


def test_an_untraced_parent_still_reads_its_folded_childs_attributes(torch):
    """timm's LocalWindowAttention cannot be traced (it branches on the input's size) and reads
    ``self.attn.resolution``; its child folded into a GraphModule had lost that plain
    attribute, so the folded model raised AttributeError when run."""
    from tests.torch_replicas import randomize_bn

    class Attn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(4, 4, 1), torch.nn.BatchNorm2d(4)
            self.resolution = 5

        def forward(self, x):
            return self.bn(self.conv(x))

    class Window(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = Attn()

        def forward(self, x):
            if x.shape[-1] == self.attn.resolution:   # fx cannot trace this branch
                return self.attn(x)
            return x

    model = randomize_bn(Window())
    folded, report = checked_fold(torch, model, torch.randn(2, 4, 5, 5))
    assert dict(report.folded) == {"attn.bn": "attn.conv"}, str(report)
    assert folded.attn.resolution == 5
