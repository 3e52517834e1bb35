"""SGD's plain momentum update (buf <- mu buf + g; p <- p - lr buf) as one pass over p, g, buf.

NumPy needs four passes and a parameter-sized temporary for it (buf *= mu; buf += g;
p -= lr * buf); this loop does the same float operations in the same order, each rounded to the
parameter dtype, and is compiled WITHOUT fastmath (no reassociation, no FMA contraction), so it
is bit-for-bit the NumPy result (tests/test_optim.py checks that), in one pass instead of four.
"""

from __future__ import annotations

import numba


@numba.njit(cache=True, nogil=True)
def momentum_step(p, g, buf, lr, mu):
    for i in range(p.size):
        b = buf[i] * mu + g[i]
        buf[i] = b
        p[i] = p[i] - lr * b
