"""``normlab fold MODEL -o OUT --input-shape N,C,H,W``: fold BN away in a saved model, verify.

MODEL is an .npz written by :func:`normlab.fold.archive.save_model` (NumPy engine: state dict +
architecture spec, no pickles), a .pt/.pth STATE DICT with ``--arch`` naming its architecture
(read with ``torch.load(weights_only=True)``; see :mod:`normlab.cli.fold_arch`; OUT is then the
folded FULL module, ``torch.save(model)``, since the folded model has no BN layers), and, only
with ``--trust-model`` because loading them can run code stored in the file (see
:mod:`normlab.cli.fold_files`), a .pt holding a pickled full torch module
(``torch.save(model)``) or a TorchScript archive, or a .pt2 written by ``torch.export.save``
(folded at the ATen level, re-exported with the verification input as example input, so with
static shapes). The model is put in eval mode, folded, written atomically to OUT (same format,
never MODEL itself), and both versions are run on one random normal input of the given shape;
the max abs error is printed, and for a float32 (or lower precision) model how far float32
rounding alone moves the output on that input (the unfolded model run in float64): a fold error
near that floor is rounding, one far above it a wrong fold.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import typer

from .._escape import one_line
from .._io import UnsafePath, atomic_file, check_target
from ..fold.archive import build, folded_spec, load_model, save_model
from ..fold.engine import fold_bn
from ..fold.report import FoldReport
from .environment import check_environment
from .fold_files import first_line, import_torch, load_pt, load_pt2, require_file

# The verification input is one batch, not a dataset: 2**27 values (512 MB of float32) is far
# more than any model here needs, and refusing it up front beats a MemoryError mid-fold.
MAX_INPUT_VALUES = 1 << 27


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(p) for p in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise ValueError(f"--input-shape: expected positive integers separated by commas such "
                         f"as 1,3,32,32, got {text!r}")
    if np.prod(shape, dtype=object) > MAX_INPUT_VALUES:
        raise ValueError(f"--input-shape: expected at most {MAX_INPUT_VALUES} values (one "
                         f"verification batch), got {'x'.join(map(str, shape))}")
    return shape


def _verify(forward: Callable[[], object], shape: tuple[int, ...]):
    """``forward()`` of the UNFOLDED model: if it refuses the input, --input-shape is wrong."""
    size = "x".join(map(str, shape))
    try:
        return forward()
    except MemoryError as exc:
        raise ValueError(f"--input-shape: expected a batch this machine has memory for, got "
                         f"{size} (MemoryError in the model's forward)") from exc
    except Exception as exc:  # each engine and layer raises its own type for a wrong shape
        raise ValueError(f"--input-shape: expected a shape MODEL accepts, got {size}: "
                         f"{first_line(exc)}") from exc


def _finite(err: float, ref: float) -> None:
    """Refuse a model whose verification output is not finite (NaN/inf weights): "max abs
    error nan" would verify nothing."""
    if not (np.isfinite(err) and np.isfinite(ref)):
        raise ValueError(f"MODEL: expected weights that give a finite output, got NaN/inf in "
                         f"its output on the verification input (max |output| {ref:.3g}, max "
                         f"abs error {err:.3g}); nothing was written")


def _written(out: Path, write: Callable[[], object]) -> None:
    """``write()`` OUT (atomically): a failed write (disk full, no permission) leaves OUT as it
    was and is a one-line error, not a traceback."""
    try:
        write()
    except UnsafePath:
        raise
    except OSError as exc:
        raise ValueError(f"--out: could not write {str(out)!r}: "
                         f"{exc.strerror or first_line(exc)}") from exc


def _save_atomic(out: Path, save: Callable, obj) -> None:
    with atomic_file(out, "--out") as f:
        save(obj, f)


Floor = tuple[float | None, str]   # (float32 rounding floor, why there is none)
Checked = tuple[FoldReport, float, float, Floor]


def _npz_floor(spec: dict, model, x: np.ndarray, want: np.ndarray) -> Floor:
    """The unfolded NumPy model rebuilt in float64 with the same weights, on the same input."""
    if x.dtype == np.float64:
        return None, "the model is float64"
    wide = build({**spec, "dtype": "float64"})
    wide.load_state_dict({k: np.asarray(v, np.float64) for k, v in model.state_dict().items()})
    wide.eval()
    return float(np.abs(wide(x.astype(np.float64)) - want).max()), ""


def _fold_npz(src: Path, out: Path, shape: tuple[int, ...], seed: int, arch=None,
              trust: bool = False) -> Checked:
    require_file(src)
    spec, model = load_model(src, input_shape=shape)
    model.eval()
    folded, report = fold_bn(model)
    dtype = np.dtype(spec.get("dtype", "float32"))
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    want = _verify(lambda: model(x), shape)
    got = folded(x)
    err, ref = float(np.abs(got - want).max()), float(np.abs(want).max())
    _finite(err, ref)
    _written(out, lambda: save_model(out, folded_spec(spec, folded, report), folded))
    return report, err, ref, _npz_floor(spec, model, x, want)


def _fold_pt(src: Path, out: Path, shape: tuple[int, ...], seed: int, arch: str | None = None,
             trust: bool = False) -> Checked:
    """Fold a torch module; OUT is a pickled full module (also for a state dict + --arch: the
    folded model has no BN layers, so the original architecture no longer fits its weights)."""
    torch = import_torch("a .pt file")
    from ..torch.fold import fold_bn as torch_fold_bn
    from ..torch.fold import fold_bn_script
    from ..torch.rounding import rounding_floor

    model = load_pt(src, arch, trust)
    model.eval()
    scripted = isinstance(model, torch.jit.ScriptModule)
    folded, report = (fold_bn_script if scripted else torch_fold_bn)(model)
    p = next(model.parameters(), None)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float32 if p is None else p.dtype)
    with torch.no_grad():
        want = _verify(lambda: model(x), shape)
        got = folded(x)
    err, ref = (got - want).abs().max().item(), want.abs().max().item()
    _finite(err, ref)
    save = torch.jit.save if scripted else torch.save
    _written(out, lambda: _save_atomic(out, save, folded))
    return report, err, ref, rounding_floor(model, x, want)


def _fold_pt2(src: Path, out: Path, shape: tuple[int, ...], seed: int, arch=None,
              trust: bool = False) -> Checked:
    torch = import_torch("a .pt2 file")
    from ..torch.fold_export import fold_bn_export
    from ..torch.rounding import rounding_floor

    program = load_pt2(src, trust)
    p = next(iter(program.state_dict.values()), None)
    gen = torch.Generator().manual_seed(seed)
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    x = torch.randn(shape, generator=gen, dtype=dtype)
    with torch.no_grad():   # the program's guards reject other shapes than it was exported with
        want = _verify(lambda: program.module()(x), shape)
    folded, report = fold_bn_export(program, (x,))
    with torch.no_grad():
        got = folded.module()(x)
    err, ref = (got - want).abs().max().item(), want.abs().max().item()
    _finite(err, ref)
    _written(out, lambda: _save_atomic(out, torch.export.save, folded))
    return report, err, ref, rounding_floor(program.module(), x, want)


def _check_paths(model: Path, out: Path, arch: str | None) -> str:
    """MODEL's suffix, after checking MODEL, --out and --arch fit together."""
    suffix = model.suffix.lower()
    if suffix not in (".npz", ".pt", ".pth", ".pt2"):
        raise ValueError(f"MODEL: expected a .npz (normlab), .pt/.pth (torch) or .pt2 "
                         f"(torch.export) file, got {str(model)!r}")
    if out.suffix.lower() != suffix:
        raise ValueError(f"--out: expected a {suffix} file like MODEL, got {str(out)!r}")
    if not out.parent.is_dir() or out.is_dir():
        raise ValueError(f"--out: expected a file in an existing directory, got {str(out)!r}")
    # not MODEL (however linked), no link, device or FIFO
    check_target(out, "--out", protect=[(model, "MODEL")])
    if arch is not None and suffix not in (".pt", ".pth"):
        raise ValueError(f"--arch: expected only with a .pt/.pth torch state dict, got "
                         f"MODEL {str(model)!r}")
    return suffix


def _error_line(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return "Error: out of memory while folding (MemoryError)"
    return one_line(f"Error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")


def run(model: Path, out: Path, input_shape: str, seed: int = 0, arch: str | None = None,
        trust: bool = False) -> None:
    """The command's body: bad input -> one line on stderr and exit code 2."""
    try:
        check_environment()
        shape = parse_shape(input_shape)
        suffix = _check_paths(model, out, arch)
        fold = {".npz": _fold_npz, ".pt2": _fold_pt2}.get(suffix, _fold_pt)
        report, err, ref, (floor, no_floor) = fold(model, out, shape, seed, arch, trust)
    except (ValueError, TypeError, OSError, RuntimeError, MemoryError, pickle.PickleError) as exc:
        typer.echo(_error_line(exc), err=True)
        raise typer.Exit(2) from None
    for line in report.lines() or ["no BatchNorm layers found"]:
        typer.echo(one_line(line))   # layer and member names come from MODEL
    what = " (the folded full module, torch.save(model))" if arch is not None else ""
    typer.echo(one_line(f"wrote {out}{what}"))
    typer.echo(f"verification on a random {'x'.join(map(str, shape))} input: max abs error "
               f"{err:.3g} (max |output| {ref:.3g}, relative {err / max(ref, 1e-30):.3g})")
    typer.echo(f"float32 rounding alone (the unfolded model in float64 on the same input): "
               f"max abs {floor:.3g}" if floor is not None else
               f"float32 rounding floor: not measured, {no_floor}")
