"""The one torch loader that cannot run code from the file, shared by ``normlab fold``'s two
readers of a .pt: :mod:`.fold_files` (a file of unknown kind) and :mod:`.fold_arch` (a state
dict for ``--arch``). Its own module so neither reader imports the other for it."""

from __future__ import annotations

import warnings
from pathlib import Path


def load_weights_only(torch, src: Path):
    """``torch.load(src, weights_only=True)``, quietly: torch warns on stderr when handed a
    TorchScript archive, which would break fold's one-line errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(src, weights_only=True, map_location="cpu")
