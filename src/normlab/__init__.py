"""normlab: Batch Normalization from the equations to a fast, tested layer.

``normlab.functional`` holds the pure math (one file per norm family), ``normlab.nn`` a small
NumPy engine with hand-written backward passes, ``normlab.experiments`` the reproductions of the
published claims, and ``normlab.torch`` optional extras for PyTorch users.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # save/load imported on first use so that ``import normlab`` stays light (no numpy import).
    if name in ("save", "load"):
        from . import serialization

        return getattr(serialization, name)
    raise AttributeError(f"module 'normlab' has no attribute {name!r}")
