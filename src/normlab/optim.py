"""Optimizers with exactly torch.optim's update rules, and learning-rate schedules as functions.

``SGD`` (torch.optim.SGD, default foreach=False semantics)::

    g <- grad + weight_decay * p
    buf <- g                                   (first step)
    buf <- momentum * buf + (1 - dampening) * g (later steps)
    g <- g + momentum * buf  if nesterov  else  buf
    p <- p - lr * g

``Adam`` (Kingma & Ba 2015, Alg. 1, in torch's arrangement)::

    m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2
    p <- p - lr / (1-b1^t) * m / (sqrt(v) / sqrt(1-b2^t) + eps)

``RMSprop`` (Tieleman & Hinton 2012, lecture 6.5, in torch.optim.RMSprop's arrangement)::

    g <- grad + weight_decay * p
    v <- alpha v + (1-alpha) g^2                (v starts at 0)
    d <- sqrt(v) + eps, or with centered: sqrt(v - a^2) + eps where a <- lerp(a, g, 1-alpha)
    buf <- momentum * buf + g / d; p <- p - lr * buf   if momentum > 0
    p <- p - lr * g / d                                 otherwise

Parameters whose ``grad`` is None are skipped, as torch does. Updates are in place on ``p.data``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

import numpy as np

from .nn.module import Parameter


def _check_nonneg(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise ValueError(f"{name}: expected a non-negative number, got {value!r}")
    return float(value)


def _check_params(params) -> list[Parameter]:
    params = list(params)
    if not params:
        raise ValueError("params: expected a non-empty iterable of Parameters, got an empty one")
    for i, p in enumerate(params):
        if not isinstance(p, Parameter):
            raise TypeError(f"params[{i}]: expected a normlab.nn.Parameter, "
                            f"got {type(p).__name__}")
    return params


class Optimizer:
    """The base of the optimizers: a checked list of :class:`normlab.nn.Parameter` and a
    learning rate; each subclass writes its update rule (this module's docstring) in ``step``."""

    def __init__(self, params: Iterable[Parameter], lr: float):
        self.params = _check_params(params)
        self.lr = _check_nonneg("lr", lr)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients (torch's default ``set_to_none=True``)."""
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad[...] = 0

    def step(self) -> None:
        """One update of every parameter that has a gradient, in place on ``p.data``."""
        raise NotImplementedError

    def _grads(self, weight_decay: float):
        """(index, parameter, gradient + weight_decay * p) of every parameter that has a
        gradient (torch skips the others)."""
        for i, p in enumerate(self.params):
            if p.grad is not None:
                yield i, p, (p.grad + weight_decay * p.data if weight_decay != 0 else p.grad)

    # Resumable training needs the optimizer's state as well as the model's.
    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the per-parameter state (momentum buffers, moment estimates, step counts),
        keyed ``<name>.<parameter index>``."""
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        """Replace the state with ``state`` (from :meth:`state_dict`); every key and shape is
        checked before anything changes."""
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, Nesterov and weight decay: torch.optim.SGD's
    update (the module docstring's ``SGD`` lines), bit for bit on the same float operations."""

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False):
        super().__init__(params, lr)
        self.momentum = _check_nonneg("momentum", momentum)
        self.dampening = _check_nonneg("dampening", dampening)
        self.weight_decay = _check_nonneg("weight_decay", weight_decay)
        if nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError(f"nesterov: requires momentum > 0 and dampening = 0, got "
                             f"momentum={momentum!r}, dampening={dampening!r}")
        self.nesterov = bool(nesterov)
        self.momentum_buffers: list[np.ndarray | None] = [None] * len(self.params)

    def step(self) -> None:
        lr, mu, wd = self.lr, self.momentum, self.weight_decay
        plain = mu != 0 and wd == 0 and not self.dampening and not self.nesterov
        fused = _fused_momentum_step() if plain else None
        for i, p, g in self._grads(wd):
            if mu != 0:
                buf = self.momentum_buffers[i]
                if buf is None:
                    buf = self.momentum_buffers[i] = g.copy()
                elif fused is not None and _fusable(p.data, g, buf):
                    fused(p.data.reshape(-1), g.reshape(-1), buf.reshape(-1),
                          p.data.dtype.type(lr), p.data.dtype.type(mu))
                    continue
                else:
                    buf *= mu
                    if self.dampening:
                        buf += (1 - self.dampening) * g
                    else:
                        buf += g
                g = g + mu * buf if self.nesterov else buf
            # lr * g allocates once; in-place subtraction keeps p.data's identity.
            p.data -= lr * g

    def state_dict(self) -> dict[str, np.ndarray]:
        return {f"momentum_buffer.{i}": b.copy()
                for i, b in enumerate(self.momentum_buffers) if b is not None}

    def load_state_dict(self, state: dict) -> None:
        buffers: list[np.ndarray | None] = [None] * len(self.params)
        for key, value in state.items():
            i = _index(key, "momentum_buffer.", len(self.params))
            buffers[i] = _checked_copy(key, value, self.params[i])
        self.momentum_buffers = buffers


def _fused_momentum_step():
    """The plain momentum update as one compiled pass (:mod:`normlab.kernels.sgd`), or None on
    the NumPy reference path (``NORMLAB_KERNELS=numpy``, no numba)."""
    from . import kernels

    if kernels.backend() != "numba":
        return None
    from .kernels.sgd import momentum_step
    return momentum_step


_FUSED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _fusable(p: np.ndarray, g: np.ndarray, buf: np.ndarray) -> bool:
    """Same dtype and shape, C-contiguous (flat views alias them), and no overlap: the
    in-place NumPy sequence gives a different answer when g aliases buf or p."""
    return (p.dtype in _FUSED_DTYPES and g.dtype == p.dtype and buf.dtype == p.dtype
            and g.shape == p.shape and buf.shape == p.shape
            and p.flags.c_contiguous and g.flags.c_contiguous and buf.flags.c_contiguous
            and _disjoint(g, buf) and _disjoint(g, p) and _disjoint(buf, p))


def _disjoint(a: np.ndarray, b: np.ndarray) -> bool:
    # two different arrays that each own their memory (base None) cannot overlap; views fall
    # back to numpy's bounds test (~0.5 us, which would dominate the small parameters' update)
    if a is b:
        return False
    return (a.base is None and b.base is None) or not np.may_share_memory(a, b)


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015, Alg. 1) in torch.optim.Adam's arrangement (the module
    docstring's ``Adam`` lines), with L2 ``weight_decay`` added to the gradient as torch's."""

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, lr)
        b1, b2 = betas
        for name, b in (("betas[0]", b1), ("betas[1]", b2)):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"{name}: expected a number in [0, 1), got {b!r}")
        self.betas = (float(b1), float(b2))
        self.eps = _check_nonneg("eps", eps)
        self.weight_decay = _check_nonneg("weight_decay", weight_decay)
        n = len(self.params)
        self.steps = [0] * n
        self.exp_avg: list[np.ndarray | None] = [None] * n
        self.exp_avg_sq: list[np.ndarray | None] = [None] * n

    def step(self) -> None:
        b1, b2 = self.betas
        for i, p, g in self._grads(self.weight_decay):
            if self.exp_avg[i] is None:
                self.exp_avg[i] = np.zeros_like(p.data)
                self.exp_avg_sq[i] = np.zeros_like(p.data)
            self.steps[i] += 1
            t = self.steps[i]
            m, v = self.exp_avg[i], self.exp_avg_sq[i]
            m += (1 - b1) * (g - m)          # torch's lerp_(grad, 1 - beta1)
            v *= b2
            v += (1 - b2) * g * g
            step_size = self.lr / (1 - b1 ** t)
            denom = np.sqrt(v) / math.sqrt(1 - b2 ** t)
            denom += self.eps
            p.data -= step_size * (m / denom)

    def state_dict(self) -> dict[str, np.ndarray]:
        out = {}
        for i, (t, m, v) in enumerate(zip(self.steps, self.exp_avg, self.exp_avg_sq, strict=True)):
            if m is not None:
                out[f"step.{i}"] = np.array(t, dtype=np.int64)
                out[f"exp_avg.{i}"] = m.copy()
                out[f"exp_avg_sq.{i}"] = v.copy()
        return out

    def load_state_dict(self, state: dict) -> None:
        n = len(self.params)
        steps, exp_avg, exp_avg_sq = [0] * n, [None] * n, [None] * n
        for key, value in state.items():
            if key.startswith("step."):
                steps[_index(key, "step.", n)] = int(np.asarray(value))
            elif key.startswith("exp_avg."):
                i = _index(key, "exp_avg.", n)
                exp_avg[i] = _checked_copy(key, value, self.params[i])
            else:
                i = _index(key, "exp_avg_sq.", n)
                exp_avg_sq[i] = _checked_copy(key, value, self.params[i])
        self.steps, self.exp_avg, self.exp_avg_sq = steps, exp_avg, exp_avg_sq


class RMSprop(Optimizer):
    """torch.optim.RMSprop's update (defaults lr 1e-2, alpha 0.99, eps 1e-8 as torch's).

    Cooijmans et al. 2016 (sec. 5.1) train their sequential-MNIST LSTMs with RMSProp at lr 1e-3.
    """

    STATE = ("square_avg", "momentum_buffer", "grad_avg")

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
                 centered: bool = False):
        super().__init__(params, lr)
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) \
                or not 0.0 <= alpha < 1.0:
            raise ValueError(f"alpha: expected a number in [0, 1), got {alpha!r}")
        self.alpha = float(alpha)
        self.eps = _check_nonneg("eps", eps)
        self.weight_decay = _check_nonneg("weight_decay", weight_decay)
        self.momentum = _check_nonneg("momentum", momentum)
        if not isinstance(centered, bool):
            raise TypeError(f"centered: expected a bool, got {type(centered).__name__}")
        self.centered = centered
        n = len(self.params)
        self.square_avg: list[np.ndarray | None] = [None] * n
        self.momentum_buffer: list[np.ndarray | None] = [None] * n
        self.grad_avg: list[np.ndarray | None] = [None] * n

    def step(self) -> None:
        alpha = self.alpha
        for i, p, g in self._grads(self.weight_decay):
            if self.square_avg[i] is None:   # torch creates the state at a parameter's 1st step
                self.square_avg[i] = np.zeros_like(p.data)
                if self.momentum > 0:
                    self.momentum_buffer[i] = np.zeros_like(p.data)
                if self.centered:
                    self.grad_avg[i] = np.zeros_like(p.data)
            v = self.square_avg[i]
            v *= alpha
            v += (1 - alpha) * g * g           # torch's addcmul_(g, g, value=1 - alpha)
            if self.centered:
                a = self.grad_avg[i]
                a += (1 - alpha) * (g - a)      # torch's lerp_(g, 1 - alpha)
                denom = np.sqrt(v - a * a)
            else:
                denom = np.sqrt(v)
            denom += self.eps
            if self.momentum > 0:
                buf = self.momentum_buffer[i]
                buf *= self.momentum
                buf += g / denom
                p.data -= self.lr * buf
            else:
                p.data -= self.lr * (g / denom)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {f"{name}.{i}": a.copy() for name in self.STATE
                for i, a in enumerate(getattr(self, name)) if a is not None}

    def load_state_dict(self, state: dict) -> None:
        n = len(self.params)
        loaded = {name: [None] * n for name in self.STATE}
        for key, value in state.items():
            name = key.rpartition(".")[0]
            if name not in loaded:
                raise ValueError(f"state: unexpected key {key!r} (expected "
                                 f"{'/'.join(self.STATE)}.<i>)")
            i = _index(key, f"{name}.", n)
            loaded[name][i] = _checked_copy(key, value, self.params[i])
        for name, arrays in loaded.items():
            setattr(self, name, arrays)


def _index(key: str, prefix: str, n: int) -> int:
    if not key.startswith(prefix) or not key[len(prefix):].isdigit() \
            or int(key[len(prefix):]) >= n:
        raise ValueError(f"state: unexpected key {key!r} (expected {prefix}<i> with i < {n})")
    return int(key[len(prefix):])


def _checked_copy(key: str, value, p: Parameter) -> np.ndarray:
    value = np.asarray(value)
    if value.shape != p.data.shape:
        raise ValueError(f"state[{key!r}]: expected shape {p.data.shape}, got {value.shape}")
    return value.astype(p.data.dtype, copy=True)


# -- learning-rate schedules: pure functions of the step -----------------------------------
def step_lr(base_lr: float, step: int, step_size: int, gamma: float = 0.1) -> float:
    """torch.optim.lr_scheduler.StepLR: lr = base_lr * gamma ** (step // step_size)."""
    if step_size <= 0:
        raise ValueError(f"step_size: expected a positive integer, got {step_size!r}")
    return base_lr * gamma ** (step // step_size)


def cosine_lr(base_lr: float, step: int, total_steps: int, min_lr: float = 0.0) -> float:
    """Cosine annealing (Loshchilov & Hutter 2017), torch's CosineAnnealingLR closed form:
    lr = min_lr + (base_lr - min_lr) * (1 + cos(pi * step / total_steps)) / 2."""
    if total_steps <= 0:
        raise ValueError(f"total_steps: expected a positive integer, got {total_steps!r}")
    return min_lr + (base_lr - min_lr) * (1 + math.cos(math.pi * step / total_steps)) / 2
