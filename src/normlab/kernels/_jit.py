"""The numba decorators every kernel uses, and the data-size rule for threading.

``fastmath={"reassoc", "contract"}`` lets LLVM reorder the sums (so reductions vectorise) and
fuse multiply-adds, while keeping IEEE NaN/inf semantics; full ``fastmath=True`` would also
assume no NaN/inf and break NaN propagation. ``cache=True`` keeps compiled code on disk so the
compile cost (seconds on two cores) is paid once per machine, not per process.
"""

from __future__ import annotations

import types

import numba

FASTMATH = {"reassoc", "contract"}

jit = numba.njit(cache=True, fastmath=FASTMATH, nogil=True)

# Helpers inlined into their callers in numba's IR: as separate functions their array views
# cross a call boundary, and the loops around them vectorise worse (seen in the LSTM backward).
inline = numba.njit(cache=True, fastmath=FASTMATH, nogil=True, inline="always")

# Below about 1 MB the thread start-up costs more than the second core gives; on a busy machine
# a parallel launch can even stall for a scheduler tick, so small inputs never touch the thread
# pool.
PARALLEL_MIN_BYTES = 1 << 20


class Kernel:
    """A loop compiled twice: threaded (``prange``) and serial (``prange`` runs as ``range``).

    The serial copy gets its own qualified name so numba's on-disk cache keeps the two apart
    (the cache index is keyed by name and signature, not by the ``parallel`` flag).
    """

    def __init__(self, func):
        serial = types.FunctionType(func.__code__, func.__globals__, func.__name__ + "_serial",
                                    func.__defaults__, func.__closure__)
        serial.__qualname__ = func.__qualname__ + "_serial"
        self.serial = numba.njit(cache=True, fastmath=FASTMATH, nogil=True)(serial)
        self.parallel = numba.njit(cache=True, fastmath=FASTMATH, nogil=True,
                                   parallel=True)(func)
        self.__doc__ = func.__doc__

    def pick(self, nbytes: int):
        return self.serial if nbytes < PARALLEL_MIN_BYTES else self.parallel


pjit = Kernel


def blocks(nbytes: int) -> int:
    """How many row blocks to split a (rows, C) array into: 1 (serial) or one per thread."""
    return 1 if nbytes < PARALLEL_MIN_BYTES else numba.get_num_threads()
