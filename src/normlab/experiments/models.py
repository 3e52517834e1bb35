"""One model description, two engines: build the same network in normlab.nn or torch.nn.

A spec is a tuple of layer tuples, e.g. ``(("linear", 784, 100), ("bn1d", 100), ("sigmoid",),
...)``. :func:`build_numpy` draws the initial weights from a seeded Generator; :func:`build_torch`
builds the torch twin and copies those weights into it (the state-dict keys are identical), so
both engines start from the same point and every claim can be cross-checked.
"""

from __future__ import annotations

import numpy as np

from .. import nn
from . import cnn, resnet

Spec = tuple[tuple, ...]


def mlp_spec(sizes: list[int], activation: str, batch_norm: bool, eps: float = 1e-5) -> Spec:
    """Linear [-> BatchNorm1d] -> activation for each hidden layer, then a Linear output.

    ``eps`` is BN's variance floor (PyTorch's 1e-5 unless a source states another). BN sits
    between the affine map and the nonlinearity, as in the paper (sec. 3.2: "we add the
    BN transform immediately before the nonlinearity").
    """
    layers: list[tuple] = []
    for n_in, n_out in zip(sizes[:-2], sizes[1:-1], strict=True):
        layers.append(("linear", n_in, n_out))
        if batch_norm:
            layers.append(("bn1d", n_out, eps))
        layers.append((activation,))
    layers.append(("linear", sizes[-2], sizes[-1]))
    return tuple(layers)


def last_index(spec: Spec, kind: str) -> int:
    """Position of the last layer of ``kind`` (e.g. the last hidden sigmoid)."""
    hits = [i for i, layer in enumerate(spec) if layer[0] == kind]
    if not hits:
        raise ValueError(f"spec: expected a {kind!r} layer, got kinds {[s[0] for s in spec]}")
    return hits[-1]


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
        elif kind in cnn.KINDS:
            layers.append(cnn.numpy_layer(layer, rng))
        elif kind in resnet.KINDS:
            layers.append(resnet.numpy_block(layer, rng))
        else:
            raise ValueError(f"spec: unknown layer kind {kind!r}")
    return nn.Sequential(*layers)


def build_torch(spec: Spec, state_dict: dict[str, np.ndarray]):
    """The torch.nn twin of ``spec`` with ``state_dict`` (from :func:`build_numpy`) loaded."""
    import torch

    layers = []
    for layer in spec:
        kind = layer[0]
        if kind == "linear":
            layers.append(torch.nn.Linear(layer[1], layer[2]))
        elif kind == "bn1d":
            layers.append(torch.nn.BatchNorm1d(layer[1], eps=layer[2]))
        elif kind == "sigmoid":
            layers.append(torch.nn.Sigmoid())
        elif kind == "relu":
            layers.append(torch.nn.ReLU())
        elif kind == "dropout":
            layers.append(torch.nn.Dropout(layer[1]))
        elif kind in cnn.KINDS:
            layers.append(cnn.torch_layer(layer))
        elif kind in resnet.KINDS:
            layers.append(resnet.torch_block(layer))
        else:
            raise ValueError(f"spec: unknown layer kind {kind!r}")
    model = torch.nn.Sequential(*layers)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()})
    return model
