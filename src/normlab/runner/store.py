"""Atomic files and checksummed checkpoints for resumable runs.

A checkpoint is one file: ``MAGIC``, a 32-byte SHA-256 of the rest, then an ``.npz`` archive of
the arrays plus one JSON entry (``__meta__``) for everything else (metrics so far, step, RNG
state, the config hash). No pickle: loading a checkpoint never executes code. A file that fails
the checksum raises :class:`CorruptCheckpoint`, and the runner redoes that run.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from .._io import UnsafePath, atomic_write_bytes, read_regular

MAGIC = b"NLCKPT1\n"


class CorruptCheckpoint(ValueError):
    """A checkpoint file whose checksum or structure is wrong."""


def to_json(obj) -> str:
    """JSON with NaN/inf written as null (strict JSON readers reject NaN)."""
    return json.dumps(_clean(obj), indent=1, sort_keys=False, allow_nan=False)


def _clean(obj):
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if np.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def write_checkpoint(path: str | os.PathLike, meta: dict, arrays: dict | None = None) -> Path:
    """Atomically write ``meta`` (JSON-able) and ``arrays`` (name -> ndarray) to ``path``."""
    buf = io.BytesIO()
    entries = {f"a/{k}": np.asarray(v) for k, v in (arrays or {}).items()}
    entries["__meta__"] = np.frombuffer(to_json(meta).encode("utf-8"), dtype=np.uint8)
    np.savez(buf, **entries)
    body = buf.getvalue()
    return atomic_write_bytes(path, MAGIC + hashlib.sha256(body).digest() + body)


def read_checkpoint(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """(meta, arrays) of a checkpoint; :class:`CorruptCheckpoint` if it is damaged."""
    path = Path(path)
    try:   # never through a link: a results folder from a tarball may hold one
        blob = read_regular(path)
    except UnsafePath as exc:
        raise CorruptCheckpoint(str(exc)) from None
    head = len(MAGIC) + 32
    if len(blob) < head or not blob.startswith(MAGIC):
        raise CorruptCheckpoint(f"{str(path)!r}: not a normlab checkpoint (bad magic or too short)")
    body = blob[head:]
    if hashlib.sha256(body).digest() != blob[len(MAGIC):head]:
        raise CorruptCheckpoint(f"{str(path)!r}: checksum mismatch (file corrupted)")
    try:
        with np.load(io.BytesIO(body), allow_pickle=False) as npz:
            meta = json.loads(npz["__meta__"].tobytes().decode("utf-8"))
            arrays = {k[2:]: npz[k] for k in npz.files if k.startswith("a/")}
    except (zipfile.BadZipFile, ValueError, KeyError, UnicodeDecodeError) as exc:
        raise CorruptCheckpoint(f"{str(path)!r}: unreadable checkpoint: {exc}") from exc
    return meta, arrays


def config_hash(config: dict) -> str:
    """Stable identity of a run's configuration (checkpoints with another hash are not reused)."""
    return hashlib.sha256(json.dumps(_clean(config), sort_keys=True).encode()).hexdigest()[:16]
