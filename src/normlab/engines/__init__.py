"""The experiments' engines: one model spec (:mod:`.spec`), built and trained in normlab.nn
(:mod:`.numpy`) or torch.nn (:mod:`.torch`, imported only when asked for).

:func:`make_trainer` (spec models) and :func:`make_lstm_trainer` (rnn-norm's LSTM classifier,
:mod:`.numpy_lstm` / :mod:`.torch_lstm`) are the places an engine is chosen by name. Both engines
draw the initial weights the same way (the NumPy builder draws them; the torch twin copies
them), so every claim can be cross-checked.
"""

from __future__ import annotations

import numpy as np

from .numpy import build_numpy, he_scale
from .numpy_lstm import NumpyLstmTrainer, build_lstm
from .spec import Spec

ENGINES = ("numpy", "torch")


def make_trainer(engine: str, spec: Spec, init_std: float | str, rng: np.random.Generator,
                 lr: float, device=None, workers: int = 1, sync_bn: bool = False,
                 distributed: bool = True):
    """A trainer of ``spec`` on ``engine`` ("numpy" or "torch").

    ``init_std``: the std of the Linear weights, or "he" for N(0, 2/fan_in) (He et al. 2015).
    torch only: ``device``, ``workers``, ``sync_bn`` and ``distributed`` (see
    :func:`.torch.trainer`); the NumPy engine refuses anything but their defaults.
    """
    if init_std == "he":
        model = he_scale(build_numpy(spec, 1.0, rng))
    else:
        model = build_numpy(spec, init_std, rng)
    if engine == "numpy":
        from . import numpy as chosen
    elif engine == "torch":
        from . import torch as chosen
    else:
        raise ValueError(f"engine: expected 'numpy' or 'torch', got {engine!r}")
    return chosen.trainer(spec, model, lr, device, workers, sync_bn, distributed)


def make_lstm_trainer(engine: str, input_size: int, steps: int, n_classes: int, cfg: dict,
                      rng: np.random.Generator, device=None):
    """The LSTM classifier of ``cfg`` (norm, hidden, lr, clip, optionally optimizer "sgd")
    for sequences of ``steps`` x ``input_size`` on ``engine``, its weights drawn from ``rng``
    by the NumPy builder (the torch twin copies them). ``device``: torch only."""
    lstm, head = build_lstm(input_size, cfg["hidden"], n_classes, cfg["norm"], rng)
    optimizer, lr, clip = cfg.get("optimizer", "sgd"), cfg["lr"], cfg.get("clip")
    if engine == "numpy":
        if device not in (None, "cpu"):
            raise ValueError(f"device: expected None with engine 'numpy' (devices are a "
                             f"torch-engine option), got {device!r}")
        return NumpyLstmTrainer(lstm, head, optimizer, lr, clip)
    if engine == "torch":
        from .torch_lstm import TorchLstmTrainer

        return TorchLstmTrainer(lstm, head, steps, optimizer, lr, clip, device)
    raise ValueError(f"engine: expected 'numpy' or 'torch', got {engine!r}")
