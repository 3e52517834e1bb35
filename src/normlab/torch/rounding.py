"""How far float32 rounding alone moves a torch model's output: the floor under any check that
compares two float32 computations of the same function (a folded model against the original).

A fold reorders the arithmetic (``(w * s) * x`` for ``s * (w * x)``), so the folded and the
unfolded float32 models differ by float32 rounding even where the fold is exact; the same
unfolded model run in float64 on the same input shows how large that rounding is for this model
and input (Higham 2002, ch. 3: the error of a computation grows with its length and the
magnitudes in it, not only with the output's). A fold error far above this floor is a wrong
fold; one near it is rounding.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

_LOW_PRECISION = (torch.float32, torch.float16, torch.bfloat16)


@torch.no_grad()
def rounding_floor(model: nn.Module, x: torch.Tensor, output: torch.Tensor
                   ) -> tuple[float | None, str]:
    """(max |model in float64 (x) - output|, ""), where ``output`` is ``model(x)`` in its own
    lower precision; (None, why) when there is no floor to give: x is already float64, or the
    model does not run in float64 (an op without a float64 kernel, dtypes fixed inside)."""
    if x.dtype not in _LOW_PRECISION:
        return None, f"the input is {x.dtype}, not a lower precision than float64"
    try:
        wide = copy.deepcopy(model).double()
        exact = wide(x.double())
        return float((exact - output.double()).abs().max()), ""
    except Exception as err:  # any failure: this model cannot be run in float64 as it is
        first = str(err).splitlines()[0] if str(err) else ""
        return None, f"the model does not run in float64 ({type(err).__name__}: {first})"
