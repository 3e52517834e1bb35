"""``normlab fold`` as a user runs it: .npz (NumPy engine) and .pt (torch) models, bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from normlab.cli import app
from normlab.fold.archive import load_model, save_model
from normlab.nn.batchnorm import BatchNormBase as _BatchNorm

SPEC = {"format": "normlab.sequential/1", "dtype": "float32", "layers": [
    {"type": "BatchNorm2d", "args": [3]},
    {"type": "Conv2d", "args": [3, 4, 3], "kwargs": {"bias": False}},
    {"type": "BatchNorm2d", "args": [4]},
    {"type": "ReLU"},
    {"type": "BatchNorm2d", "args": [4], "kwargs": {"affine": False}},
    {"type": "Conv2d", "args": [4, 4, 3], "kwargs": {"padding": 1}},
    {"type": "Flatten"},
    {"type": "Linear", "args": [64, 5]},
    {"type": "BatchNorm1d", "args": [5]},
]}


def randomize(model, rng) -> None:
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            m.running_mean[...] = rng.normal(size=m.num_features)
            m.running_var[...] = rng.uniform(1e-6, 2, m.num_features)
            if m.affine:
                m.weight.data[...] = rng.normal(size=m.num_features)


def normlab_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "normlab.cli", *args], capture_output=True,
                          text=True, timeout=120)


def test_fold_npz_end_to_end(tmp_path):
    from normlab.fold.archive import build

    rng = np.random.default_rng(0)
    model = build(SPEC)
    randomize(model, rng)
    src, out = tmp_path / "m.npz", tmp_path / "folded.npz"
    save_model(src, SPEC, model)

    done = normlab_cli("fold", str(src), "-o", str(out), "--input-shape", "2,3,6,6")

    assert done.returncode == 0, done.stderr
    assert "max abs error" in done.stdout and "folded 2 -> 1" in done.stdout
    spec, folded = load_model(out)
    # the BatchNorm1d merged into the Linear leaves its rank check, saved and loaded back
    assert [e["type"] for e in spec["layers"]] == ["Conv2d", "ReLU", "Affine", "Conv2d",
                                                   "Flatten", "Linear", "FoldedLinearCheck"]
    x = rng.normal(size=(3, 3, 6, 6)).astype(np.float32)
    want = model.eval()(x)
    np.testing.assert_allclose(folded.eval()(x), want, rtol=1e-5,
                               atol=1e-5 * np.abs(want).max())


def test_fold_pt_end_to_end(tmp_path, torch):
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.ConvTranspose2d(4, 2, 2, stride=2), nn.BatchNorm2d(2))
    with torch.no_grad():
        for m in (model[1], model[4]):
            m.running_mean.normal_()
            m.running_var.uniform_(0.1, 2)
    src, out = tmp_path / "m.pt", tmp_path / "folded.pt"
    torch.save(model, src)  # saved in training mode: the command folds the eval-mode model

    done = normlab_cli("fold", str(src), "-o", str(out), "--input-shape", "1,3,8,8",
                       "--trust-model")   # a pickled full module: loading it unpickles code

    assert done.returncode == 0, done.stderr
    assert "folded 1 -> 0" in done.stdout and "folded 4 -> 3" in done.stdout
    folded = torch.load(out, weights_only=False)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        want = model.eval()(x)
        torch.testing.assert_close(folded(x), want, rtol=1e-5, atol=1e-5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())


def test_fold_torchscript_end_to_end(tmp_path, torch):
    """A TorchScript archive: conv->BN and linear->BN fold, a BN after ReLU is reported kept."""
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.BatchNorm2d(4),
                          nn.Flatten(), nn.Linear(4 * 6 * 6, 5), nn.BatchNorm1d(5))
    with torch.no_grad():
        for m in (model[1], model[3], model[6]):
            m.running_mean.normal_()
            m.running_var.uniform_(0.1, 2)
    src, out = tmp_path / "m.pt", tmp_path / "folded.pt"
    torch.jit.save(torch.jit.script(model.eval()), str(src))
    source_bytes = src.read_bytes()

    done = normlab_cli("fold", str(src), "-o", str(out), "--input-shape", "2,3,8,8",
                       "--trust-model")   # TorchScript is a program: only with the flag

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert sum(ln.startswith("folded batch_norm") for ln in lines) == 2, done.stdout
    assert sum(ln.startswith("not folded batch_norm") for ln in lines) == 1, done.stdout
    assert src.read_bytes() == source_bytes
    folded = torch.jit.load(str(out))
    kinds = [n.kind() for n in folded.graph.nodes()]
    assert kinds.count("aten::batch_norm") == 1
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)


def test_fold_export_archive_end_to_end(tmp_path, torch):
    """A torch.export archive (.pt2): folded at the ATen level, written back as a .pt2."""
    nn = torch.nn
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3), nn.ReLU(),
                          nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.BatchNorm2d(4), nn.Conv2d(4, 2, 3, padding=1))
    with torch.no_grad():
        for m in (model[0], model[4], model[6]):
            m.running_mean.normal_()
            m.running_var.uniform_(0.1, 2)
    model.eval()
    x = torch.randn(2, 3, 8, 8)
    src, out = tmp_path / "m.pt2", tmp_path / "folded.pt2"
    torch.export.save(torch.export.export(model, (x,)), src)
    source_bytes = src.read_bytes()

    done = normlab_cli("fold", str(src), "-o", str(out), "--input-shape", "2,3,8,8",
                       "--trust-model")   # torch.export.load can run code from the archive

    assert done.returncode == 0, done.stderr
    assert "folded 0 -> 1 (the following layer)" in done.stdout
    assert "folded 4 -> 3" in done.stdout
    assert "not folded 6:" in done.stdout and "pads with zeros" in done.stdout
    assert "max abs error" in done.stdout
    assert src.read_bytes() == source_bytes
    folded = torch.export.load(out)
    aten = torch.ops.aten
    assert sum(n.target is aten.batch_norm.default for n in folded.graph.nodes) == 1
    with torch.no_grad():
        torch.testing.assert_close(folded.module()(x), model(x), rtol=1e-5, atol=1e-5)


def test_fold_export_archive_wrong_shape_is_one_line_exit_2(tmp_path, torch):
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    src, out = tmp_path / "m.pt2", tmp_path / "o.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(2, 3, 8, 8),)), src)
    result = CliRunner().invoke(app, ["fold", str(src), "-o", str(out), "--input-shape",
                                      "2,3,9,9", "--trust-model"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: --input-shape: expected a shape MODEL accepts")
    assert result.output.strip().count("\n") == 0 and not out.exists()
    (tmp_path / "junk.pt2").write_bytes(b"not a zip")
    result = CliRunner().invoke(app, ["fold", str(tmp_path / "junk.pt2"), "-o", str(out),
                                      "--input-shape", "2,3,8,8", "--trust-model"])
    assert result.exit_code == 2 and "is not a torch.export archive" in result.output


def test_fold_torchscript_refuses_training_mode(torch):
    from normlab.torch.fold import fold_bn_script

    scripted = torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3),
                                                    torch.nn.BatchNorm2d(2)))
    with pytest.raises(ValueError, match="eval-mode model"):
        fold_bn_script(scripted)


def test_bad_input_is_one_line_exit_2_subprocess(tmp_path):
    done = normlab_cli("fold", str(tmp_path / "missing.npz"), "-o", str(tmp_path / "o.npz"),
                       "--input-shape", "1,3,8,8")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and done.stderr.startswith("Error: ")


@pytest.mark.parametrize("case", ["shape", "suffix", "plain state dict", "wrong shape input",
                                  "out suffix", "out dir"])
def test_bad_input_is_one_line_exit_2(tmp_path, case):
    from normlab import nn
    from normlab.fold.archive import build
    from normlab.serialization import save

    src = tmp_path / "m.npz"
    save_model(src, SPEC, build(SPEC))
    out, shape = tmp_path / "o.npz", "1,3,6,6"
    if case == "shape":
        shape = "1,x,3"
    elif case == "suffix":
        src = tmp_path / "m.onnx"
        src.write_text("")
    elif case == "plain state dict":
        save(nn.Sequential(nn.Linear(2, 2)), src)
    elif case == "wrong shape input":
        shape = "1,5,6,6"
    elif case == "out suffix":
        out = tmp_path / "o.pt"
    else:
        out = tmp_path / "nowhere" / "o.npz"
    result = CliRunner().invoke(app, ["fold", str(src), "-o", str(out), "--input-shape", shape])
    assert result.exit_code == 2, result.output
    assert not out.exists()
    assert result.output.strip().count("\n") == 0 and result.output.startswith("Error: ")


# -- a torch state dict + --arch ----------------------------------------------------------------
def randomize_torch_bn(torch, model) -> None:
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) * 2 + 1e-4)
                m.weight.copy_(torch.randn(m.num_features, generator=gen))


def test_fold_state_dict_with_registry_arch(tmp_path, torch):
    from normlab.cli.fold_arch import build_module

    model = build_module("conv-bn-digits")
    randomize_torch_bn(torch, model)
    src, out = tmp_path / "weights.pt", tmp_path / "folded.pt"
    torch.save(model.state_dict(), src)

    done = normlab_cli("fold", str(src), "--arch", "conv-bn-digits", "-o", str(out),
                       "--input-shape", "3,1,8,8")

    assert done.returncode == 0, done.stderr
    bns = [name for name, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 2
    for name in bns:
        assert f"folded {name} -> {int(name) - 1}\n" in done.stdout, done.stdout
    assert "the folded full module" in done.stdout
    folded = torch.load(out, weights_only=False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model.eval()(x), rtol=1e-5, atol=1e-5)


def test_fold_state_dict_with_import_path_arch(tmp_path, torch):
    (tmp_path / "my_arch_for_fold.py").write_text(
        "import torch\n"
        "def build():\n"
        "    nn = torch.nn\n"
        "    return nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3), nn.ReLU(),\n"
        "                         nn.BatchNorm2d(4), nn.Conv2d(4, 2, 3, padding=1))\n")
    nn = torch.nn
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4),
                          nn.Conv2d(4, 2, 3, padding=1))
    randomize_torch_bn(torch, model)
    src, out = tmp_path / "weights.pt", tmp_path / "folded.pt"
    torch.save(model.state_dict(), src)

    done = subprocess.run([sys.executable, "-m", "normlab.cli", "fold", "weights.pt", "--arch",
                           "my_arch_for_fold:build", "-o", "folded.pt", "--input-shape",
                           "2,3,7,7"], capture_output=True, text=True, timeout=120, cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert "folded 0 -> 1 (the following layer)" in done.stdout
    assert "not folded 3:" in done.stdout and "pads with zeros" in done.stdout
    folded = torch.load(out, weights_only=False)
    x = torch.randn(2, 3, 7, 7)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model.eval()(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case, message", [
    ("unknown name", "--arch: expected package.module:callable or one of paper-fig1"),
    ("import failure", "--arch: expected an importable package.module:callable, got "
                       "'no_such_module_for_fold:build' (ModuleNotFoundError"),
    ("not callable", "--arch: expected 'math:pi' to be callable, got float"),
    ("not a module", "--arch: expected builtins:dict() to return a torch.nn.Module, got dict"),
    # conv + BN + conv + BN + Linear: 2 + 5 + 2 + 5 + 2 keys
    ("keys", "MODEL: expected the state dict keys of --arch conv-bn-digits (16 keys), got 1 "
             "missing ['0.weight'] and 1 unexpected ['extra.weight']"),
    ("shapes", "MODEL: expected tensors shaped as --arch paper-fig1-digits builds them, got "),
    ("no arch", "MODEL: expected a state dict with --arch (or, with --trust-model, a full "
                "module or TorchScript), got a state dict without --arch"),
    ("arch with npz", "--arch: expected only with a .pt/.pth torch state dict, got MODEL"),
    ("torchscript", "MODEL: expected a torch state dict file (torch.save(model.state_dict())) "
                    "with --arch, got "),
])
def test_state_dict_bad_input_is_one_line_exit_2(tmp_path, torch, case, message):
    from normlab.cli.fold_arch import build_module

    src, out = tmp_path / "weights.pt", tmp_path / "o.pt"
    arch, shape = ["--arch", "conv-bn-digits"], "1,1,8,8"
    state = build_module("conv-bn-digits").state_dict()
    if case == "unknown name":
        arch = ["--arch", "resnet-9000"]
    elif case == "import failure":
        arch = ["--arch", "no_such_module_for_fold:build"]
    elif case == "not callable":
        arch = ["--arch", "math:pi"]
    elif case == "not a module":
        arch = ["--arch", "builtins:dict"]
    elif case == "keys":
        state["extra.weight"] = state.pop("0.weight")
    elif case == "shapes":
        arch, shape = ["--arch", "paper-fig1-digits"], "2,64"
        wrong = build_module("paper-fig1")  # 784 inputs: same keys, other shapes
        state = wrong.state_dict()
    elif case == "no arch":
        arch = []
    elif case == "torchscript":
        state = None
        torch.jit.save(torch.jit.script(build_module("conv-bn-digits")), str(src))
    else:
        src, out = tmp_path / "m.npz", tmp_path / "o.npz"
        from normlab.fold.archive import build
        save_model(src, SPEC, build(SPEC))
    if src.suffix == ".pt" and state is not None:
        torch.save(state, src)
    result = CliRunner().invoke(app, ["fold", str(src), *arch, "-o", str(out),
                                      "--input-shape", shape])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"Error: {message}"), result.output
    assert result.output.strip().count("\n") == 0 and not out.exists()


def test_help_lists_every_registry_architecture():
    from normlab.cli.fold_arch import ARCHITECTURES

    result = CliRunner().invoke(app, ["fold", "--help"], terminal_width=200)
    text = " ".join(result.output.split())
    for name in ARCHITECTURES:
        assert name in text, name
    assert "package.module:callable" in text and ".pt2" in text


# -- no code runs from MODEL without --trust-model ------------------------------------------
class WritesMarker:
    """Unpickling this calls os.system: what a malicious model file does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os
        import shlex
        return os.system, (f"touch {shlex.quote(self.marker)}",)


def rewritten_zip(blob: bytes, suffix: str, change) -> bytes:
    """``blob`` (a zip) with the member whose name ends in ``suffix`` replaced by
    ``change(its bytes)``."""
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(blob)) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            zout.writestr(info, change(data) if info.filename.endswith(suffix) else data)
    return out.getvalue()


def doctored_torch_zip(torch, path, marker) -> None:
    """A torch.save zip whose data.pkl is replaced by a pickle that creates ``marker``."""
    import io
    import pickle

    buf = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buf)
    path.write_bytes(rewritten_zip(buf.getvalue(), "/data.pkl",
                                   lambda _: pickle.dumps(WritesMarker(marker), protocol=2)))


def doctored_export_archive(torch, path, marker) -> None:
    """A torch.export archive with one tensor size replaced by a Python expression that creates
    ``marker``: torch.export.load parses sizes with sympy.sympify, which evaluates it."""
    import io
    import json

    def doctor(data: bytes) -> bytes:
        program = json.loads(data)
        sizes = next(iter(program["graph_module"]["graph"]["tensor_values"].values()))
        sizes["sizes"][0] = {"as_expr": {"expr_str": f"__import__('os').system('touch {marker}')",
                                         "hint": {"as_int": 1}}}
        return json.dumps(program).encode()

    model = torch.nn.Sequential(torch.nn.Linear(3, 2)).eval()
    buf = io.BytesIO()
    torch.export.save(torch.export.export(model, (torch.randn(2, 3),)), buf)
    path.write_bytes(rewritten_zip(buf.getvalue(), "models/model.json", doctor))


@pytest.mark.parametrize("kind", ["legacy pickle", "torch.save zip", "torch.export archive",
                                  "TorchScript", "pickled module"])
def test_model_file_code_never_runs_without_trust_model(tmp_path, torch, kind):
    """Each file below is refused with one line and exit code 2 before any loader that can run
    code sees it; for the doctored ones, the marker their code would create does not exist."""
    import pickle

    marker = tmp_path / "code-ran"
    src, out = tmp_path / "m.pt", tmp_path / "o.pt"
    if kind == "legacy pickle":   # a raw pickle of ~60 bytes: torch.load's legacy format
        src.write_bytes(pickle.dumps(WritesMarker(marker), protocol=2))
    elif kind == "torch.save zip":
        doctored_torch_zip(torch, src, marker)
    elif kind == "torch.export archive":
        src, out = tmp_path / "m.pt2", tmp_path / "o.pt2"
        doctored_export_archive(torch, src, marker)
    elif kind == "TorchScript":
        torch.jit.save(torch.jit.script(torch.nn.Linear(3, 2)), str(src))
    else:
        torch.save(torch.nn.Linear(3, 2), src)
    before = src.read_bytes()

    result = CliRunner().invoke(app, ["fold", str(src), "-o", str(out), "--input-shape", "2,3"])

    assert not marker.exists(), "code from the model file ran"
    assert result.exit_code == 2, result.output
    assert result.output.strip().count("\n") == 0 and result.output.startswith("Error: MODEL:")
    assert "--trust-model" in result.output and "run code" in result.output
    assert src.read_bytes() == before and not out.exists()
    if kind in ("legacy pickle", "torch.save zip"):   # names what the pickle would have called
        assert "posix.system" in result.output


def test_legacy_pickle_refusal_subprocess(tmp_path):
    """As a user runs it: stderr holds exactly one line, no traceback, no code ran."""
    import pickle

    marker = tmp_path / "code-ran"
    src = tmp_path / "m.pt"
    src.write_bytes(pickle.dumps(WritesMarker(marker), protocol=2))
    done = normlab_cli("fold", str(src), "-o", str(tmp_path / "o.pt"), "--input-shape", "2,3")
    assert not marker.exists()
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_fold_without_torch_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)   # import torch -> ImportError
    src = tmp_path / "m.pt"
    src.write_bytes(b"PK")
    for extra in ([], ["--arch", "conv-bn"], ["--trust-model"]):
        result = CliRunner().invoke(app, ["fold", str(src), "-o", str(tmp_path / "o.pt"),
                                          "--input-shape", "1,1,8,8", *extra])
        assert result.exit_code == 2, result.output
        assert result.output == "Error: MODEL: a .pt file needs torch: pip install " \
                                "'normlab[torch]'\n"


@pytest.mark.parametrize("link", ["same path", "symlink", "hard link"])
def test_out_that_is_the_input_is_refused(tmp_path, link):
    from normlab.fold.archive import build

    src = tmp_path / "m.npz"
    save_model(src, SPEC, build(SPEC))
    out = src
    if link == "symlink":
        out = tmp_path / "link.npz"
        out.symlink_to(src)
    elif link == "hard link":
        out = tmp_path / "hard.npz"
        out.hardlink_to(src)
    before = src.read_bytes()
    result = CliRunner().invoke(app, ["fold", str(src), "-o", str(out), "--input-shape",
                                      "1,3,6,6"])
    assert result.exit_code == 2 and "--out: expected a file other than MODEL" in result.output
    assert src.read_bytes() == before


def test_wrong_input_shape_names_the_argument(tmp_path, torch):
    """A torch model that refuses the verification input: one line naming --input-shape (it
    was torch's multi-line RuntimeError, not naming any argument)."""
    src, out = tmp_path / "m.pt", tmp_path / "o.pt"
    torch.save(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2)), src)
    result = CliRunner().invoke(app, ["fold", str(src), "-o", str(out), "--input-shape", "2,5",
                                      "--trust-model"])
    assert result.exit_code == 2 and not out.exists()
    assert result.output.startswith("Error: --input-shape: expected a shape MODEL accepts, got "
                                    "2x5: RuntimeError: mat1 and mat2 shapes cannot be "
                                    "multiplied"), result.output


# -- the declared architecture is checked before anything is built -----------------------------
@pytest.mark.parametrize("entry", [
    {"type": "Linear", "args": [3, 4]},
    {"type": "Linear", "args": [3, 4], "kwargs": {"bias": False}},
    {"type": "Conv2d", "args": [4, 6, 3], "kwargs": {"groups": 2}},
    {"type": "Conv2d", "args": [2, 3, [1, 2]], "kwargs": {"bias": False}},
    {"type": "BatchNorm1d", "args": [5]},
    {"type": "BatchNorm2d", "args": [5], "kwargs": {"affine": False}},
    {"type": "BatchNorm3d", "args": [5], "kwargs": {"track_running_stats": False}},
    {"type": "InstanceNorm2d", "args": [5]},
    {"type": "InstanceNorm1d", "args": [5], "kwargs": {"affine": True,
                                                       "track_running_stats": True}},
    {"type": "InstanceNorm3d", "args": [2]},
    {"type": "BatchRenorm1d", "args": [5]},
    {"type": "BatchRenorm2d", "args": [5], "kwargs": {"affine": False}},
    {"type": "LayerNorm", "args": [[3, 4]]},
    {"type": "LayerNorm", "args": [4], "kwargs": {"bias": False}},
    {"type": "LayerNorm", "args": [4], "kwargs": {"elementwise_affine": False}},
    {"type": "GroupNorm", "args": [2, 4]},
    {"type": "GroupNorm", "args": [2, 4], "kwargs": {"affine": False}},
    {"type": "LSTM", "args": [3, 5]},
    {"type": "LSTM", "args": [3, 5], "kwargs": {"norm": "recurrent_batch"}},
    {"type": "Affine", "args": [3]},
    {"type": "MaxPool2d", "args": [2]}, {"type": "AvgPool2d", "args": [2]},
    {"type": "Dropout"}, {"type": "Flatten"}, {"type": "ReLU"}, {"type": "Sigmoid"},
    {"type": "Tanh"}, {"type": "CrossEntropyLoss"}, {"type": "MSELoss"},
], ids=lambda e: f"{e['type']}{e.get('args', '')}{e.get('kwargs', '')}")
def test_declared_shapes_are_what_building_allocates(entry):
    """The shapes derived from a layer's arguments without building it are exactly its state
    dict's (LSTM: its four weight matrices; the norms' O(hidden) vectors come on top)."""
    from normlab.fold.archive import build, declared_shapes

    spec = {"format": "normlab.sequential/1", "dtype": "float32", "layers": [entry]}
    built = {k.split(".", 1)[1]: v.shape for k, v in build(spec).state_dict().items()}
    _, [(_, declared)] = declared_shapes(spec)
    if entry["type"] == "LSTM":
        assert declared.items() <= built.items() and len(declared) == 4
    else:
        assert declared == built


def test_every_layer_type_has_a_shape_rule():
    """A layer type added to normlab.nn must get a rule in normlab.fold.declared, or fold
    refuses it, rather than build it unchecked."""
    from normlab.fold.archive import _layer_types
    from normlab.fold.declared import NO_PARAMETERS, SHAPES

    assert set(_layer_types()) == set(SHAPES) | set(NO_PARAMETERS)


def test_paths_with_markup_are_printed_verbatim(tmp_path):
    """fold's messages print user text as given: '[/x]' in a path is no rich closing tag."""
    from normlab.fold.archive import build

    (tmp_path / "[").mkdir()
    src, out = tmp_path / "[" / "x].npz", tmp_path / "[" / "y][b].npz"
    save_model(src, SPEC, build(SPEC))
    result = CliRunner().invoke(app, ["fold", str(src), "-o", str(out), "--input-shape",
                                      "1,3,6,6"])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}\n" in result.output and out.is_file()


def test_memory_error_in_the_verification_forward_is_one_line(tmp_path, monkeypatch):
    """A model whose forward runs out of memory on the verification input (simulated)."""
    from normlab import nn
    from normlab.fold.archive import build

    src, out = tmp_path / "m.npz", tmp_path / "o.npz"
    save_model(src, SPEC, build(SPEC))

    def no_memory(self, x):
        raise MemoryError
    monkeypatch.setattr(nn.Conv2d, "forward", no_memory)
    result = CliRunner().invoke(app, ["fold", str(src), "-o", str(out), "--input-shape",
                                      "2,3,6,6"])
    assert result.exit_code == 2 and not out.exists()
    assert result.output == "Error: --input-shape: expected a batch this machine has memory " \
                            "for, got 2x3x6x6 (MemoryError in the model's forward)\n"


def test_torchscript_with_arch_is_one_stderr_line(tmp_path, torch):
    """torch.load warns on stderr when handed TorchScript; fold's error must stay one line."""
    src = tmp_path / "m.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(3, 2)), str(src))
    done = normlab_cli("fold", str(src), "--arch", "conv-bn", "-o", str(tmp_path / "o.pt"),
                       "--input-shape", "1,1,28,28")
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("Error: MODEL: expected a torch state dict file")
