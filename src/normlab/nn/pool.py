"""Max and average pooling over (N, C, H, W) windows (torch.nn.MaxPool2d / AvgPool2d).

Both reuse the convolution's strided window view; backward scatters through its adjoint. That
is the readable reference path; with numba, MaxPool2d on float32/float64 runs
:mod:`normlab.kernels.pool` (one compiled pass each way, checked against this one in
tests/kernels/test_pool_kernels.py).
"""

from __future__ import annotations

import numpy as np

from .. import kernels
from .._checks import as_float_array, check_ndim
from .conv import out_size, pair, scatter_windows, unpad, windows
from .module import Module


class _Pool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = pair("kernel_size", kernel_size)
        self.stride = self.kernel_size if stride is None else pair("stride", stride)
        self.padding = pair("padding", padding, minimum=0)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size, strict=True)):
            raise ValueError(f"padding: expected at most half the kernel size "
                             f"{self.kernel_size}, got {self.padding}")
        self._cache = None

    def _checked(self, x) -> tuple[np.ndarray, tuple[int, int]]:
        """(x, (Ho, Wo)) after the input checks."""
        x = as_float_array("x", x)
        check_ndim("x", x, (4,), "(N, C, H, W)")
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        ho = out_size(x.shape[2], kh, self.stride[0], ph)
        wo = out_size(x.shape[3], kw, self.stride[1], pw)
        if ho <= 0 or wo <= 0:
            raise ValueError(f"x: input of spatial size {x.shape[2:]} is smaller than the "
                             f"kernel {self.kernel_size}")
        return x, (ho, wo)

    def _windows(self, x: np.ndarray, out_hw, fill: float
                 ) -> tuple[np.ndarray, tuple[int, ...]]:
        ph, pw = self.padding
        xp = x
        if ph or pw:
            xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
        return windows(xp, self.kernel_size, self.stride, (1, 1), out_hw), xp.shape

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(_Pool2d):
    """Max over each window; the gradient goes to the first maximal element (torch's choice)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        x, out_hw = self._checked(x)
        fast = kernels.for_array(x, "pool")
        if fast is not None:
            y, arg = fast.forward(x, self.kernel_size, self.stride, self.padding, out_hw)
            self._cache = (True, arg, x.shape, x.dtype)
            return y
        win, padded_shape = self._windows(x, out_hw, -np.inf)
        n, c, ho, wo, kh, kw = win.shape
        flat = win.reshape(n, c, ho, wo, kh * kw)
        arg = np.argmax(flat, axis=-1)
        y = np.take_along_axis(flat, arg[..., None], axis=-1)[..., 0]
        self._cache = (False, arg, padded_shape, x.dtype)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dy = self._check_dy(dy, None if self._cache is None else self._cache[1].shape)
        fast, arg, shape, dtype = self._cache
        if fast:
            return kernels.load("pool").backward(dy, arg, shape, dtype)
        kh, kw = self.kernel_size
        onehot = arg[..., None] == np.arange(kh * kw)
        dwin = (onehot * dy[..., None]).astype(dtype, copy=False)
        dwin = dwin.reshape(*arg.shape, kh, kw)
        dxp = scatter_windows(dwin, shape, self.stride, (1, 1))
        return unpad(dxp, self.padding)


class AvgPool2d(_Pool2d):
    """Mean over each window; zero padding counts toward the mean (count_include_pad=True)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        x, out_hw = self._checked(x)
        win, padded_shape = self._windows(x, out_hw, 0.0)
        y = win.mean(axis=(-2, -1), dtype=x.dtype)
        self._cache = (padded_shape, y.shape)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dy = self._check_dy(dy, None if self._cache is None else self._cache[1])
        padded_shape, _ = self._cache
        kh, kw = self.kernel_size
        share = dy / (kh * kw)
        dwin = np.broadcast_to(share[..., None, None], (*dy.shape, kh, kw))
        dxp = scatter_windows(dwin, padded_shape, self.stride, (1, 1))
        return unpad(dxp, self.padding)
