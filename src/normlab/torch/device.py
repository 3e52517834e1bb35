"""Where a torch run computes, and the settings that make it repeatable there.

:func:`resolve_device` turns ``--device cpu|cuda|auto`` into a ``torch.device``; asking for CUDA
without a usable GPU is an error (one line naming ``--device``), never a silent CPU run.
:func:`deterministic` fixes the process-wide settings that decide whether two runs with the same
seeds give the same numbers (PyTorch, "Reproducibility" notes) and returns them as a dict the
report prints:

* cuDNN picks deterministic algorithms and does not benchmark (autotuning may pick a different
  algorithm, with a different summation order, in each run);
* TF32 is off for matmuls and cuDNN convolutions: TF32 keeps 10 mantissa bits, and the claims
  compare accuracy differences of a few tenths of a point, which must not depend on the GPU's
  arithmetic;
* ``torch.use_deterministic_algorithms(True)``, strict by default (``warn_only=False``): an
  operation without a deterministic CUDA kernel raises instead of quietly making "same seeds,
  same result" false. The experiments' layers (Linear, Conv2d, BN, ReLU, MaxPool2d,
  cross-entropy on (N, C) logits) all have one; ``warn_only=True`` turns the error into a
  warning for other models;
* ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (unless already set), which deterministic cuBLAS needs on
  CUDA >= 10.2; it is read when the first cuBLAS handle is made, so call :func:`deterministic`
  before the first CUDA matmul of the process.

The settings are per process: every process that computes (each DDP worker too) calls it.
"""

from __future__ import annotations

import os

import torch

DEVICES = ("cpu", "cuda", "auto")
CUBLAS_WORKSPACE = ":4096:8"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"cpu"``, ``"cuda"`` (refused without a usable GPU) or ``"auto"`` (CUDA when present).

    A ``torch.device`` passes through, a CUDA one checked like ``"cuda"``.
    """
    if isinstance(device, torch.device):
        kind = device.type
    elif isinstance(device, str):
        kind = device
    else:
        raise TypeError(f"--device: expected one of {DEVICES} or a torch.device, "
                        f"got {type(device).__name__}")
    if kind not in DEVICES:
        raise ValueError(f"--device: expected one of {DEVICES}, got {device!r}")
    usable = torch.cuda.is_available()
    if kind == "cuda" and not usable:
        build = torch.version.cuda or "none (a CPU-only build)"
        raise ValueError(f"--device: expected 'cpu' or 'auto' here, got {str(device)!r}: no "
                         f"usable CUDA GPU (torch.cuda.is_available() is False; torch "
                         f"{torch.__version__}, CUDA {build})")
    if isinstance(device, torch.device):
        return device
    if kind == "auto":
        kind = "cuda" if usable else "cpu"
    return torch.device(kind)


def deterministic(device: torch.device | str, warn_only: bool = False) -> dict:
    """Apply the repeatability settings (module docstring) in this process; return them."""
    device = torch.device(device)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    # the legacy flags: setting both keeps the conv and RNN precisions equal, which torch 2.13
    # needs before it lets allow_tf32 be read back
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.use_deterministic_algorithms(True, warn_only=warn_only)
    return settings(device)


def settings(device: torch.device | str) -> dict:
    """The settings :func:`deterministic` controls, as they are now in this process."""
    device = torch.device(device)
    out = {
        "device": str(device),
        "torch": torch.__version__,
        "cudnn.deterministic": torch.backends.cudnn.deterministic,
        "cudnn.benchmark": torch.backends.cudnn.benchmark,
        "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
        out["cuda"] = torch.version.cuda
        out["cudnn"] = torch.backends.cudnn.version()
    return out
