"""Output arrays for the kernels: a large output is reused once nothing references it any more.

Why: a training loop allocates every layer's y and dx afresh each step and frees them after
the step. Above a few MB glibc hands such blocks back to the kernel, and NumPy asks for
transparent huge pages on them, so the next step page-faults its outputs in again, 2 MB of
zeroing per fault. At the large shapes of ``normlab bench`` that costs more than the norm
itself; with the pool a training loop's forward+backward runs several times faster (the bench's
"fwd+bwd loop" mode times exactly this).

How: each pooled buffer is a raw byte array; callers get a typed view of it, and every view
(and every view of a view) keeps the buffer referenced, so ``sys.getrefcount`` tells exactly
when the last user let go. Only then is the buffer handed out again -- nothing a caller still
holds is ever overwritten. The pool keeps at most POOL_BYTES (1 GB, less on small machines);
buffers are never shared between threads (handing out happens under a lock).
:func:`release` gives the free buffers' memory back.

``NORMLAB_OUTPUT_POOL`` (read whenever a pooled-size output is made): unset, ``1``, ``on``,
``true`` or ``yes``: pool up to POOL_BYTES; ``0``, ``off``, ``false`` or ``no``: no pool (every
output a fresh ``np.empty``); a size with a unit, ``512M`` or ``2G`` (``K``/``M``/``G``, powers
of 1024): pool up to that many bytes. Anything else raises ValueError naming the variable: a
typo must not silently leave the pool on.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import threading

import numpy as np

MIN_BYTES = 1 << 20     # smaller blocks stay on malloc's own free lists: nothing to gain


def _budget() -> int:
    """1 GB, or an eighth of the machine's memory where that is less."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):   # no sysconf (Windows) or no such name
        return 1 << 30
    return min(1 << 30, ram // 8)


POOL_BYTES = _budget()   # free + in-use buffers the pool keeps track of, at most

_pool: list[np.ndarray] = []
_lock = threading.Lock()
# A free buffer is referenced by the _pool list, the loop variable and getrefcount's argument.
_FREE_REFCOUNT = 3


_ON, _OFF = ("", "1", "on", "true", "yes"), ("0", "off", "false", "no")
_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


@functools.lru_cache(maxsize=16)
def _parse(raw: str) -> int | None:
    """The byte budget a NORMLAB_OUTPUT_POOL value sets: None = POOL_BYTES, 0 = no pool."""
    text = raw.strip().lower()
    if text in _ON:
        return None
    if text in _OFF:
        return 0
    number, unit = text[:-1].strip(), _UNITS.get(text[-1:])
    if unit is not None and number.isdigit() and int(number) > 0:
        return int(number) * unit
    raise ValueError(f"NORMLAB_OUTPUT_POOL: expected 1/on/true/yes (reuse outputs), "
                     f"0/off/false/no (never) or a budget such as 512M or 2G, got {raw!r}")


def pool_budget() -> int:
    """Bytes the pool may hold under the current NORMLAB_OUTPUT_POOL (0: pool off)."""
    budget = _parse(os.environ.get("NORMLAB_OUTPUT_POOL", ""))
    return POOL_BYTES if budget is None else budget


def empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    """Like ``np.empty(shape, dtype)`` (C order, contents undefined), from the pool if large."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize   # math.prod: np.prod's call overhead is larger
    if nbytes < MIN_BYTES:
        return np.empty(shape, dtype)
    budget = pool_budget()
    if not budget:
        return np.empty(shape, dtype)
    with _lock:
        for buf in _pool:
            if buf.nbytes == nbytes and sys.getrefcount(buf) == _FREE_REFCOUNT:
                return buf.view(dtype).reshape(shape)
        buf = _new_buffer(nbytes, budget)
        return buf.view(dtype).reshape(shape)


def _new_buffer(nbytes: int, budget: int) -> np.ndarray:
    """A new pooled buffer; free ones are dropped first (oldest first) to stay in budget."""
    held = sum(b.nbytes for b in _pool)
    i = 0
    while i < len(_pool) and held + nbytes > budget:
        # free: referenced by the list, the getrefcount argument and nothing else
        if sys.getrefcount(_pool[i]) == _FREE_REFCOUNT - 1:
            held -= _pool.pop(i).nbytes
        else:
            i += 1
    buf = np.empty(nbytes, np.uint8)
    if held + nbytes <= budget:
        _pool.append(buf)
    return buf


def release() -> int:
    """Drop every buffer nothing references (their memory goes back to malloc); returns the
    bytes released. Buffers still in use stay pooled."""
    with _lock:
        held = sum(b.nbytes for b in _pool)
        # free: referenced by the list, the loop variable and getrefcount's argument only
        _pool[:] = [b for b in _pool if sys.getrefcount(b) > _FREE_REFCOUNT]
        return held - sum(b.nbytes for b in _pool)


def pooled_bytes() -> int:
    """Bytes the pool holds (free and in use), for tests and diagnostics."""
    with _lock:
        return sum(b.nbytes for b in _pool)
