"""Torch's checkpoint and input conventions, in normlab's torch layers and in the NumPy engine.

* a state dict without ``num_batches_tracked`` (torch < 0.4.1, torchvision's FrozenBatchNorm2d,
  hand-made) loads where torch loads it, and is refused where torch refuses it (``_metadata``
  version 2 says the key was saved) -- ``_NormBase._load_from_state_dict``;
* counts that are NaN, fractional, negative or past int64 are refused, masked arrays too, and
  NaN/inf running statistics load with a warning (torch does none of these);
* ``track_running_stats`` switched off after construction: eval keeps using the buffers;
* InstanceNorm on unbatched input; an empty training batch with non-default options;
* ``from_torch`` / ``to_torch`` carry each module's own mode.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from normlab import nn as enn


def torch_layers(torch):
    """Every normlab torch layer with BatchNorm's buffers, fresh."""
    import normlab.torch as nt

    return {
        "BatchNorm2d-exact": lambda: nt.BatchNorm2d(3, running_stats="exact"),
        "BatchNorm1d": lambda: nt.BatchNorm1d(3),
        "FrozenBatchNorm2d": lambda: nt.FrozenBatchNorm2d(3),
        "BatchRenorm2d": lambda: nt.BatchRenorm2d(3),
        "GhostBatchNorm2d": lambda: nt.GhostBatchNorm2d(3, 2),
        "SequenceBatchNorm": lambda: nt.SequenceBatchNorm(3),
        "SyncBatchNorm": lambda: nt.SyncBatchNorm(3),
    }


LAYERS = ["BatchNorm2d-exact", "BatchNorm1d", "FrozenBatchNorm2d", "BatchRenorm2d",
          "GhostBatchNorm2d", "SequenceBatchNorm", "SyncBatchNorm"]


def outcome(call) -> str:
    try:
        call()
    except RuntimeError as err:
        return "refused" if "num_batches_tracked" in str(err) else f"error {err}"
    return "loaded"


@pytest.mark.parametrize("saved", ["hand-made", "version 1", "version 2"])
def test_missing_num_batches_tracked_like_torch(torch, saved):
    """FrozenBatchNorm2d and normlab's BN accept exactly what torch.nn.BatchNorm2d accepts."""
    import normlab.torch as nt

    source = torch.nn.BatchNorm2d(3)
    source.running_mean.fill_(2.0)
    sd = source.state_dict()
    del sd["num_batches_tracked"]
    if saved == "hand-made":
        sd = dict(sd)
    else:
        sd._metadata[""]["version"] = 1 if saved == "version 1" else 2
    want = outcome(lambda: torch.nn.BatchNorm2d(3).load_state_dict(sd))
    assert want == ("refused" if saved == "version 2" else "loaded")
    for layer in (nt.FrozenBatchNorm2d(3), nt.BatchRenorm2d(3)):
        layer.num_batches_tracked.fill_(7)
        assert outcome(lambda: layer.load_state_dict(sd)) == want   # noqa: B023
        if want == "loaded":
            assert float(layer.running_mean[0]) == 2.0 and int(layer.num_batches_tracked) == 7
    engine = enn.BatchNorm2d(3)
    numpy_sd = NumpyStateDict({k: v.numpy() for k, v in sd.items()})
    numpy_sd._metadata = getattr(sd, "_metadata", None)
    try:
        engine.load_state_dict(numpy_sd)
        got = "loaded"
    except ValueError as err:
        got = "refused" if "missing keys: num_batches_tracked" in str(err) else str(err)
    assert got == want


class NumpyStateDict(dict):
    """A dict that can carry torch's ``_metadata`` attribute."""


def test_torchvision_frozen_state_dict_loads_into_frozen_batch_norm(torch):
    """torchvision's FrozenBatchNorm2d saves no num_batches_tracked (module version 1)."""
    import normlab.torch as nt
    from tests.torch_replicas import TvFrozenBatchNorm2d

    tv = TvFrozenBatchNorm2d(3)
    tv.running_var.fill_(4.0)
    ours = nt.FrozenBatchNorm2d(3)
    ours.load_state_dict(tv.state_dict())
    assert float(ours.running_var[0]) == 4.0
    tv.load_state_dict(ours.state_dict())   # and back (torchvision drops the count)


BAD_COUNTS = {"nan": float("nan"), "fraction": 2.5, "negative": -1, "overflow": 1e19}


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("bad", list(BAD_COUNTS))
def test_bad_count_is_refused_before_state_changes(torch, layer, bad):
    import torch as _torch

    m = torch_layers(torch)[layer]()
    sd = {k: v.clone() + 1 if v.is_floating_point() else v.clone() for k, v in
          m.state_dict().items()}
    value = BAD_COUNTS[bad]
    sd["num_batches_tracked"] = _torch.tensor(value, dtype=_torch.float64 if isinstance(
        value, float) else _torch.long)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(ValueError, match=r"state_dict\['num_batches_tracked'\]: expected a "
                                         r"whole number .* got "):
        m.load_state_dict(sd)
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_masked_array_and_nonfinite_statistics(torch):
    import normlab.torch as nt

    m = nt.BatchNorm2d(3, skip_nonfinite=True)
    sd = dict(m.state_dict())
    masked = dict(sd, running_var=np.ma.masked_array(np.ones(3, np.float32), [0, 1, 0]))
    with pytest.raises(TypeError, match=r"state_dict\['running_var'\]: expected a plain array, "
                                        r"got a numpy masked array"):
        m.load_state_dict(masked)
    sd["running_mean"] = torch.tensor([0.0, float("nan"), 1.0])
    with pytest.warns(RuntimeWarning, match=r"state_dict\['running_mean'\] has 1 of 3 channels "
                                            r"NaN/inf") as record:
        m.load_state_dict(sd)
    assert len(record) == 1
    assert torch.isnan(m.running_mean[1])   # loaded, as torch does


def test_numpy_engine_counts_masks_and_nonfinite(torch):
    """The NumPy engine's load_state_dict: torch's missing-key rule, then the same checks."""
    bn = enn.BatchNorm1d(4)
    bn.num_batches_tracked[...] = 5
    sd = {k: v for k, v in bn.state_dict().items() if k != "num_batches_tracked"}
    bn.load_state_dict(sd)   # a plain dict has no _metadata: as torch, the count is kept
    assert int(bn.num_batches_tracked) == 5

    class Saved(dict):
        _metadata = {"": {"version": 2}}

    with pytest.raises(ValueError, match="missing keys: num_batches_tracked"):
        bn.load_state_dict(Saved(sd))
    sd["running_var"] = np.array([1.0, np.inf, 1.0, 1.0], np.float32)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        bn.load_state_dict(sd)
    assert len(record) == 1 and "state_dict['running_var'] has 1 of 4 channels" in \
        str(record[0].message)


def test_track_running_stats_switched_off_like_torch(torch):
    """torch: eval keeps normalising with the existing buffers; training leaves them alone."""
    import normlab.torch as nt

    x = torch.randn(4, 3, 5, 5)
    ref = torch.nn.BatchNorm2d(3)
    layers = [nt.BatchNorm2d(3, running_stats="exact"), nt.GhostBatchNorm2d(3, 2),
              nt.SyncBatchNorm(3)]
    engine = enn.BatchNorm2d(3)
    for m in [ref, *layers]:
        m.running_mean.fill_(1.5)
        m.running_var.fill_(3.0)
        m.track_running_stats = False
    engine.running_mean[...] = 1.5
    engine.running_var[...] = 3.0
    engine.track_running_stats = False
    ref.eval()
    want = ref(x)
    for m in layers:
        torch.testing.assert_close(m.eval()(x), want)
    np.testing.assert_allclose(engine.eval()(x.numpy()), want.detach().numpy(), atol=1e-5,
                               rtol=1e-5)
    for m in [ref, *layers]:
        m.train()(x)
        assert float(m.running_mean[0]) == 1.5 and int(m.num_batches_tracked) == 0
    engine.train()(x.numpy())
    assert float(engine.running_mean[0]) == 1.5 and int(engine.num_batches_tracked) == 0


@pytest.mark.parametrize("options", [{"running_stats": "exact"}, {"unbiased": "both"},
                                     {"skip_nonfinite": True}, {"momentum": None}])
def test_empty_training_batch_like_the_default(torch, options):
    import normlab.torch as nt

    x = torch.randn(0, 3, 4, 4, requires_grad=True)
    ref, m = nt.BatchNorm2d(3), nt.BatchNorm2d(3, **options)
    for layer in (ref, m):
        layer.running_mean.fill_(2.0)
        y = layer.train()(x)
        assert y.shape == x.shape
        y.sum().backward()
    assert torch.equal(m.running_mean, ref.running_mean)
    assert int(m.num_batches_tracked) == int(ref.num_batches_tracked) == 1


@pytest.mark.parametrize("dims", [1, 2])
@pytest.mark.parametrize("train", [True, False])
def test_instance_norm_unbatched_like_torch(torch, dims, train):
    shape = (3, 6) if dims == 1 else (3, 4, 5)
    tnorm = getattr(torch.nn, f"InstanceNorm{dims}d")(3, affine=True, track_running_stats=True)
    with torch.no_grad():
        tnorm.double().weight.copy_(torch.tensor([0.5, 1.0, 2.0]))
        tnorm.running_mean.fill_(0.5)
    enorm = getattr(enn, f"InstanceNorm{dims}d")(3, affine=True, track_running_stats=True,
                                                 dtype=np.float64)
    enorm.load_state_dict({k: v.detach().numpy() for k, v in tnorm.state_dict().items()})
    tnorm.train(train)
    enorm.train(train)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    y = tnorm(x)
    got = enorm(x.detach().numpy())
    np.testing.assert_allclose(got, y.detach().numpy(), atol=1e-10)
    dy = torch.randn(shape, dtype=torch.float64)
    y.backward(dy)
    dx = enorm.backward(dy.numpy())
    np.testing.assert_allclose(dx, x.grad.numpy(), atol=1e-10)
    np.testing.assert_allclose(enorm.weight.grad, tnorm.weight.grad.numpy(), atol=1e-10)
    np.testing.assert_allclose(enorm.running_mean, tnorm.running_mean.numpy(), atol=1e-12)


def test_modes_travel_module_by_module(torch):
    from normlab.torch import from_torch, to_torch

    nn = torch.nn
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.5))
    model.train()
    model[1].eval()
    engine = from_torch(model)
    assert [m.training for m in engine.modules()] == [m.training for m in model.modules()]
    back = to_torch(engine)
    assert [m.training for m in back.modules()] == [True, True, False, True]
