"""NumPy engine: modules with hand-written forward/backward, PyTorch-compatible state dicts."""

from . import init
from .activation import ReLU, Sigmoid, Tanh
from .conv import Conv2d
from .dropout import Dropout
from .flatten import Flatten
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
    freeze,
    unfreeze,
)
from .pool import AvgPool2d, MaxPool2d
from .recurrent import LSTM
from .renorm import BatchRenorm1d, BatchRenorm2d

__all__ = [
    "AvgPool2d", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "Conv2d", "CrossEntropyLoss",
    "Dropout", "Flatten", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d",
    "LSTM", "LayerNorm", "Linear", "MSELoss", "MaxPool2d", "Module", "Parameter", "ReLU",
    "Sequential", "Sigmoid", "Tanh", "init",
    "BatchRenorm1d", "BatchRenorm2d", "freeze", "unfreeze",
]
