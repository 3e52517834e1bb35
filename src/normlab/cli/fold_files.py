"""The torch files ``normlab fold`` reads, and which loaders may run code stored in them.

By default fold uses only loaders that cannot run code from the file: ``torch.load`` with
``weights_only=True`` (PyTorch's restricted unpickler: tensors, containers and numbers; any
other global is refused), for a state dict with ``--arch``; a normlab .npz is read without
pickles anyway (:func:`normlab.serialization.read_state_dict`).

``--trust-model`` (``trust=True``) adds the loaders that can run code from the file:

* ``torch.load(weights_only=False)`` for a pickled full module: unpickling calls whatever the
  file names, ``os.system`` included (a 52-byte pickle is enough);
* ``torch.jit.load`` for TorchScript: a TorchScript archive is a program, and PyTorch's
  SECURITY.md says to treat it "the same way as locally executable code from an unknown
  source";
* ``torch.export.load`` for .pt2: it falls back to full unpickling for weights, constants and
  sample inputs it cannot read weights-only, and it parses the symbolic shapes in the archive
  with ``sympy.sympify``, which evaluates Python: one doctored size in ``model.json`` ran a
  shell command when the archive was loaded (torch 2.13).
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

from .torch_load import load_weights_only

TRUST_HINT = ("pass --trust-model only if you trust the file (loading it can run code stored "
              "in it), or save the model's state_dict() and pass --arch")


def import_torch(what: str):
    """torch, or a ValueError saying how to install it (fold's one-line error)."""
    try:
        import torch
    except ImportError as exc:
        raise ValueError(f"MODEL: {what} needs torch: pip install 'normlab[torch]'") from exc
    return torch


def require_file(src: Path) -> None:
    if not src.is_file():
        raise ValueError(f"MODEL: expected an existing file, got {str(src)!r}")


def first_line(exc: BaseException) -> str:
    """``Type: message`` in one line, for fold's one-line errors. TorchScript puts its own
    preamble first and the actual error last."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if lines and lines[0].startswith("The following operation failed in the TorchScript"):
        lines = lines[-1:]
    kind = type(exc).__name__
    line = lines[0] if lines else ""
    return line if line.startswith(f"{kind}: ") else f"{kind}: {line}"


def _is_torchscript(src: Path) -> bool:
    """torch's own test (``constants.pkl`` in the archive), read without loading anything."""
    try:
        with zipfile.ZipFile(src) as zf:
            return any(name.endswith("/constants.pkl") for name in zf.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def _refused_globals(exc: Exception) -> str:
    """The globals a weights-only load refused, as torch names them in its message."""
    names = sorted(set(re.findall(r"GLOBAL ([\w.]+)", str(exc))))
    return ", ".join(names) or "objects other than tensors"


def _load_safe(torch, src: Path):
    if _is_torchscript(src):
        raise ValueError(f"MODEL: {str(src)!r} is a TorchScript archive, and loading one runs "
                         f"the code stored in it; {TRUST_HINT}")
    try:
        obj = load_weights_only(torch, src)
    except pickle.UnpicklingError as exc:
        raise ValueError(f"MODEL: {str(src)!r} holds a pickle naming {_refused_globals(exc)}; "
                         f"only full unpickling loads that, and it runs code the file names; "
                         f"{TRUST_HINT}") from exc
    except Exception as exc:  # any other load failure (not a torch file, truncated) is bad input
        raise ValueError(f"MODEL: {str(src)!r} is not a loadable torch file: "
                         f"{first_line(exc)}") from exc
    return obj


def _load_trusted(torch, src: Path):
    try:  # a TorchScript archive (torch.jit.save) first, then a pickled module (torch.save)
        return torch.jit.load(src, map_location="cpu")
    except Exception:
        try:
            return torch.load(src, weights_only=False, map_location="cpu")
        except Exception as exc:  # any unpickling failure is bad input here
            raise ValueError(f"MODEL: {str(src)!r} is not a loadable torch file: "
                             f"{first_line(exc)}") from exc


def load_pt(src: Path, arch: str | None, trust: bool):
    """The torch module in ``src``: a state dict + ``arch``, or (``trust``) TorchScript or a
    pickled full module."""
    torch = import_torch("a .pt file")
    require_file(src)
    if arch is not None:
        from .fold_arch import load_with_arch

        return load_with_arch(src, arch)
    model = (_load_trusted if trust else _load_safe)(torch, src)
    if isinstance(model, dict):
        raise ValueError("MODEL: expected a state dict with --arch (or, with --trust-model, a "
                         "full module or TorchScript), got a state dict without --arch: pass "
                         "--arch package.module:callable or a normlab architecture name to say "
                         "which layers it belongs to")
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"MODEL: expected a TorchScript module (torch.jit.save) or a pickled "
                         f"full module (torch.save(model)), got {type(model).__name__}")
    return model


def load_pt2(src: Path, trust: bool):
    """The ExportedProgram in ``src``; only with ``trust`` (see the module docstring)."""
    torch = import_torch("a .pt2 file")
    require_file(src)
    if not trust:
        raise ValueError(f"MODEL: {str(src)!r} is a torch.export archive, and "
                         f"torch.export.load can run code stored in it; {TRUST_HINT}")
    try:
        return torch.export.load(src)
    except Exception as exc:  # any load failure (not a zip, wrong version) is bad input here
        raise ValueError(f"MODEL: {str(src)!r} is not a torch.export archive (torch.export.save):"
                         f" {first_line(exc)}") from exc
