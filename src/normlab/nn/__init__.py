"""NumPy engine: modules with hand-written forward/backward, PyTorch-compatible state dicts."""

from . import init
from .activation import ReLU, Sigmoid, Tanh
from .linear import Linear
from .loss import CrossEntropyLoss, MSELoss
from .module import Module, Parameter, Sequential
from .norm import (
    BatchNorm1d,
    BatchNorm2d,
    BatchNorm3d,
    GroupNorm,
    InstanceNorm1d,
    InstanceNorm2d,
    InstanceNorm3d,
    LayerNorm,
)

__all__ = [
    "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "CrossEntropyLoss", "GroupNorm",
    "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "LayerNorm", "Linear", "MSELoss",
    "Module", "Parameter", "ReLU", "Sequential", "Sigmoid", "Tanh", "init",
]
