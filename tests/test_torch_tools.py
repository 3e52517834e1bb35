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
