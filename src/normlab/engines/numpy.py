"""The NumPy engine: a spec built in normlab.nn, trained with normlab.optim.SGD.

:func:`build_numpy` draws every engine's initial weights (the torch engine copies them), so
both engines start from the same point and every claim can be cross-checked.
"""

from __future__ import annotations

import numpy as np

from .. import nn, optim
from ..nn import fused
from .numpy_layers import cnn_layer
from .numpy_resnet import resnet_layer
from .spec import CNN_KINDS, RESNET_KINDS, Spec, unknown

# the BN buffers :meth:`NumpyTrainer.bn_buffers` reads (the last only on normlab's BN layers)
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked", "num_batches_skipped")


class NumpyTrainer:
    """normlab.nn model + normlab.optim.SGD.

    The trainer interface both engines offer: ``train_step``, ``forward_eval`` (which can also
    return the input of one layer, a "tap"), ``set_lr``, ``state()`` / ``load_state()`` for
    mid-run checkpoints, ``batch_norm_1d`` (a fresh BN layer of this engine) and ``close()``.
    For experiments that reach into the model (a trainer in this process, not the distributed
    one): ``bn_layers``, ``replace_layers``, ``bn_buffers``, ``forward_train``,
    ``train_step_if_finite``, ``loss_and_grad`` and ``parameter_arrays`` /
    ``load_parameter_arrays``. Arrays in and out are NumPy on both engines, so an experiment
    never branches on the engine.
    """

    engine = "numpy"

    def __init__(self, model: nn.Sequential, lr: float):
        self.model = model
        self.loss = nn.CrossEntropyLoss()
        self.opt = optim.SGD(model.parameters(), lr=lr)

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        self.model.train()
        loss = self.loss(self.model(x), y)
        self.opt.zero_grad()
        self.model.backward_params(self.loss.backward())   # nothing needs d(loss)/d(images)
        self.opt.step()
        return loss

    def set_lr(self, lr: float) -> None:
        self.opt.lr = lr

    def close(self) -> None:
        """Nothing to release (the torch trainers may hold processes)."""

    def forward_eval(self, x: np.ndarray, tap: int | None = None):
        """(logits, input of layer ``tap`` or None) in eval mode (running statistics), with
        the CNNs' BN -> ReLU -> max-pool groups fused (:mod:`normlab.nn.fused`)."""
        return fused.forward_eval(self.model, x, tap)

    def batch_norm_1d(self, num_features: int, **options) -> nn.BatchNorm1d:
        return nn.BatchNorm1d(num_features, **options)

    def bn_layers(self) -> list:
        """The model's BatchNorm layers, in order."""
        kinds = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
        return [m for m in self.model if isinstance(m, kinds)]

    def replace_layers(self, layers: list) -> None:
        """The model's layers become ``layers`` (same length); a Parameter they share with the
        old ones stays in the optimizer."""
        self.model = nn.Sequential(*layers)

    def bn_buffers(self) -> list[dict[str, np.ndarray]]:
        """Per BN layer, its :data:`BN_BUFFERS` that exist (running statistics, counters)."""
        return [{name: np.asarray(v) for name in BN_BUFFERS
                 if (v := getattr(m, name, None)) is not None} for m in self.bn_layers()]

    def forward_train(self, x: np.ndarray) -> np.ndarray:
        """Logits of a training-mode forward: batch statistics, running statistics updated, no
        gradient and no step."""
        self.model.train()
        return self.model(x)

    def train_step_if_finite(self, x: np.ndarray, y: np.ndarray) -> float:
        """One SGD step, skipped when the loss is not finite (as ``torch.amp.GradScaler``
        skips it); the training-mode forward, and BN's running-statistic update, happen anyway.
        The loss."""
        self.model.train()
        with np.errstate(invalid="ignore", over="ignore"):
            loss = self.loss(self.model(x), y)
        if np.isfinite(loss):
            self.opt.zero_grad()
            self.model.backward(self.loss.backward())
            self.opt.step()
        return float(loss)

    def loss_and_grad(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """Training-mode loss and the gradient over all parameters, flattened in
        ``parameters()`` order as float64 (no step)."""
        self.model.train()
        value = self.loss(self.model(x), y)
        self.opt.zero_grad()
        self.model.backward(self.loss.backward())
        grads = [p.grad for p in self.model.parameters()]
        return value, np.concatenate([g.ravel() for g in grads]).astype(np.float64)

    def parameter_arrays(self) -> list[np.ndarray]:
        """Copies of the model's parameters, in ``parameters()`` order."""
        return [p.data.copy() for p in self.model.parameters()]

    def load_parameter_arrays(self, values: list[np.ndarray]) -> None:
        """Overwrite the model's parameters, in ``parameters()`` order, with ``values``."""
        for p, v in zip(self.model.parameters(), values, strict=True):
            p.data[...] = v

    def state(self) -> dict[str, np.ndarray]:
        out = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        out.update({f"optim.{k}": v for k, v in self.opt.state_dict().items()})
        return out

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.model.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("model.")})
        self.opt.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("optim.")})


def trainer(spec: Spec, model: nn.Sequential, lr: float, device=None, workers: int = 1,
            sync_bn: bool = False, distributed: bool = True) -> NumpyTrainer:
    """The NumPy trainer of ``model``; the torch-only options must keep their defaults."""
    for name, value, default in (("device", device, None), ("workers", workers, 1),
                                 ("sync_bn", sync_bn, False)):
        if value != default and not (name == "device" and value == "cpu"):
            raise ValueError(f"{name}: expected {default!r} with engine 'numpy' (devices, "
                             f"workers and SyncBatchNorm are torch-engine options), "
                             f"got {value!r}")
    return NumpyTrainer(model, lr)


def build_numpy(spec: Spec, init_std: float, rng: np.random.Generator) -> nn.Sequential:
    """The NumPy-engine model; Linear weights ~ N(0, init_std^2), biases 0, BN gamma 1 beta 0."""
    layers = []
    for layer in spec:
        kind = layer[0]
        if kind == "linear":
            lin = nn.Linear(layer[1], layer[2], rng=rng)
            lin.weight.data[...] = nn.init.normal(lin.weight.shape, init_std, rng)
            lin.bias.data[...] = 0
            layers.append(lin)
        elif kind == "bn1d":
            layers.append(nn.BatchNorm1d(layer[1], eps=layer[2]))
        elif kind == "sigmoid":
            layers.append(nn.Sigmoid())
        elif kind == "relu":
            layers.append(nn.ReLU())
        elif kind == "dropout":
            # spawn: the masks get their own stream without shifting the weight draws, so nets
            # with and without dropout start from identical weights
            layers.append(nn.Dropout(layer[1], rng=rng.spawn(1)[0]))
        elif kind in CNN_KINDS:
            layers.append(cnn_layer(layer, rng))
        elif kind in RESNET_KINDS:
            layers.append(resnet_layer(layer, rng))
        else:
            raise unknown(kind)
    return nn.Sequential(*layers)


def he_scale(model: nn.Sequential) -> nn.Sequential:
    """Rescale N(0, 1) Linear weights to N(0, 2/fan_in) (He et al. 2015).

    One std for all layers shrinks or blows up the signal of a plain ReLU net with layers of
    different widths; He scaling keeps plain and BN nets comparable.
    """
    for layer in model:
        if isinstance(layer, nn.Linear):
            layer.weight.data *= np.float32(np.sqrt(2.0 / layer.weight.shape[1]))
    return model
