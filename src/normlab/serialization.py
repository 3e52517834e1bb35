"""Save and load state dicts as .npz files (one array per PyTorch-style key).

``save(model_or_state_dict, path)`` writes atomically: a temporary file in the same directory,
flushed and fsynced, then ``os.replace`` -- a crash leaves either the old file or the new one.
``load(model_or_None, path)`` returns the state dict when ``model`` is None; otherwise it loads it
into ``model`` (strict key and shape checks by default) and returns the model.

Torch interoperability: ``{k: v.numpy() for k, v in torch_model.state_dict().items()}`` saved
with :func:`save` (or passed to ``load_state_dict``) loads into the equivalent normlab model.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ._io import atomic_file


def _as_state_dict(obj) -> dict[str, np.ndarray]:
    if hasattr(obj, "state_dict") and callable(obj.state_dict):
        return obj.state_dict()
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"obj: expected string keys, got {type(key).__name__} {key!r}")
            out[key] = np.asarray(value)
            if out[key].dtype == object:
                raise TypeError(f"obj[{key!r}]: expected a numeric array, got object dtype")
        return out
    raise TypeError(f"obj: expected a normlab Module or a mapping of name -> array, "
                    f"got {type(obj).__name__}")


def save(obj, path: str | os.PathLike) -> Path:
    """Write ``obj`` (a Module or a state dict) to ``path`` as .npz, atomically. Returns path."""
    state = _as_state_dict(obj)
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"path: expected a file in an existing directory, got {str(path)!r}")
    with atomic_file(path) as f:
        # a file object stops numpy from appending ".npz" to the file name
        np.savez(f, **state)
    return path


def read_state_dict(path: str | os.PathLike, max_bytes: int | None = None,
                    keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Every array of a .npz file (only those named in ``keys`` when given), read eagerly; a
    damaged file raises a clear ValueError.

    Each member's .npy header is checked against what the archive can actually hold before
    anything is allocated, so a corrupt header claiming a huge shape cannot exhaust memory.
    ``max_bytes``: refuse, before reading any array, a file whose members would unpack to more
    (deflate packs 1 GB of zeros into 1 MB, so the file's own size is no bound).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: expected an existing .npz file, got {str(path)!r}")
    try:
        with zipfile.ZipFile(path) as zf:
            _check_unpacked_size(path, zf.infolist(), max_bytes)
            members = [i for i in zf.infolist() if keys is None or i.filename[:-4] in keys]
            return {info.filename[:-4]: _read_member(zf, info) for info in members}
    except TooLarge:
        raise
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, KeyError, zlib.error,
            NotImplementedError) as exc:
        raise ValueError(f"path: {str(path)!r} is not a readable .npz state dict "
                         f"(corrupt or truncated?): {exc}") from exc


class TooLarge(ValueError):
    """A file that would unpack to more than the reader's ``max_bytes``."""


def stored_bytes(path: str | os.PathLike) -> dict[str, int]:
    """{key: bytes its .npy member unpacks to} of the .npz ``path``, from its zip directory
    alone (nothing is decompressed)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return {info.filename[:-4]: info.file_size for info in zf.infolist()}
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ValueError(f"path: {str(path)!r} is not a readable .npz state dict "
                         f"(corrupt or truncated?): {exc}") from exc


def _check_unpacked_size(path: Path, members: list[zipfile.ZipInfo],
                         max_bytes: int | None) -> None:
    """Each member is read only up to the size the zip directory states, so their sum bounds
    what reading allocates."""
    total = sum(info.file_size for info in members)
    if max_bytes is not None and total > max_bytes:
        raise TooLarge(f"path: expected at most {max_bytes} bytes of arrays, got "
                         f"{str(path)!r} holding {total} bytes")


# deflate cannot expand better than ~1032:1 (the same bound as the IDX reader)
_MAX_DEFLATE_RATIO = 1032


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    if not info.filename.endswith(".npy"):
        raise ValueError(f"member {info.filename!r} is not a .npy array")
    ratio = 1 if info.compress_type == zipfile.ZIP_STORED else _MAX_DEFLATE_RATIO
    capacity = min(info.file_size, info.compress_size * ratio)
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        if dtype.hasobject:
            raise ValueError(f"member {info.filename!r} holds Python objects (refused)")
        n_bytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if n_bytes > capacity - f.tell():
            raise ValueError(f"member {info.filename!r} claims shape {shape} ({n_bytes} bytes) "
                             f"but holds at most {capacity} bytes")
        data = f.read(n_bytes)
    if len(data) != n_bytes:
        raise ValueError(f"member {info.filename!r} is truncated")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C").copy()


def load(model, path: str | os.PathLike, strict: bool = True):
    """The state dict in ``path`` (``model`` None), or ``model`` with it loaded."""
    state = read_state_dict(path)
    if model is None:
        return state
    if not (hasattr(model, "load_state_dict") and callable(model.load_state_dict)):
        raise TypeError(f"model: expected a normlab Module or None, got {type(model).__name__}")
    model.load_state_dict(state, strict=strict)
    return model
