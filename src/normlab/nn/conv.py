"""2-D convolution as one matrix product over im2col patches (torch.nn.Conv2d semantics).

Forward: the padded input's windows (a strided view from ``sliding_window_view``, no copy) are
laid out once as a (N*Ho*Wo, C/g*kh*kw) patch matrix per group, then y = patches @ W^T.
Backward: dW = dy^T @ patches, and dx scatters dy @ W back onto the windows (col2im), one
strided add per kernel offset (kh*kw adds, each vectorised over N, C, Ho, Wo).

That is the readable reference path (``NORMLAB_KERNELS=numpy``). With numba, float32/float64
inputs take :mod:`normlab.kernels.conv` instead: the same products on a channel-major patch
matrix built and scattered by compiled loops, with no padded copy and NCHW-contiguous outputs;
tests/kernels/test_conv_kernels.py holds the two paths (and torch) to each other.
"""

from __future__ import annotations

import numbers

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .. import kernels
from .._checks import as_float_array, check_ndim, check_positive_int
from . import init
from .module import Module, Parameter


def pair(name: str, value, minimum: int = 1) -> tuple[int, int]:
    """An int or a pair of ints, each >= ``minimum``."""
    items = (value, value) if isinstance(value, numbers.Integral) else tuple(value)
    if len(items) != 2 or any(isinstance(v, bool) or not isinstance(v, numbers.Integral)
                              or v < minimum for v in items):
        raise ValueError(f"{name}: expected an int >= {minimum} or a pair of them, got {value!r}")
    return int(items[0]), int(items[1])


def out_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def windows(xp: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int],
            dilation: tuple[int, int], out: tuple[int, int]) -> np.ndarray:
    """(N, C, Ho, Wo, kh, kw) strided view of the (already padded) input; no copy."""
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, stride, dilation, out
    view = sliding_window_view(xp, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
    return view[:, :, : sh * (ho - 1) + 1: sh, : sw * (wo - 1) + 1: sw, ::dh, ::dw]


def scatter_windows(dwin: np.ndarray, padded_shape: tuple[int, ...], stride, dilation
                    ) -> np.ndarray:
    """Adjoint of :func:`windows`: add (N, C, Ho, Wo, kh, kw) back onto a zero padded array."""
    n, c, ho, wo, kh, kw = dwin.shape
    (sh, sw), (dh, dw) = stride, dilation
    dxp = np.zeros(padded_shape, dtype=dwin.dtype)
    for i in range(kh):
        for j in range(kw):
            r, s = i * dh, j * dw
            dxp[:, :, r: r + sh * (ho - 1) + 1: sh, s: s + sw * (wo - 1) + 1: sw] += \
                dwin[:, :, :, :, i, j]
    return dxp


def unpad(xp: np.ndarray, padding: tuple[int, int]) -> np.ndarray:
    ph, pw = padding
    return xp[:, :, ph: xp.shape[2] - ph, pw: xp.shape[3] - pw]


class Conv2d(Module):
    """Input (N, C_in, H, W) -> (N, C_out, Ho, Wo); zero padding; groups and dilation supported.

    Weight (C_out, C_in/groups, kh, kw) and bias drawn like torch's defaults from ``rng``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, *, rng=None, dtype=np.float32):
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.out_channels = check_positive_int("out_channels", out_channels)
        self.kernel_size = pair("kernel_size", kernel_size)
        self.stride = pair("stride", stride)
        self.padding = pair("padding", padding, minimum=0)
        self.dilation = pair("dilation", dilation)
        self.groups = check_positive_int("groups", groups)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"groups: expected a divisor of in_channels={in_channels} and "
                             f"out_channels={out_channels}, got {groups}")
        shape = (out_channels, in_channels // groups, *self.kernel_size)
        weight, b = init.torch_default(shape, bias, rng, dtype)
        self.weight = Parameter(weight)
        self.bias = Parameter(b) if bias else None
        self._cache = None

    def _out_size(self, x: np.ndarray) -> tuple[int, int]:
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        h, w = x.shape[2:]
        ho = out_size(h, kh, self.stride[0], ph, self.dilation[0])
        wo = out_size(w, kw, self.stride[1], pw, self.dilation[1])
        if ho <= 0 or wo <= 0:
            raise ValueError(f"x: input of spatial size {(h, w)} is smaller than the dilated "
                             f"kernel {self.kernel_size} with padding {self.padding}")
        return ho, wo

    def _patches(self, x: np.ndarray, out_hw: tuple[int, int]
                 ) -> tuple[np.ndarray, tuple[int, ...]]:
        (kh, kw), (ph, pw), (ho, wo) = self.kernel_size, self.padding, out_hw
        n = x.shape[0]
        xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
        win = windows(xp, self.kernel_size, self.stride, self.dilation, (ho, wo))
        g = self.groups
        # (g, N*Ho*Wo, C/g*kh*kw): the one copy of the forward (im2col).
        cols = win.reshape(n, g, -1, ho, wo, kh, kw).transpose(1, 0, 3, 4, 2, 5, 6)
        cols = cols.reshape(g, n * ho * wo, -1)
        return cols, xp.shape

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float_array("x", x)
        check_ndim("x", x, (4,), "(N, C, H, W)")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"x: expected {self.in_channels} channels in dim 1, "
                             f"got {x.shape[1]} (input shape {tuple(x.shape)})")
        out_hw = self._out_size(x)
        fast = kernels.for_array(x, "conv")
        if fast is not None:
            bias = None if self.bias is None else self.bias.data
            y, cache = fast.forward(x, self.weight.data, bias, self.stride, self.padding,
                                    self.dilation, self.groups, out_hw,
                                    keep_patches=self.training)
            self._cache = (True, cache, y.shape)
            return y
        n, g = x.shape[0], self.groups
        (ho, wo) = out_hw
        cols, padded_shape = self._patches(x, out_hw)
        w = self.weight.data.reshape(g, self.out_channels // g, -1)
        y = np.matmul(cols, w.transpose(0, 2, 1))          # (g, N*Ho*Wo, C_out/g)
        y = y.reshape(g, n, ho, wo, -1).transpose(1, 0, 4, 2, 3).reshape(n, -1, ho, wo)
        if self.bias is not None:
            y += self.bias.data.reshape(1, -1, 1, 1)
        self._cache = (False, (cols, padded_shape, x.dtype), y.shape)
        return y

    def _dy_mat(self, dy: np.ndarray) -> np.ndarray:
        """dy as (g, N*Ho*Wo, C_out/g), matching the readable forward's patch layout."""
        n, _, ho, wo = dy.shape
        g = self.groups
        return dy.reshape(n, g, -1, ho, wo).transpose(1, 0, 3, 4, 2).reshape(g, n * ho * wo, -1)

    def _backward(self, dy, input_grad: bool) -> np.ndarray | None:
        """Accumulate dW (and db); return dx when ``input_grad``."""
        dy = self._check_dy(dy, None if self._cache is None else self._cache[2])
        fast, cache, _ = self._cache
        if fast:
            dx, dweight, dbias = kernels.load("conv").backward(dy, cache, input_grad)
            self.weight.accumulate(dweight.reshape(self.weight.data.shape))
            if dbias is not None:
                self.bias.accumulate(dbias)
            return dx
        cols, padded_shape, dtype = cache
        dy_mat = self._dy_mat(dy)
        self.weight.accumulate(np.matmul(dy_mat.transpose(0, 2, 1), cols)
                               .reshape(self.weight.data.shape))
        if self.bias is not None:
            self.bias.accumulate(dy.sum(axis=(0, 2, 3)))
        if not input_grad:
            return None
        n, _, ho, wo = dy.shape
        g, kh, kw = self.groups, *self.kernel_size
        w = self.weight.data.reshape(g, self.out_channels // g, -1)
        dcols = np.matmul(dy_mat, w)                            # (g, N*Ho*Wo, C/g*kh*kw)
        dwin = dcols.reshape(g, n, ho, wo, -1, kh, kw).transpose(1, 0, 4, 2, 3, 5, 6)
        dwin = dwin.reshape(n, -1, ho, wo, kh, kw)
        dxp = scatter_windows(dwin, padded_shape, self.stride, self.dilation)
        return unpad(dxp, self.padding).astype(dtype, copy=False)

    def backward_params(self, dy: np.ndarray) -> None:
        self._backward(dy, input_grad=False)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return self._backward(dy, input_grad=True)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, groups={self.groups}, "
                f"bias={self.bias is not None}")
