"""What counts as normlab's public API, written once for the API pages and the docstring test.

A public name is one listed in its package's ``__all__``, or, in a module without ``__all__``,
a name without a leading underscore that the module defines itself (not one it imported). A
public class's public API is also its public methods and properties.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from types import ModuleType

# The packages the API reference documents, in the order of its pages.
PACKAGES = ("normlab.functional", "normlab.nn", "normlab.nn.init", "normlab.optim",
            "normlab.fold", "normlab.torch")


def public_names(module: ModuleType) -> list[str]:
    """The module's public names, in ``__all__``'s order or the order of definition."""
    listed = getattr(module, "__all__", None)
    if listed is not None:
        return list(listed)
    return [name for name, obj in vars(module).items()
            if not name.startswith("_") and getattr(obj, "__module__", None) == module.__name__]


def public_members(cls: type) -> list[str]:
    """Public methods and properties the class defines itself (inherited ones are the base's)."""
    out = []
    for name, attr in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(attr, (staticmethod, classmethod)):
            attr = attr.__func__
        if inspect.isfunction(attr) or isinstance(attr, property):
            out.append(name)
    return out


def _own_doc(obj) -> str:
    """``obj``'s docstring, without the one a NamedTuple or a dataclass writes for itself
    (its bare signature, which documents nothing)."""
    doc = (getattr(obj, "__doc__", None) or "").strip()
    if inspect.isclass(obj) and (dataclasses.is_dataclass(obj) or hasattr(obj, "_fields")) \
            and doc.startswith(f"{obj.__name__}(") and doc.endswith(")"):
        return ""
    return doc


def undocumented(module: ModuleType) -> list[str]:
    """Every public name (``module.name``, ``module.Class.method``) without a docstring.

    A name needs its own docstring; a method may inherit its base class's (an override of a
    documented ``forward`` is documented by it), as ``inspect.getdoc`` resolves it.
    """
    missing = []
    for name in public_names(module):
        obj = getattr(module, name)
        if not _own_doc(obj):
            missing.append(f"{module.__name__}.{name}")
        if inspect.isclass(obj):
            for member in public_members(obj):
                if not (inspect.getdoc(getattr(obj, member)) or "").strip():
                    missing.append(f"{module.__name__}.{name}.{member}")
    return missing


def load(name: str) -> ModuleType:
    return importlib.import_module(name)
