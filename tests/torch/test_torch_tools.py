"""recalibrate_bn and bn_health."""

from __future__ import annotations

import pytest


def _model(torch, bias=True):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3, bias=bias), torch.nn.BatchNorm1d(3),
                               torch.nn.Dropout(0.5), torch.nn.Linear(3, 2))


def test_recalibrate_is_the_plain_average_of_batch_statistics(torch):
    import normlab.torch as nt

    m = _model(torch)
    m.eval()
    m[2].train()  # a module in a mode of its own must keep it
    with torch.no_grad():
        m[1].running_mean.fill_(50.0)  # stale statistics
        m[1].running_var.fill_(1e-3)
    params = {k: v.clone() for k, v in m.named_parameters()}
    batches = [(torch.randn(8, 4) * (i + 1) + i, torch.zeros(8)) for i in range(5)]
    used = nt.recalibrate_bn(m, batches, num_batches=3)
    assert used == 3
    with torch.no_grad():
        h = [m[0](x) for x, _ in batches[:3]]
    want_mean = torch.stack([a.mean(0) for a in h]).mean(0)
    want_var = torch.stack([a.var(0, unbiased=True) for a in h]).mean(0)
    torch.testing.assert_close(m[1].running_mean, want_mean)
    torch.testing.assert_close(m[1].running_var, want_var)
    assert int(m[1].num_batches_tracked) == 3
    assert m[1].momentum == 0.1 and not m.training and not m[1].training and m[2].training
    for k, v in m.named_parameters():
        assert torch.equal(v, params[k]) and v.grad is None


def test_recalibrate_errors(torch):
    import normlab.torch as nt

    m = _model(torch)
    with pytest.raises(ValueError, match="num_batches"):
        nt.recalibrate_bn(m, [], num_batches=0)
    with pytest.raises(ValueError, match="loader"):
        nt.recalibrate_bn(m, [])
    assert m[1].momentum == 0.1 and m.training


def test_bn_health_flags_the_known_problems(torch):
    import normlab.torch as nt

    m = _model(torch)
    with torch.no_grad():
        m[0].weight[2].zero_()  # channel 2 constant: dead
        m[0].bias[2] = 0.3
        m[1].running_mean.fill_(5.0)  # stale running mean
    m.eval()
    m[1].train()  # forgotten in train mode
    before = {k: v.clone() for k, v in m.state_dict().items()}
    loader = [torch.randn(4, 4) for _ in range(3)]
    report = nt.bn_health(m, loader, num_batches=2)
    d = report.to_dict()
    assert d["batches"] == 2
    layer = d["layers"]["1"]
    assert layer["values_per_channel"] == 4
    assert layer["dead_channels"] == [2]
    assert layer["train_mode_at_eval"]
    assert layer["redundant_bias_from"] == "0"
    assert layer["mean_gap"] > 1.0
    text = " ".join(layer["suggestions"])
    for word in ("recalibrate_bn", "dead", ".eval()", "bias=False", "values per channel"):
        assert word in text
    for k, v in m.state_dict().items():  # running statistics untouched by the check
        assert torch.equal(v, before[k]), k
    assert m[1].training and not m.training
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(report)
    assert "BatchNorm1d" in console.export_text()


def test_bn_health_quiet_on_a_healthy_model(torch):
    import normlab.torch as nt

    m = _model(torch, bias=False)
    data = [torch.randn(64, 4) for _ in range(4)]
    nt.recalibrate_bn(m, data)
    m.eval()
    layer = nt.bn_health(m, data).to_dict()["layers"]["1"]
    assert layer["suggestions"] == [] and layer["mean_gap"] < 0.5


def test_import_normlab_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, normlab, normlab.functional, normlab.nn; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def _calibrated(torch, channels=64):
    """A Linear -> BN1d model whose running statistics match its data exactly."""
    import normlab.torch as nt

    torch.manual_seed(1)
    m = torch.nn.Sequential(torch.nn.Linear(8, channels, bias=False),
                            torch.nn.BatchNorm1d(channels))
    data = [torch.randn(256, 8) for _ in range(4)]
    nt.recalibrate_bn(m, data)
    return m.eval(), data


def test_bn_health_names_the_bad_channels(torch):
    """One channel with running_var 0, one with a NaN running_mean, one whose variance is ten
    times off: each named by channel, not averaged away by a median over 64 channels."""
    import normlab.torch as nt

    m, data = _calibrated(torch)
    with torch.no_grad():
        m[1].running_var[3] = 0.0
        m[1].running_mean[5] = float("nan")
        m[1].running_var[7] *= 10.0
    layer = nt.bn_health(m, data).to_dict()["layers"]["1"]
    assert layer["zero_var_channels"] == [3]
    assert layer["nonfinite_channels"] == [5]
    assert layer["stale_channels"] == [7]   # 3 and 5 are reported on their own
    text = " ".join(layer["suggestions"])
    assert "running_var <= 0 at channel(s) [3]" in text and "316x" in text
    assert "NaN/inf at channel(s) [5]" in text
    assert "do not match the data at channel(s) [7]" in text
    assert 0.08 < layer["var_ratio"] < 0.12


def test_bn_health_warns_about_a_model_left_in_train_mode(torch):
    import normlab.torch as nt

    m, data = _calibrated(torch, channels=4)
    m.train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    report = nt.bn_health(m, data)
    assert report.model_in_train_mode and report.to_dict()["model_in_train_mode"]
    layer = report.to_dict()["layers"]["1"]
    assert layer["train_mode"] and not layer["train_mode_at_eval"]
    assert any("the model is in train mode" in s and "model.eval()" in s
               for s in layer["suggestions"])
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k
    m.eval()
    assert not nt.bn_health(m, data).model_in_train_mode


def test_bn_health_covers_norm_act_and_frozen_layers(torch):
    """timm's BatchNormAct2d (its bias check sees the conv before it, not its own activation)
    and torchvision's FrozenBatchNorm2d are checked too."""
    import normlab.torch as nt
    from tests.torch_replicas import BatchNormAct2d, TvFrozenBatchNorm2d

    nn = torch.nn
    m = nn.Sequential(nn.Conv2d(3, 4, 3), BatchNormAct2d(4), nn.Conv2d(4, 4, 1),
                      TvFrozenBatchNorm2d(4)).eval()
    layers = nt.bn_health(m, [torch.randn(4, 3, 6, 6)]).to_dict()["layers"]
    assert set(layers) == {"1", "3"}
    assert layers["1"]["redundant_bias_from"] == "0" and layers["3"]["num_features"] == 4
