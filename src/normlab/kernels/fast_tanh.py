"""tanh inside compiled code, fast for float32: :func:`tanh_value`.

NumPy's SIMD tanh cannot be called from numba, and numba's own tanh is a libm call per value
(~10x slower than NumPy's over an array), so a loop that wants tanh in the same pass as other
math (the LSTM step, :func:`normlab.kernels.lstm.step_forward`) needs one that LLVM can
vectorise: for float32, Eigen's rational approximation below; float64 keeps libm's
``math.tanh`` (float64 runs in the gradient checks, where exactness matters and speed does
not).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import types
from numba.extending import overload

from ._jit import FASTMATH

# error_model="numpy": a float division does not check for zero (IEEE inf/NaN instead of a
# Python exception), without which the branch keeps the tanh's division from vectorising
# (46 vs 5 us for 16,384 values).
vector_jit = numba.njit(cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy")

# Eigen's generic_fast_tanh_float (Eigen/src/Core/MathFunctionsImpl.h): a 13/6-degree odd/even
# rational interpolant of tanh on [-7.9053, 7.9053]; beyond, the clamp holds it at
# +-(1 - 2.4e-7), 4 units in the last place from the +-1 that float32's tanh rounds to there.
_CLAMP = 7.90531110763549805
_ALPHA = (4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05,
          5.12229709037114e-08, -8.60467152213735e-11, 2.00018790482477e-13,
          -2.76076847742355e-16)
_BETA = (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04,
         1.19825839466702e-06)


def tanh_value(x):
    """tanh of one value inside compiled code: float32 by the rational approximation above
    (against float64 tanh, at most 6 units in the last place: 4.5 measured on a dense grid of
    [-12, 12], tests/kernels/test_fast_tanh.py; NaN stays NaN), other types by ``math.tanh``."""
    return math.tanh(x)


# not inline="always": inlined at numba's IR level, the clamp's conditional expressions trip
# numba's SSA check (NumbaIRAssumptionWarning at every compile); as a call, LLVM inlines it and
# the caller's loop vectorises the same (8.4 us per LSTM step either way)
@overload(tanh_value, jit_options=dict(fastmath=FASTMATH, error_model="numpy"))
def _tanh_value(x):
    if x != types.float32:
        return lambda x: math.tanh(x)
    f = np.float32
    c = f(_CLAMP)
    a1, a3, a5, a7, a9, a11, a13 = (f(v) for v in _ALPHA)
    b0, b2, b4, b6 = (f(v) for v in _BETA)

    def rational(x):
        # written so that a NaN fails both comparisons and goes through unclamped
        x = c if x > c else x
        x = -c if x < -c else x
        x2 = x * x
        p = ((((((a13 * x2 + a11) * x2 + a9) * x2 + a7) * x2 + a5) * x2 + a3) * x2 + a1) * x
        q = ((b6 * x2 + b4) * x2 + b2) * x2 + b0
        return p / q

    return rational
