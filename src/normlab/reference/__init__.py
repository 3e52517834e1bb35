"""The NumPy backend: one module per norm family, the same interface as :mod:`normlab.kernels`.

``batch``: ``train(x, weight, bias, eps) -> (y, cache)``, ``evaluate(x, scale, shift) -> y``,
``backward(dy, cache) -> (dx, dweight, dbias)``; ``layer`` and ``group``: ``forward`` and
``backward``. Arguments arrive validated (:mod:`normlab.functional` checks them and picks this
backend or the kernels, see :mod:`normlab.functional.backend`); everything is written with the
helpers of :mod:`normlab.core`, the one place the statistics are computed.
"""
