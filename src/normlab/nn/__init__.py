"""NumPy engine: modules with hand-written forward/backward, PyTorch-compatible state dicts."""

from . import init, sample_norms
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
    InstanceNorm1d,
    InstanceNorm2d,
    InstanceNorm3d,
    freeze,
    unfreeze,
)
from .pool import AvgPool2d, MaxPool2d
from .recurrent import LSTM
from .renorm import BatchRenorm1d, BatchRenorm2d
from .sample_norms import *  # noqa: F403 -- the per-sample norms, listed once in its __all__

__all__ = [
    "AvgPool2d", "Conv2d", "CrossEntropyLoss", "Dropout", "Flatten", "LSTM", "Linear",
    "MSELoss", "MaxPool2d", "Module", "Parameter", "ReLU", "Sequential", "Sigmoid", "Tanh",
    "init", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "InstanceNorm1d", "InstanceNorm2d",
    "InstanceNorm3d", "BatchRenorm1d", "BatchRenorm2d", "freeze", "unfreeze",
    *sample_norms.__all__,
]
