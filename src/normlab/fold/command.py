"""``normlab fold MODEL -o OUT --input-shape N,C,H,W``: fold BN away in a saved model, verify.

MODEL is an .npz written by :func:`normlab.fold.archive.save_model` (NumPy engine: state dict +
architecture spec), a .pt holding a pickled full torch module (``torch.save(model)``; unpickling
runs code, so only fold files you trust) or a TorchScript archive, a .pt/.pth STATE DICT with
``--arch`` naming its architecture (see :mod:`normlab.fold.arch`; OUT is then the folded FULL
module, ``torch.save(model)``, since the folded model has no BN layers), or a .pt2 written by
``torch.export.save`` (folded at the ATen level, re-exported with the verification input as
example input, so with static shapes). The model is put in eval mode, folded, written atomically
to OUT (same format), and both versions are run on one random normal input of the given shape;
the max abs error is printed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from .._io import atomic_file
from .archive import folded_spec, load_model, save_model
from .engine import fold_bn
from .report import FoldReport


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(p) for p in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise ValueError(f"--input-shape: expected positive integers separated by commas such "
                         f"as 1,3,32,32, got {text!r}")
    return shape


def _fold_npz(src: Path, out: Path, shape: tuple[int, ...], seed: int
              ) -> tuple[FoldReport, float, float]:
    spec, model = load_model(src)
    model.eval()
    folded, report = fold_bn(model)
    dtype = np.dtype(spec.get("dtype", "float32"))
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    want, got = model(x), folded(x)
    save_model(out, folded_spec(spec, folded, report), folded)
    return report, float(np.abs(got - want).max()), float(np.abs(want).max())


def _import_torch(what: str):
    try:
        import torch
    except ImportError as exc:
        raise ValueError(f"MODEL: {what} needs torch: pip install 'normlab[torch]'") from exc
    return torch


def _load_pt(src: Path, arch: str | None):
    """The torch module in ``src``: TorchScript, a pickled module, or a state dict + --arch."""
    torch = _import_torch("a .pt file")
    if not src.is_file():
        raise ValueError(f"MODEL: expected an existing file, got {str(src)!r}")
    if arch is not None:
        from .arch import load_with_arch

        return load_with_arch(src, arch)
    try:  # a TorchScript archive (torch.jit.save) first, then a pickled module (torch.save)
        model = torch.jit.load(src, map_location="cpu")
    except Exception:
        try:
            model = torch.load(src, weights_only=False, map_location="cpu")
        except Exception as exc:  # any unpickling failure is bad input here
            raise ValueError(f"MODEL: {str(src)!r} is not a loadable torch file: "
                             f"{type(exc).__name__}: {exc}") from exc
    if isinstance(model, dict):
        raise ValueError("MODEL: expected a full module (torch.save(model)) or TorchScript, got "
                         "a state dict without --arch: pass --arch package.module:callable or "
                         "a normlab architecture name to say which layers it belongs to")
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"MODEL: expected a TorchScript module (torch.jit.save) or a pickled "
                         f"full module (torch.save(model)), got {type(model).__name__}")
    return model


def _fold_pt(src: Path, out: Path, shape: tuple[int, ...], seed: int, arch: str | None = None
             ) -> tuple[FoldReport, float, float]:
    """Fold a torch module; OUT is a pickled full module (also for a state dict + --arch: the
    folded model has no BN layers, so the original architecture no longer fits its weights)."""
    import torch

    from ..torch.fold import fold_bn as torch_fold_bn
    from ..torch.fold import fold_bn_script

    model = _load_pt(src, arch)
    model.eval()
    scripted = isinstance(model, torch.jit.ScriptModule)
    folded, report = (fold_bn_script if scripted else torch_fold_bn)(model)
    p = next(model.parameters(), None)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float32 if p is None else p.dtype)
    with torch.no_grad():
        want, got = model(x), folded(x)
    with atomic_file(out) as f:
        (torch.jit.save if scripted else torch.save)(folded, f)
    return report, (got - want).abs().max().item(), want.abs().max().item()


def _fold_pt2(src: Path, out: Path, shape: tuple[int, ...], seed: int
              ) -> tuple[FoldReport, float, float]:
    torch = _import_torch("a .pt2 file")
    from ..torch.fold_export import fold_bn_export

    if not src.is_file():
        raise ValueError(f"MODEL: expected an existing file, got {str(src)!r}")
    try:
        program = torch.export.load(src)
    except Exception as exc:  # any load failure (not a zip, wrong version) is bad input here
        raise ValueError(f"MODEL: {str(src)!r} is not a torch.export archive (torch.export.save):"
                         f" {type(exc).__name__}: {exc}") from exc
    p = next(iter(program.state_dict.values()), None)
    gen = torch.Generator().manual_seed(seed)
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    x = torch.randn(shape, generator=gen, dtype=dtype)
    try:
        with torch.no_grad():
            want = program.module()(x)
    except Exception as exc:  # the program's guards reject other shapes than it was exported with
        raise ValueError(f"--input-shape: expected a shape the exported program accepts, got "
                         f"{shape}: {type(exc).__name__}: {str(exc).strip()}") from exc
    folded, report = fold_bn_export(program, (x,))
    with torch.no_grad():
        got = folded.module()(x)
    with atomic_file(out) as f:
        torch.export.save(folded, f)
    return report, (got - want).abs().max().item(), want.abs().max().item()


def run(model: Path, out: Path, input_shape: str, seed: int = 0, arch: str | None = None
        ) -> None:
    """The command's body: bad input -> one line on stderr and exit code 2."""
    try:
        shape = parse_shape(input_shape)
        suffix = model.suffix.lower()
        if suffix not in (".npz", ".pt", ".pth", ".pt2"):
            raise ValueError(f"MODEL: expected a .npz (normlab), .pt/.pth (torch) or .pt2 "
                             f"(torch.export) file, got {str(model)!r}")
        if out.suffix.lower() != suffix:
            raise ValueError(f"--out: expected a {suffix} file like MODEL, got {str(out)!r}")
        if not out.parent.is_dir():
            raise ValueError(f"--out: expected a file in an existing directory, got {str(out)!r}")
        if arch is not None and suffix not in (".pt", ".pth"):
            raise ValueError(f"--arch: expected only with a .pt/.pth torch state dict, got "
                             f"MODEL {str(model)!r}")
        if arch is not None:
            report, err, ref = _fold_pt(model, out, shape, seed, arch)
        else:
            fold = {".npz": _fold_npz, ".pt2": _fold_pt2}.get(suffix, _fold_pt)
            report, err, ref = fold(model, out, shape, seed)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as exc:
        typer.echo(f"Error: {exc}".splitlines()[0], err=True)
        raise typer.Exit(2) from None
    for line in report.lines() or ["no BatchNorm layers found"]:
        typer.echo(line)
    what = " (the folded full module, torch.save(model))" if arch is not None else ""
    typer.echo(f"wrote {out}{what}")
    typer.echo(f"verification on a random {'x'.join(map(str, shape))} input: max abs error "
               f"{err:.3g} (max |output| {ref:.3g}, relative {err / max(ref, 1e-30):.3g})")
