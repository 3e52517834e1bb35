"""NumPy engine: modules with hand-written forward/backward, PyTorch-compatible state dicts."""

from . import init, norm
from .activation import ReLU, Sigmoid, Tanh
from .conv import Conv2d
from .dropout import Dropout
from .flatten import Flatten
from .linear import Linear
from .loss import CrossEntropyLoss, MSELoss
from .module import Module, Parameter, Sequential
from .norm import *  # noqa: F403 -- the normalisation layers, listed once in norm.__all__
from .pool import AvgPool2d, MaxPool2d
from .recurrent import LSTM
from .renorm import BatchRenorm1d, BatchRenorm2d

__all__ = [
    "AvgPool2d", "Conv2d", "CrossEntropyLoss", "Dropout", "Flatten", "LSTM", "Linear",
    "MSELoss", "MaxPool2d", "Module", "Parameter", "ReLU", "Sequential", "Sigmoid", "Tanh",
    "init", "BatchRenorm1d", "BatchRenorm2d", *norm.__all__,
]
