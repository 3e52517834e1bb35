"""The two numba decorators every kernel uses, and the data-size rule for threading.

``fastmath={"reassoc", "contract"}`` lets LLVM reorder the sums (so reductions vectorise) and
fuse multiply-adds, while keeping IEEE NaN/inf semantics; full ``fastmath=True`` would also
assume no NaN/inf and break NaN propagation. ``cache=True`` keeps compiled code on disk so the
compile cost (seconds on two cores) is paid once per machine, not per process.
"""

from __future__ import annotations

import numba

FASTMATH = {"reassoc", "contract"}

jit = numba.njit(cache=True, fastmath=FASTMATH, nogil=True)
pjit = numba.njit(cache=True, fastmath=FASTMATH, nogil=True, parallel=True)

# Below about 1 MB the thread start-up costs more than the second core gives (DESIGN.md hint).
PARALLEL_MIN_BYTES = 1 << 20


def blocks(nbytes: int) -> int:
    """How many row blocks to split a (rows, C) array into: 1 (serial) or one per thread."""
    return 1 if nbytes < PARALLEL_MIN_BYTES else numba.get_num_threads()
