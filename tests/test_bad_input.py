"""The bad-input catalogue: every public layer, functional call and CLI command, one table.

Each row builds a fresh, *primed* target (a forward and backward already ran, so parameters,
running statistics and gradients hold non-trivial values; files already exist), snapshots it
(deep copies of every state dict, every ``.grad``, every watched array and the bytes of every
file in the test folder), makes the bad call, and checks that

* it raises ``ValueError`` or ``TypeError`` (the CLI: exit code 2),
* the message names the argument, what was expected and what was given,
* nothing changed: the snapshot after equals the snapshot before, bit for bit.

The second half checks the inputs that must NOT fail: strided and negative-stride views, and
NaN/inf in the input or the running statistics, which propagate channel by channel like torch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from normlab import data as datasets
from normlab import functional as F
from normlab import nn, optim, serialization
from normlab.fold.affine import Affine


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[Path], tuple[Callable[[], object], list]]  # tmp -> (bad call, watched)
    exc: type[Exception]
    parts: tuple[str, ...]  # argument name, expected, got: each must be in the message


class CliUsageError(ValueError):
    """A CLI command that exited with code 2 (usage error); the message is its output."""


RNG = np.random.default_rng(0)
X2 = RNG.normal(size=(6, 3)).astype(np.float32)
X3 = RNG.normal(size=(4, 3, 5)).astype(np.float32)
X4 = RNG.normal(size=(2, 4, 5, 5)).astype(np.float32)
X5 = RNG.normal(size=(2, 3, 2, 3, 3)).astype(np.float32)


def primed(module: nn.Module, x: np.ndarray, *extra) -> nn.Module:
    """Run one training forward + backward so that buffers and grads hold real values."""
    y = module(x, *extra)
    if isinstance(module, nn.CrossEntropyLoss):
        return module
    if isinstance(y, tuple):   # LSTM: (output, (h_n, c_n))
        y = y[0]
    module.backward(np.ones_like(y))
    return module


def bn1d() -> nn.BatchNorm1d:
    return primed(nn.BatchNorm1d(3), X2 * 3 + 1)


def bn2d() -> nn.BatchNorm2d:
    return primed(nn.BatchNorm2d(4), X4)


def model() -> nn.Sequential:
    m = nn.Sequential(nn.Linear(3, 4, rng=1), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2, rng=2))
    return primed(m, X2)


def on(module_factory, call):
    """A case on a fresh primed module: ``call(module)`` is the bad call."""
    def make(tmp):
        m = module_factory()
        return (lambda: call(m)), [m]
    return make


def functional(call, *arrays):
    """A case on the functional core: ``arrays`` (weights, running stats) must stay unchanged."""
    def make(tmp):
        return (lambda: call(*arrays)), list(arrays)
    return make


def sd_case(mutate):
    """load_state_dict with a state dict derived from the model's own one by ``mutate``."""
    def make(tmp):
        m = model()
        sd = m.state_dict()
        sd = {k: v * 2 + 1 for k, v in sd.items()}   # differs from the current values
        bad = mutate(sd)
        return (lambda: m.load_state_dict(bad)), [m]
    return make


def file_case(call, prepare=None):
    """``call(tmp, model)`` with a model and its saved state dict ``tmp/existing.npz``;
    ``prepare(tmp)`` then sets up the bad files (before the snapshot)."""
    def make(tmp):
        m = model()
        serialization.save(m, tmp / "existing.npz")
        if prepare:
            prepare(tmp)
        return (lambda: call(tmp, m)), [m]
    return make


def cli(*args, prepare=None, env=None):
    """A CLI call; ``prepare(tmp)`` writes its input files first, ``env`` adds variables."""
    def make(tmp):
        # an earlier run's outputs: a bad command must not touch them
        out = tmp / "out"
        out.mkdir()
        (out / "results.json").write_text('{"experiments": {}}')
        (out / "report.html").write_text("<html></html>")
        if prepare:
            prepare(tmp)

        def call():
            from typer.testing import CliRunner

            from normlab.cli import app
            res = CliRunner().invoke(app, [str(a).replace("TMP", str(tmp)) for a in args],
                                     env=env)
            if res.exit_code == 2:
                raise CliUsageError(res.output)
            raise AssertionError(f"exit code {res.exit_code}, expected 2: {res.output}")
        return call, []
    return make


def truncate_checkpoint(tmp):
    path = tmp / "existing.npz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def write_foreign_state_dict(tmp):
    serialization.save({"0.weight": np.ones((4, 3), np.float32)}, tmp / "foreign.npz")


W3, B3, RM3, RV3 = (np.full(3, 1.5, np.float32), np.full(3, 0.5, np.float32),
                    np.full(3, 0.25, np.float32), np.full(3, 2.0, np.float32))

CASES = [
    # -- BatchNorm: shapes ------------------------------------------------------------------
    Case("bn1d-4d", on(bn1d, lambda m: m(X4[:, :3])), ValueError, ("x:", "2D or 3D", "got 4D")),
    Case("bn1d-1d", on(bn1d, lambda m: m(X2[0])), ValueError, ("x:", "2D or 3D", "got 1D")),
    Case("bn2d-3d", on(bn2d, lambda m: m(X3)), ValueError, ("x:", "expected 4D", "got 3D")),
    Case("bn3d-4d", on(lambda: primed(nn.BatchNorm3d(3), X5), lambda m: m(X4[:, :3])),
         ValueError, ("x:", "expected 5D", "got 4D")),
    Case("bn1d-channels", on(bn1d, lambda m: m(X2[:, :2])), ValueError,
         ("x:", "expected 3 channels", "got 2")),
    Case("bn2d-channels", on(bn2d, lambda m: m(X4[:, :3])), ValueError,
         ("x:", "expected 4 channels", "got 3")),
    Case("bn2d-channels-eval", on(lambda: bn2d().eval(), lambda m: m(X4[:, :2])), ValueError,
         ("x:", "expected 4 channels", "got 2")),
    Case("bn1d-empty-batch-train", on(bn1d, lambda m: m(X2[:0])), ValueError,
         ("x:", "more than 1 value per channel", "(0, 3)")),
    Case("bn1d-batch-of-1-train", on(bn1d, lambda m: m(X2[:1])), ValueError,
         ("x:", "more than 1 value per channel", "(1, 3)")),
    Case("bn2d-one-value-per-channel", on(bn2d, lambda m: m(X4[:1, :, :1, :1])), ValueError,
         ("x:", "more than 1 value per channel", "(1, 4, 1, 1)")),
    # -- BatchNorm: dtypes and containers -------------------------------------------------
    Case("bn-int", on(bn1d, lambda m: m(X2.astype(np.int64))), TypeError,
         ("x:", "floating dtype", "int64")),
    Case("bn-bool", on(bn1d, lambda m: m(X2 > 0)), TypeError, ("x:", "floating dtype", "bool")),
    Case("bn-complex", on(bn1d, lambda m: m(X2.astype(np.complex64))), TypeError,
         ("x:", "floating dtype", "complex64")),
    Case("bn-object", on(bn1d, lambda m: m(X2.astype(object))), TypeError,
         ("x:", "floating dtype", "object")),
    Case("bn-list", on(bn1d, lambda m: m(X2.tolist())), TypeError,
         ("x:", "numpy.ndarray", "got list")),
    # -- BatchNorm: hyper-parameters --------------------------------------------------------
    Case("bn-eps-zero", functional(lambda: nn.BatchNorm1d(3, eps=0)), ValueError,
         ("eps:", "positive", "got 0")),
    Case("bn-eps-negative", functional(lambda: nn.BatchNorm2d(3, eps=-1e-5)), ValueError,
         ("eps:", "positive", "got -1e-05")),
    Case("bn-eps-inf", functional(lambda: nn.BatchNorm1d(3, eps=float("inf"))), ValueError,
         ("eps:", "finite", "got inf")),
    Case("bn-momentum-above-1", functional(lambda: nn.BatchNorm1d(3, momentum=1.5)), ValueError,
         ("momentum:", "[0, 1]", "got 1.5")),
    Case("bn-momentum-negative", functional(lambda: nn.BatchNorm1d(3, momentum=-0.1)),
         ValueError, ("momentum:", "[0, 1]", "got -0.1")),
    Case("bn-num-features-0", functional(lambda: nn.BatchNorm1d(0)), ValueError,
         ("num_features:", "positive integer", "got 0")),
    # -- BatchNorm: backward ----------------------------------------------------------------
    Case("bn-backward-dy-shape", on(bn1d, lambda m: m.backward(np.ones((6, 4), np.float32))),
         ValueError, ("dy:", "(6, 3)", "got (6, 4)")),
    Case("bn-backward-dy-broadcast", on(bn1d, lambda m: m.backward(np.ones((1, 3), np.float32))),
         ValueError, ("dy:", "(6, 3)", "got (1, 3)")),
    Case("bn-eval-backward-dy-list",
         on(lambda: primed(bn2d().eval(), X4), lambda m: m.backward(X4.tolist())), TypeError,
         ("dy:", "numpy.ndarray", "got list")),
    # -- every other layer's backward: dy checked first (Linear used to accumulate a wrong
    # weight gradient from a (3, 4) dy before failing; Flatten/ReLU/Dropout broadcast or reshape
    # a wrong dy silently) --------------------------------------------------------------------
    *[Case(f"{name}-backward-dy-shape", on(make, lambda m, bad=bad: m.backward(
        np.ones(bad, np.float32))), ValueError, ("dy:", f"expected shape {want}", f"got {bad}"))
      for name, make, want, bad in [
          ("layernorm", lambda: primed(nn.LayerNorm((3, 5)), X3), (4, 3, 5), (4, 3, 4)),
          ("groupnorm", lambda: primed(nn.GroupNorm(2, 4), X4), (2, 4, 5, 5), (2, 4, 5, 4)),
          ("instancenorm", lambda: primed(nn.InstanceNorm1d(3, affine=True), X3), (4, 3, 5),
           (4, 3, 4)),
          ("conv", lambda: primed(nn.Conv2d(4, 2, 3, rng=0), X4), (2, 2, 3, 3), (2, 2, 3, 4)),
          ("maxpool", lambda: primed(nn.MaxPool2d(2), X4), (2, 4, 2, 2), (2, 4, 2, 3)),
          ("avgpool", lambda: primed(nn.AvgPool2d(2), X4), (2, 4, 2, 2), (2, 4, 2, 3)),
          ("linear", lambda: primed(nn.Linear(3, 2, rng=0), X2), (6, 2), (3, 4)),
          ("flatten", lambda: primed(nn.Flatten(), X4), (2, 100), (4, 50)),
          ("relu", lambda: primed(nn.ReLU(), X2), (6, 3), (1, 3)),
          ("sigmoid", lambda: primed(nn.Sigmoid(), X2), (6, 3), (6, 4)),
          ("tanh", lambda: primed(nn.Tanh(), X2), (6, 3), (3, 6)),
          ("dropout", lambda: primed(nn.Dropout(0.5, rng=0), X2), (6, 3), (1, 3)),
          ("affine", lambda: primed(Affine(W3, B3), X3), (4, 3, 5), (4, 3, 4)),
          ("renorm", lambda: primed(nn.BatchRenorm1d(3, r_max=2.0, d_max=1.0), X2 * 3 + 1),
           (6, 3), (6, 4)),
      ]],
    Case("lstm-backward-d-out-shape",
         on(lambda: primed(nn.LSTM(5, 4, norm="layer", rng=0), X3),
            lambda m: m.backward(np.ones((4, 3, 5), np.float32))),
         ValueError, ("d_out:", "(4, 3, 4)", "got (4, 3, 5)")),
    Case("linear-backward-dy-list",
         on(lambda: primed(nn.Linear(3, 2, rng=0), X2), lambda m: m.backward(X2.tolist())),
         TypeError, ("dy:", "numpy.ndarray", "got list")),
    Case("conv-backward-params-dy-int",
         on(lambda: primed(nn.Conv2d(4, 2, 3, rng=0), X4),
            lambda m: m.backward_params(np.ones((2, 2, 3, 3), np.int64))),
         TypeError, ("dy:", "floating dtype", "int64")),
    # -- state dicts -----------------------------------------------------------------------
    Case("sd-missing-key", sd_case(lambda sd: {k: v for k, v in sd.items()
                                               if k != "1.running_var"}),
         ValueError, ("state_dict:", "missing keys", "1.running_var")),
    Case("sd-unexpected-key", sd_case(lambda sd: {**sd, "1.running_std": sd["1.running_var"]}),
         ValueError, ("state_dict:", "unexpected keys", "1.running_std")),
    Case("sd-wrong-shape", sd_case(lambda sd: {**sd, "1.weight": np.ones(5, np.float32)}),
         ValueError, ("1.weight", "expected shape (4,)", "got (5,)")),
    Case("sd-string-values", sd_case(lambda sd: {**sd, "3.bias": np.array(["a", "b"])}),
         TypeError, ("state_dict['3.bias']", "real numeric", "<U1")),
    Case("sd-complex-values", sd_case(lambda sd: {**sd, "1.running_var": sd["1.running_var"]
                                                  .astype(np.complex64)}),
         TypeError, ("state_dict['1.running_var']", "real numeric", "complex64")),
    Case("sd-none-values", sd_case(lambda sd: {**sd, "3.bias": np.array([None, None])}),
         TypeError, ("state_dict['3.bias']", "real numeric", "object")),
    Case("sd-int-key", sd_case(lambda sd: {**sd, 0: sd["0.weight"]}), TypeError,
         ("state_dict:", "string keys", "got 0")),
    Case("sd-not-a-mapping", sd_case(lambda sd: list(sd.items())), TypeError,
         ("state_dict:", "mapping", "got list")),
    # -- other norms -----------------------------------------------------------------------
    Case("groupnorm-groups-do-not-divide", functional(lambda: nn.GroupNorm(3, 4)), ValueError,
         ("num_groups:", "divisor of num_channels=4", "got 3")),
    Case("groupnorm-zero-groups", functional(lambda: nn.GroupNorm(0, 4)), ValueError,
         ("num_groups:", "positive integer", "got 0")),
    Case("groupnorm-channels", on(lambda: primed(nn.GroupNorm(2, 4), X4), lambda m: m(X3)),
         ValueError, ("x:", "expected 4 channels", "got 3")),
    Case("groupnorm-int", on(lambda: primed(nn.GroupNorm(2, 4), X4),
                             lambda m: m(X4.astype(np.int32))),
         TypeError, ("x:", "floating dtype", "int32")),
    Case("layernorm-wrong-normalized-shape",
         on(lambda: primed(nn.LayerNorm((3, 5)), X3), lambda m: m(X4)), ValueError,
         ("x:", "trailing dims (3, 5)", "(2, 4, 5, 5)")),
    Case("layernorm-normalized-shape-0", functional(lambda: nn.LayerNorm(0)), ValueError,
         ("normalized_shape:", "positive integer", "got 0")),
    Case("layernorm-normalized-shape-float", functional(lambda: nn.LayerNorm(2.5)), TypeError,
         ("normalized_shape:", "positive int", "got 2.5")),
    Case("instancenorm-1d", on(lambda: primed(nn.InstanceNorm1d(3, affine=True), X3),
                               lambda m: m(X2[0])),
         ValueError, ("x:", "expected 2D or 3D", "got 1D")),
    Case("instancenorm-one-value",
         on(lambda: primed(nn.InstanceNorm2d(4, track_running_stats=True), X4),
            lambda m: m(X4[:, :, :1, :1])),
         ValueError, ("x:", "more than 1 value per group", "(2, 4, 1, 1)")),
    # -- functional core -------------------------------------------------------------------
    Case("F-train-weight-list", functional(lambda b: F.batch_norm_train(X2, [1.0] * 3, b), B3),
         TypeError, ("weight:", "numpy.ndarray", "got list")),
    Case("F-train-bias-shape", functional(lambda w: F.batch_norm_train(X2, w, np.zeros(2)), W3),
         ValueError, ("bias:", "(3,)", "got (2,)")),
    Case("F-eval-running-mean-list",
         functional(lambda v: F.batch_norm_eval(X2, [0.0] * 3, v), RV3), TypeError,
         ("running_mean:", "numpy.ndarray", "got list")),
    Case("F-eval-running-var-shape",
         functional(lambda m, v: F.batch_norm_eval(X2, m, v[:2]), RM3, RV3), ValueError,
         ("running_var:", "(3,)", "got (2,)")),
    Case("F-eval-eps-zero",
         functional(lambda m, v: F.batch_norm_eval(X2, m, v, eps=0.0), RM3, RV3), ValueError,
         ("eps:", "positive", "got 0.0")),
    Case("F-groupnorm-divisor", functional(lambda: F.group_norm_forward(X4, 3)), ValueError,
         ("num_groups:", "divisor of num_channels=4", "got 3")),
    Case("F-layernorm-shape", functional(lambda w: F.layer_norm_forward(X2, (4,), w), W3),
         ValueError, ("x:", "trailing dims (4,)", "(6, 3)")),
    # -- other layers ----------------------------------------------------------------------
    Case("conv-kernel-larger-than-padded-input",
         on(lambda: primed(nn.Conv2d(4, 2, 3, rng=0), X4),
            lambda m: m(X4[:, :, :2, :2])),
         ValueError, ("x:", "smaller than the dilated kernel (3, 3)", "(2, 2)")),
    Case("conv-kernel-larger-with-padding",
         on(lambda: primed(nn.Conv2d(4, 2, 7, padding=1, rng=0), X4),
            lambda m: m(X4[:, :, :4, :4])),
         ValueError, ("x:", "kernel (7, 7) with padding (1, 1)", "(4, 4)")),
    Case("conv-channels", on(lambda: primed(nn.Conv2d(4, 2, 3, rng=0), X4),
                             lambda m: m(X4[:, :3])),
         ValueError, ("x:", "expected 4 channels", "got 3")),
    Case("conv-3d-input", on(lambda: primed(nn.Conv2d(4, 2, 3, rng=0), X4), lambda m: m(X4[0])),
         ValueError, ("x:", "expected 4D", "got 3D")),
    Case("maxpool-kernel-too-large", on(lambda: primed(nn.MaxPool2d(3), X4),
                                        lambda m: m(X4[:, :, :2, :2])),
         ValueError, ("x:", "smaller than the kernel (3, 3)", "(2, 2)")),
    Case("linear-in-features", on(lambda: primed(nn.Linear(3, 2, rng=0), X2),
                                  lambda m: m(X3)),
         ValueError, ("x:", "last dim 3", "(4, 3, 5)")),
    Case("linear-list", on(lambda: primed(nn.Linear(3, 2, rng=0), X2), lambda m: m(X2.tolist())),
         TypeError, ("x:", "numpy.ndarray", "got list")),
    Case("sigmoid-list", on(lambda: primed(nn.Sigmoid(), X2), lambda m: m([0.5, 1.0])),
         TypeError, ("x:", "numpy.ndarray", "got list")),
    Case("relu-int", on(lambda: primed(nn.ReLU(), X2), lambda m: m(np.arange(4))),
         TypeError, ("x:", "floating dtype", "int64")),
    Case("lstm-input-size", on(lambda: primed(nn.LSTM(5, 4, norm="layer", rng=0), X3),
                               lambda m: m(X3[:, :, :3])),
         ValueError, ("x:", "input_size=5", "(4, 3, 3)")),
    Case("sequential-bad-input",
         on(model, lambda m: m(X3)), ValueError, ("x:", "last dim 3", "(4, 3, 5)")),
    # -- losses ----------------------------------------------------------------------------
    Case("ce-label-too-large",
         functional(lambda: nn.CrossEntropyLoss()(X2, np.array([0, 1, 2, 3, 0, 1]))),
         ValueError, ("labels:", "[0, 3)", "[0, 3]")),
    Case("ce-label-negative",
         functional(lambda: nn.CrossEntropyLoss()(X2, np.array([0, 1, -1, 2, 0, 1]))),
         ValueError, ("labels:", "[0, 3)", "[-1, 2]")),
    Case("ce-label-float",
         functional(lambda: nn.CrossEntropyLoss()(X2, np.zeros(6))), TypeError,
         ("labels:", "integer array", "float64")),
    Case("ce-label-shape",
         functional(lambda: nn.CrossEntropyLoss()(X2, np.zeros(5, int))), ValueError,
         ("labels:", "(6,)", "got (5,)")),
    Case("ce-logits-3d", functional(lambda: nn.CrossEntropyLoss()(X3, np.zeros(4, int))),
         ValueError, ("logits:", "2D", "(4, 3, 5)")),
    Case("mse-target-strings",
         functional(lambda: nn.MSELoss()(X2[:, 0], np.array(list("abcdef")))), TypeError,
         ("target:", "real numeric", "<U1")),
    # -- optimizers ------------------------------------------------------------------------
    Case("sgd-negative-lr", on(model, lambda m: optim.SGD(m.parameters(), lr=-0.1)),
         ValueError, ("lr:", "non-negative", "got -0.1")),
    Case("sgd-params-not-parameters", on(model, lambda m: optim.SGD(list(m.state_dict().values()),
                                                                     lr=0.1)),
         TypeError, ("params[0]:", "Parameter", "got ndarray")),
    # -- files -----------------------------------------------------------------------------
    Case("save-into-missing-dir", file_case(lambda tmp, m: serialization.save(m, tmp / "no" /
                                                                              "x.npz")),
         ValueError, ("path:", "existing directory", "x.npz")),
    Case("save-object-array-over-existing-file",
         file_case(lambda tmp, m: serialization.save({"a": np.array([None])},
                                                     tmp / "existing.npz")),
         TypeError, ("obj['a']", "numeric array", "object")),
    Case("load-truncated-file", file_case(lambda tmp, m: serialization.load(m, tmp /
                                                                          "existing.npz"),
                                          truncate_checkpoint), ValueError,
         ("path:", "not a readable .npz", "existing.npz")),
    Case("load-foreign-state-dict",
         file_case(lambda tmp, m: serialization.load(m, tmp / "foreign.npz"),
                   write_foreign_state_dict), ValueError,
         ("state_dict:", "missing keys", "0.bias")),
    # -- CLI (exit code 2 and a one-line message; earlier outputs untouched) ---------------
    Case("cli-unknown-experiment", cli("reproduce", "nope", "--out", "TMP/out"), CliUsageError,
         ("unknown experiment", "expected one of", "'nope'")),
    Case("cli-engine", cli("reproduce", "--engine", "jax", "--out", "TMP/out"), CliUsageError,
         ("--engine:", "numpy or torch", "'jax'")),
    Case("cli-seed", cli("reproduce", "--seed", "-1", "--out", "TMP/out"), CliUsageError,
         ("--seed:", "non-negative integer", "got -1")),
    Case("cli-data", cli("reproduce", "--data", "imagenet", "--out", "TMP/out"), CliUsageError,
         ("--data:", "mnist5k", "'imagenet'")),
    Case("cli-steps-scale", cli("reproduce", "--steps-scale", "2", "--out", "TMP/out"),
         CliUsageError, ("--steps-scale:", "(0, 1]", "got 2.0")),
    Case("cli-report-missing", cli("report", "TMP/nowhere"), CliUsageError,
         ("DIR:", "results.json", "nowhere")),
    Case("cli-fold-input-shape", cli("fold", "TMP/out/results.json", "-o", "TMP/f.npz",
                                     "--input-shape", "a,b"),
         CliUsageError, ("--input-shape:", "positive integers", "'a,b'")),
]


# -- issue 16: fold and bench input, mnist:DIR folders, NORMLAB_OUTPUT_POOL ----------------
def fold_archive(layers, arrays=None, name="m.npz", raw_spec=None):
    """``prepare`` for a fold case: TMP/<name> holding a spec (or raw text) and arrays."""
    def prepare(tmp):
        import json
        spec = raw_spec if raw_spec is not None else json.dumps(
            {"format": "normlab.sequential/1", "dtype": "float32", "layers": layers})
        np.savez(tmp / name, __architecture__=np.array(spec), **(arrays or {}))
    return prepare


BN_ARCHIVE = fold_archive([{"type": "BatchNorm2d", "args": [3]}],
                          {"0.weight": W3, "0.bias": B3, "0.running_mean": RM3,
                           "0.running_var": RV3, "0.num_batches_tracked": np.array(1)})


def fold_cli(shape: str, prepare=BN_ARCHIVE):
    """``normlab fold TMP/m.npz -o TMP/f.npz --input-shape shape`` on ``prepare``'s archive."""
    return cli("fold", "TMP/m.npz", "-o", "TMP/f.npz", "--input-shape", shape, prepare=prepare)


def truncated_archive(tmp):
    BN_ARCHIVE(tmp)
    raw = (tmp / "m.npz").read_bytes()
    (tmp / "m.npz").write_bytes(raw[: len(raw) // 2])


def mnist_folder(labels=None, images=None, split="train"):
    """A function (tmp -> the data.load call) on an mnist:DIR folder with one bad file."""
    def call(tmp):
        from tests.data.test_data import write_idx
        folder = tmp / "mnist"
        folder.mkdir(exist_ok=True)
        for prefix in ("train", "t10k"):
            bad = prefix == split
            img = images if bad and images is not None else np.zeros((100, 8, 8), np.uint8)
            lab = (np.resize(labels, len(img)) if bad and labels is not None
                   else np.arange(len(img), dtype=np.uint8) % 10)
            write_idx(folder / f"{prefix}-images-idx3-ubyte", img)
            write_idx(folder / f"{prefix}-labels-idx1-ubyte", lab)
        return lambda: datasets.load(f"mnist:{folder}")
    return lambda tmp: (call(tmp), [])


def with_env(name: str, value: str, call):
    """``call()`` with the environment variable set, restored afterwards."""
    def run():
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(name, value)
            return call()
    return run


BIG = np.ones((1024, 512), np.float32)   # 2 MB: its kernel output is pool-sized

CASES += [
    # -- normlab fold: files that could run code or exhaust memory, paths, shapes ------------
    Case("cli-fold-out-is-model", cli("fold", "TMP/m.npz", "-o", "TMP/m.npz", "--input-shape",
                                      "1,3,4,4", prepare=BN_ARCHIVE),
         CliUsageError, ("--out:", "other than MODEL", "m.npz")),
    Case("cli-fold-out-is-directory", cli("fold", "TMP/m.npz", "-o", "TMP/d.npz",
                                          "--input-shape", "1,3,4,4",
                                          prepare=lambda t: (BN_ARCHIVE(t),
                                                             (t / "d.npz").mkdir())),
         CliUsageError, ("--out:", "a file in an existing directory", "d.npz")),
    Case("cli-fold-input-shape-huge", fold_cli("100000,3,1000,1000"),
         CliUsageError, ("--input-shape:", "at most 134217728 values", "100000x3x1000x1000")),
    Case("cli-fold-input-shape-wrong-for-model", fold_cli("1,5,4,4"),
         CliUsageError, ("--input-shape:", "a shape MODEL accepts", "1x5x4x4")),
    Case("cli-fold-declared-over-budget",
         fold_cli("1,30000", fold_archive([{"type": "Linear", "args": [30000, 30000]}])),
         CliUsageError, ("architecture:", "at most 1073741824 bytes", "900030000")),
    Case("cli-fold-declared-without-weights",
         fold_cli("1,3", fold_archive([{"type": "Linear", "args": [3, 4]}])),
         CliUsageError, ("architecture.layers[0]:", "0.weight of shape (4, 3)", "no such")),
    Case("cli-fold-declared-other-shape",
         fold_cli("1,3", fold_archive([{"type": "Linear", "args": [3, 4]}],
                                      {"0.weight": np.ones((4, 5), np.float32),
                                       "0.bias": np.ones(4, np.float32)})),
         CliUsageError, ("architecture.layers[0]:", "shape (4, 3)", "got (4, 5)")),
    Case("cli-fold-declared-bad-argument",
         fold_cli("1,3", fold_archive([{"type": "Conv2d", "args": [3, "four", 3]}])),
         CliUsageError, ("architecture.layers[0].out_channels:", "positive integer",
                         "'four'")),
    Case("cli-fold-truncated-archive", fold_cli("1,3,4,4", truncated_archive),
         CliUsageError, ("path:", "not a readable .npz", "m.npz")),
    Case("cli-fold-architecture-nested-json",
         fold_cli("1,3", fold_archive(None, raw_spec="[" * 100000 + "]" * 100000)),
         CliUsageError, ("model:", "not valid JSON", "recursion")),
    Case("cli-fold-missing-model-markup", cli("fold", "TMP/[/x].npz", "-o", "TMP/f.npz",
                                              "--input-shape", "1,3"),
         CliUsageError, ("MODEL:", "existing file", "[/x].npz")),
    # -- normlab bench: settings checked before minutes of timing ---------------------------
    Case("cli-bench-json-is-directory", cli("bench", "--tiny", "--json", "TMP/out"),
         CliUsageError, ("--json:", "a file path", "out")),
    Case("cli-bench-json-below-a-file", cli("bench", "--tiny", "--json",
                                            "TMP/out/results.json/b.json"),
         CliUsageError, ("--json:", "a path in a folder", "results.json")),
    Case("cli-bench-output-pool-env", cli("bench", "--tiny",
                                          env={"NORMLAB_OUTPUT_POOL": "maybe"}),
         CliUsageError, ("NORMLAB_OUTPUT_POOL:", "512M", "'maybe'")),
    Case("output-pool-env-in-kernel-call",
         functional(with_env("NORMLAB_OUTPUT_POOL", "2 gigs",
                             lambda: F.layer_norm_forward(BIG, (512,)))),
         ValueError, ("NORMLAB_OUTPUT_POOL:", "0/off/false/no", "'2 gigs'")),
    # -- mnist:DIR: refused at load time, naming the file and the problem ---------------------
    Case("data-dir-with-mnist5k", functional(lambda: datasets.load("mnist5k", data_dir="/tmp")),
         ValueError, ("data_dir:", "only with 'fashion-mnist'", "'mnist5k'")),
    Case("data-mnist-without-folder", functional(lambda: datasets.load("mnist:")), ValueError,
         ("data:", "mnist:DIR with a folder", "'mnist:'")),
    Case("data-labels-negative", mnist_folder(labels=np.array([0, -1, 2], np.int8)),
         ValueError, ("train-labels-idx1-ubyte", "labels 0..9", "from -1 to 2")),
    Case("data-labels-above-9", mnist_folder(labels=np.array([0, 10, 2], np.uint8),
                                             split="t10k"),
         ValueError, ("t10k-labels-idx1-ubyte", "labels 0..9", "from 0 to 10")),
    Case("data-labels-float", mnist_folder(labels=np.array([0, 3.7, 2], np.float32)),
         ValueError, ("train-labels-idx1-ubyte", "integer labels", "float32")),
    Case("data-labels-nan", mnist_folder(labels=np.array([0, np.nan, 2], np.float64)),
         ValueError, ("train-labels-idx1-ubyte", "integer labels", "nan")),
    Case("data-zero-images", mnist_folder(labels=np.zeros(0, np.uint8),
                                          images=np.zeros((0, 4, 4), np.uint8)),
         ValueError, ("train-images-idx3-ubyte", "at least one image", "(0, 4, 4)")),
    Case("data-zero-pixel-images", mnist_folder(images=np.zeros((3, 4, 0), np.uint8),
                                                split="t10k"),
         ValueError, ("t10k-images-idx3-ubyte", "1x1 pixels", "(3, 4, 0)")),
]


# -- issue 26: what was accepted silently, ended in a traceback, or named no argument ----------
def nested_spec(depth: int) -> list:
    """A Linear whose ``kwargs`` hold a value nested ``depth`` lists deep."""
    value = 3
    for _ in range(depth):
        value = [value]
    return [{"type": "Linear", "args": [3, 4], "kwargs": {"bias": value}}]


LINEAR_ARRAYS = {"0.weight": np.ones((4, 3), np.float32), "0.bias": np.ones(4, np.float32)}


def linear_with(**arrays):
    return fold_archive([{"type": "Linear", "args": [3, 4]}], {**LINEAR_ARRAYS, **arrays})


def reproduce_env(name: str, value: str):
    return cli("reproduce", "init-scale", "--quick", "--data", "digits", "--out", "TMP/o",
               env={name: value})


def fold_env(name: str, value: str):
    return cli("fold", "TMP/m.npz", "-o", "TMP/f.npz", "--input-shape", "1,3,4,4",
               prepare=BN_ARCHIVE, env={name: value})


CASES += [
    Case("flatten-start-dim-wraps", on(lambda: nn.Flatten(10**20), lambda m: m(X2)), ValueError,
         ("start_dim:", "in [-2, 1]", str(10**20))),
    Case("flatten-start-dim-string", functional(lambda: nn.Flatten("a")), TypeError,
         ("start_dim:", "an int", "'a'")),
    Case("sd-negative-running-var",
         sd_case(lambda sd: {**sd, "1.running_var": -np.abs(sd["1.running_var"])}), ValueError,
         ("state_dict['1.running_var']", "variance >= 0", "-")),
    Case("cli-fold-spec-5000-digit-int",
         fold_cli("1,3", fold_archive(None, raw_spec='{"format": "normlab.sequential/1", '
                                                    '"layers": [{"type": "Linear", "args": ['
                                                    + "9" * 5000 + ", 4]}]}")),
         CliUsageError, ("model:", "not valid JSON", "5000 digits")),
    Case("cli-fold-spec-type-is-a-list", fold_cli("1,3", fold_archive([{"type": ["ReLU"]}])),
         CliUsageError, ("architecture.layers[0].type:", "expected one of", "['ReLU']")),
    Case("cli-fold-spec-flatten-string",
         fold_cli("1,3", fold_archive([{"type": "Flatten", "args": ["a"]}])),
         CliUsageError, ("architecture.layers[0]:", "start_dim: expected an int", "'a'")),
    Case("cli-fold-spec-flatten-wraps",
         fold_cli("1,3", fold_archive([{"type": "Flatten", "args": [10**20]}])),
         CliUsageError, ("start_dim:", "in [-2, 1]", str(10**20))),
    Case("cli-fold-spec-nested-too-deep", fold_cli("1,3", fold_archive(nested_spec(20))),
         CliUsageError, ("architecture:", "nested at most 8 deep", "m.npz")),
    Case("cli-fold-int-weights", fold_cli("1,3", linear_with(**{"0.weight": np.ones((4, 3),
                                                                                 np.int64)})),
         CliUsageError, ("architecture.layers[0]:", "floating-point values", "int64")),
    Case("cli-fold-bool-weights", fold_cli("1,3", linear_with(**{"0.bias": np.ones(4, bool)})),
         CliUsageError, ("architecture.layers[0]:", "floating-point values", "bool")),
    Case("cli-fold-complex-weights",
         fold_cli("1,3", linear_with(**{"0.weight": np.ones((4, 3), np.complex64) * 1j})),
         CliUsageError, ("architecture.layers[0]:", "floating-point values", "complex64")),
    Case("cli-fold-nan-weights",
         fold_cli("1,3", linear_with(**{"0.weight": np.full((4, 3), np.nan, np.float32)})),
         CliUsageError, ("MODEL:", "a finite output", "nan")),
    Case("cli-fold-escape-in-member-name",
         fold_cli("1,3", linear_with(**{"\x1b[2Jevil": np.ones(1, np.float32)})),
         CliUsageError, ("state_dict:", "unexpected keys", "\\x1b[2Jevil")),
    Case("cli-fold-escape-in-kwargs-key",
         fold_cli("1,3", fold_archive([{"type": "Linear", "args": [3, 4],
                                        "kwargs": {"\x1b]0;pwned\x07": 1}}], LINEAR_ARRAYS)),
         CliUsageError, ("architecture.layers[0]:", "unexpected keyword", "\\x1b]0;pwned\\x07")),
    Case("cli-reproduce-seed-overflow",
         cli("reproduce", "init-scale", "--seed", str(2**63 - 1), "--seeds", "2", "--out",
             "TMP/o"),
         CliUsageError, ("--seed:", "seed + seeds - 1 <= 4294967295", str(2**63 - 1))),
    Case("cli-reproduce-kernels-env", reproduce_env("NORMLAB_KERNELS", "bogus"), CliUsageError,
         ("NORMLAB_KERNELS:", "expected one of", "'bogus'")),
    Case("cli-fold-kernels-env", fold_env("NORMLAB_KERNELS", "bogus"), CliUsageError,
         ("NORMLAB_KERNELS:", "expected one of", "'bogus'")),
    Case("cli-reproduce-output-pool-env", reproduce_env("NORMLAB_OUTPUT_POOL", "bogus"),
         CliUsageError, ("NORMLAB_OUTPUT_POOL:", "512M", "'bogus'")),
    Case("cli-reproduce-output-pool-negative", reproduce_env("NORMLAB_OUTPUT_POOL", "-5G"),
         CliUsageError, ("NORMLAB_OUTPUT_POOL:", "512M", "'-5G'")),
    Case("cli-fold-output-pool-env", fold_env("NORMLAB_OUTPUT_POOL", "bogus"), CliUsageError,
         ("NORMLAB_OUTPUT_POOL:", "512M", "'bogus'")),
    Case("data-images-1x1", mnist_folder(images=np.zeros((100, 1, 1), np.uint8)), ValueError,
         ("train-images-idx3-ubyte", "at least 8x8 pixels", "1x1")),
    Case("data-images-3x3", mnist_folder(images=np.zeros((10, 3, 3), np.uint8), split="t10k"),
         ValueError, ("t10k-images-idx3-ubyte", "at least 8x8 pixels", "3x3")),
    Case("data-five-training-images", mnist_folder(images=np.zeros((5, 28, 28), np.uint8)),
         ValueError, ("train-images-idx3-ubyte", "at least 100 training images", "got 5")),
    Case("cli-reproduce-conv-bn-on-3x3-images",
         cli("reproduce", "conv-bn", "--data", "mnist:TMP/mnist", "--out", "TMP/o",
             prepare=lambda t: mnist_folder(images=np.zeros((100, 3, 3), np.uint8))(t)[0]),
         CliUsageError, ("--data:", "at least 8x8 pixels", "3x3")),
]


def snapshot(watched: list, folder: Path) -> dict:
    """Deep copies of everything a bad call could touch."""
    snap = {"files": {p.relative_to(folder).as_posix(): p.read_bytes()
                      for p in sorted(folder.rglob("*")) if p.is_file()}}
    for i, w in enumerate(watched):
        if isinstance(w, nn.Module):
            snap[i] = (copy.deepcopy(w.state_dict()),
                       [copy.deepcopy(p.grad) for p in w.parameters()], w.training)
        else:
            snap[i] = copy.deepcopy(w)
    return snap


def assert_same(before, after) -> None:
    if isinstance(before, dict):
        assert list(before) == list(after)
        for k in before:
            assert_same(before[k], after[k])
    elif isinstance(before, (list, tuple)):
        assert len(before) == len(after)
        for b, a in zip(before, after, strict=True):
            assert_same(b, a)
    elif isinstance(before, np.ndarray):
        assert isinstance(after, np.ndarray) and before.dtype == after.dtype
        np.testing.assert_array_equal(before, after)   # NaN == NaN here
    else:
        assert before == after


def test_catalogue_is_large_and_ids_unique():
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_without_side_effects(case, tmp_path):
    call, watched = case.make(tmp_path)
    before = snapshot(watched, tmp_path)
    with pytest.raises(case.exc) as info:
        call()
    message = str(info.value)
    for part in case.parts:
        assert part in message, f"{part!r} not in {message!r}"
    assert_same(before, snapshot(watched, tmp_path))


# -- inputs that must work ------------------------------------------------------------------

@pytest.fixture(params=["numba", "numpy"])
def backend(request, monkeypatch):
    """Both kernel backends: numba (chosen automatically) and the forced NumPy reference."""
    monkeypatch.setenv("NORMLAB_KERNELS", request.param)
    return request.param


def _views(x: np.ndarray) -> dict[str, np.ndarray]:
    """Non-contiguous, negative-stride and channels-last views with the values of ``x``."""
    big = np.repeat(x, 2, axis=-1)
    flipped = np.ascontiguousarray(x[::-1, ::-1])[::-1, ::-1]
    views = {"every-other": big[..., ::2], "negative-stride": flipped,
             "fortran": np.asfortranarray(x)}
    if x.ndim > 2:   # for (N, C) channels-last IS the C-contiguous layout
        views["channels-last"] = np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 1, -1)), -1, 1)
    return views


LAYERS = {
    "bn1d": (lambda: nn.BatchNorm1d(3), X2),
    "bn1d-3d": (lambda: nn.BatchNorm1d(3), X3),
    "bn2d": (lambda: nn.BatchNorm2d(4), X4),
    "groupnorm": (lambda: nn.GroupNorm(2, 4), X4),
    "layernorm": (lambda: nn.LayerNorm(5), X4),
    "instancenorm": (lambda: nn.InstanceNorm2d(4, affine=True, track_running_stats=True), X4),
    "conv": (lambda: nn.Conv2d(4, 2, 3, padding=1, rng=0), X4),
    "linear": (lambda: nn.Linear(5, 2, rng=0), X4),
}


@pytest.mark.parametrize("layer", list(LAYERS))
def test_strided_views_work_like_contiguous(layer, backend):
    make, x = LAYERS[layer]
    for name, view in _views(x).items():
        assert view.strides != np.ascontiguousarray(view).strides, name
        ref, got = make(), make()     # same seeds: identical parameters
        y_ref = ref(np.ascontiguousarray(view))
        y = got(view)
        # the kernels may pick another loop order for another layout: float32 rounding only
        np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5, err_msg=name)
        dy = np.cos(np.arange(y.size, dtype=np.float32)).reshape(y.shape)[..., ::-1]
        np.testing.assert_allclose(got.backward(dy), ref.backward(np.ascontiguousarray(dy)),
                                   rtol=1e-4, atol=1e-5, err_msg=name)
        for (k, a), b in zip(ref.state_dict().items(), got.state_dict().values(), strict=True):
            np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7, err_msg=f"{name} {k}")


def _nan_channel_input(dtype) -> np.ndarray:
    x = RNG.normal(size=(8, 3, 4)).astype(dtype)
    x[2, 0, 1] = np.nan     # channel 0: one NaN
    x[5, 2, 3] = np.inf     # channel 2: one inf
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_and_inf_propagate_per_channel_like_torch(torch, backend, dtype):
    x = _nan_channel_input(dtype)
    ours = nn.BatchNorm1d(3, dtype=dtype)
    ref = torch.nn.BatchNorm1d(3, dtype=torch.float32 if dtype == np.float32 else torch.float64)
    with np.errstate(invalid="ignore"):
        y = ours(x)
    y_t = ref(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_t))
    assert np.isnan(y[:, 0]).all() and np.isnan(y[:, 2]).all() and np.isfinite(y[:, 1]).all()
    for name in ("running_mean", "running_var"):
        mine, theirs = getattr(ours, name), getattr(ref, name).numpy()
        # torch's mean of a channel holding +inf is inf; the numba kernel's is NaN (it
        # centres on a shift first): both non-finite, which is what the propagation promises
        np.testing.assert_array_equal(np.isfinite(mine), np.isfinite(theirs), err_msg=name)
        np.testing.assert_allclose(mine[1], theirs[1], rtol=1e-5)
    # and the layer keeps working afterwards (no exception, finite channel stays finite)
    with np.errstate(invalid="ignore"):
        dx = ours.backward(np.ones_like(y))
    assert np.isfinite(dx[:, 1]).all()


def test_nan_in_running_stats_propagates_only_to_its_channel(torch, backend):
    m = nn.BatchNorm2d(4).eval()
    m.running_mean[:] = [0.0, np.nan, 1.0, 0.0]
    m.running_var[:] = [1.0, 1.0, 2.0, np.nan]
    ref = torch.nn.BatchNorm2d(4).eval()
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in m.state_dict().items()})
    y = m(X4)
    y_t = ref(torch.from_numpy(X4)).detach().numpy()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_t))
    assert np.isnan(y[:, [1, 3]]).all() and np.isfinite(y[:, [0, 2]]).all()
    np.testing.assert_allclose(y[:, [0, 2]], y_t[:, [0, 2]], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", [lambda: nn.BatchNorm1d(3).eval(), lambda: nn.LayerNorm(3),
                                  lambda: nn.GroupNorm(1, 3)], ids=["bn-eval", "ln", "gn"])
def test_empty_batch_outside_bn_training_works_like_torch(make, backend):
    x = np.zeros((0, 3, 3), np.float32) if not isinstance(make(), nn.LayerNorm) else \
        np.zeros((0, 3), np.float32)
    y = make()(x)
    assert y.shape == x.shape and y.dtype == x.dtype


# -- state-dict values torch copies without a word (issue 16 item 7; kept apart for merging) --
def _nbt(value):
    return sd_case(lambda sd: {**sd, "1.num_batches_tracked": np.array(value)})


STATE_VALUE_CASES = [
    Case("sd-count-nan", _nbt(np.nan), ValueError,
         ("state_dict['1.num_batches_tracked']", "whole number", "nan")),
    Case("sd-count-fractional", _nbt(2.5), ValueError,
         ("state_dict['1.num_batches_tracked']", "whole number", "2.5")),
    Case("sd-count-negative", _nbt(-3), ValueError,
         ("state_dict['1.num_batches_tracked']", "[0, 2**63)", "-3")),
    Case("sd-count-overflow-float", _nbt(1e19), ValueError,
         ("state_dict['1.num_batches_tracked']", "[0, 2**63)", "1e+19")),
    Case("sd-count-overflow-uint64", _nbt(np.uint64(2**63)), ValueError,
         ("state_dict['1.num_batches_tracked']", "[0, 2**63)", "9223372036854775808")),
    Case("sd-masked-array",
         sd_case(lambda sd: {**sd, "1.running_var": np.ma.masked_array(
             sd["1.running_var"], mask=[False, True, False, False])}),
         TypeError, ("state_dict['1.running_var']", "plain array", "masked array")),
]


@pytest.mark.parametrize("case", STATE_VALUE_CASES, ids=[c.id for c in STATE_VALUE_CASES])
def test_bad_state_values_are_refused_without_side_effects(case, tmp_path):
    test_bad_input_is_refused_without_side_effects(case, tmp_path)


def test_nonfinite_running_statistics_load_with_one_warning():
    """torch loads NaN/inf running statistics silently; the engine loads them too (a NaN channel
    is a legitimate state) but says which key and how many channels, once."""
    import warnings

    m = model()
    sd = m.state_dict()
    sd["1.running_mean"][[0, 2]] = np.nan
    sd["1.running_var"][1] = np.inf
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        m.load_state_dict(sd)
    assert len(record) == 1
    text = str(record[0].message)
    assert "state_dict['1.running_mean'] has 2 of 4 channels NaN/inf" in text
    assert "state_dict['1.running_var'] has 1 of 4 channels NaN/inf" in text
    assert np.isnan(m[1].running_mean[0])
