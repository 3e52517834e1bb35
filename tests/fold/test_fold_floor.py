"""The float32 rounding floor beside a fold's error (issue 27, item 4): the unfolded model run in
float64 on the same input shows how far float32 rounding alone moves the output, so that a user
can tell rounding from a wrong fold."""

from __future__ import annotations

import re

import numpy as np
from typer.testing import CliRunner

from normlab.cli import app
from normlab.fold.archive import build, save_model
from tests.fold.test_fold_cli import SPEC, randomize


def deep_net(torch):
    """Enough layers and large enough BN scales that float32 rounding is visible."""
    nn = torch.nn
    layers = []
    for _ in range(6):
        layers += [nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()]
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), *layers)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(8, generator=gen))
                m.running_var.copy_(torch.rand(8, generator=gen) * 0.05 + 1e-3)
    return model.eval()


def test_floor_is_the_float64_distance_and_separates_a_wrong_fold(torch):
    from normlab.torch.fold import fold_bn
    from normlab.torch.rounding import rounding_floor

    model = deep_net(torch)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(x)
        exact = model.double()(x.double())
    model.float()
    floor, why = rounding_floor(model, x, want)
    assert why == "" and floor == (exact - want.double()).abs().max().item() and floor > 0
    assert next(model.parameters()).dtype == torch.float32   # the model is not changed
    folded, _ = fold_bn(model)
    with torch.no_grad():
        err = (folded(x) - want).abs().max().item()
        folded[0].bias += 1e-3 * want.abs().max() / 8   # a slightly wrong fold
        wrong = (folded(x) - want).abs().max().item()
    assert err < 20 * floor < wrong


def test_no_floor_for_float64_or_a_model_that_cannot_widen(torch):
    from normlab.torch.rounding import rounding_floor

    model = deep_net(torch).double()
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    assert rounding_floor(model, x, model(x)) == (None, "the input is torch.float64, not a lower "
                                                        "precision than float64")

    class Fixed(torch.nn.Module):   # makes float32 tensors itself: no float64 run
        def forward(self, x):
            return x @ torch.eye(x.shape[-1], dtype=torch.float32)
    floor, why = rounding_floor(Fixed(), x.float(), x.float())
    assert floor is None and why.startswith("the model does not run in float64 (RuntimeError")


def floor_line(stdout: str) -> float:
    (value,) = re.findall(r"float32 rounding alone \(the unfolded model in float64 on the same "
                          r"input\): max abs (\S+)", stdout)
    return float(value)


def test_cli_prints_the_floor_for_torch_and_numpy_models(tmp_path, torch):
    model = deep_net(torch)
    torch.save(model, tmp_path / "m.pt")
    done = CliRunner().invoke(app, ["fold", str(tmp_path / "m.pt"), "-o", str(tmp_path / "f.pt"),
                                    "--input-shape", "2,3,8,8", "--trust-model"])
    assert done.exit_code == 0, done.output
    x = torch.randn((2, 3, 8, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = (model.double()(x.double()) - model.float()(x).double()).abs().max().item()
    assert floor_line(done.output) == float(f"{want:.3g}")

    net = build(SPEC)
    randomize(net, np.random.default_rng(0))
    save_model(tmp_path / "m.npz", SPEC, net)
    done = CliRunner().invoke(app, ["fold", str(tmp_path / "m.npz"), "-o",
                                    str(tmp_path / "f.npz"), "--input-shape", "2,3,6,6"])
    assert done.exit_code == 0, done.output
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)
    wide = build({**SPEC, "dtype": "float64"})
    wide.load_state_dict({k: np.asarray(v, np.float64) for k, v in net.state_dict().items()})
    want = np.abs(wide.eval()(x.astype(np.float64)) - net.eval()(x)).max()
    assert want > 0 and floor_line(done.output) == float(f"{want:.3g}")


def test_cli_says_when_there_is_no_floor(tmp_path, torch):
    torch.save(deep_net(torch).double(), tmp_path / "m.pt")
    done = CliRunner().invoke(app, ["fold", str(tmp_path / "m.pt"), "-o", str(tmp_path / "f.pt"),
                                    "--input-shape", "1,3,4,4", "--trust-model"])
    assert done.exit_code == 0, done.output
    assert "float32 rounding floor: not measured, the input is torch.float64" in done.output
