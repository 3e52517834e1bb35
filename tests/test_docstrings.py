"""Every public name of normlab's API has a docstring (the API reference is built from them).

The rule of what is public is written once, in ``docs/_ext/public_api.py``, which also decides
what the API pages list.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _public_api():
    spec = importlib.util.spec_from_file_location("normlab_docs_public_api",
                                                  ROOT / "docs" / "_ext" / "public_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


public_api = _public_api()


@pytest.mark.parametrize("modname", public_api.PACKAGES)
def test_every_public_name_has_a_docstring(modname, request):
    if modname == "normlab.torch":
        request.getfixturevalue("torch")   # require torch (skip, or fail under REQUIRE_ALL)
    module = public_api.load(modname)
    assert public_api.public_names(module), f"{modname} lists no public names"
    assert public_api.undocumented(module) == []


def _planted_module(monkeypatch) -> types.ModuleType:
    """A module with documented and undocumented functions, classes and methods."""
    mod = types.ModuleType("planted_api")
    monkeypatch.setitem(sys.modules, mod.__name__, mod)    # dataclass looks its module up
    source = '''
from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["documented", "bare", "Layer", "Base", "Child", "Pair", "Record", "Cache"]

def documented():
    """Has one."""

def bare():
    pass

class Layer:
    """A class with a documented and an undocumented method."""
    def forward(self):
        """Has one."""
    def backward(self):
        pass
    @property
    def size(self):
        return 1

class Base:
    """A base class."""
    def step(self):
        """Documented once, here."""

class Child(Base):
    """Overrides step without repeating its docstring: inherited, so documented."""
    def step(self):
        pass

class Pair(NamedTuple):      # its generated docstring "Pair(a, b)" documents nothing
    a: int
    b: int

@dataclass
class Record:                # nor does a dataclass's "Record(x: int)"
    x: int

class Cache(NamedTuple):
    """Documented."""
    y: int
'''
    exec(compile(source, "planted_api", "exec"), mod.__dict__)
    return mod


def test_the_check_finds_planted_undocumented_names(monkeypatch):
    mod = _planted_module(monkeypatch)
    assert public_api.undocumented(mod) == [
        "planted_api.bare", "planted_api.Layer.backward", "planted_api.Layer.size",
        "planted_api.Pair", "planted_api.Record"]


def test_without_all_the_public_names_are_the_modules_own(monkeypatch):
    mod = _planted_module(monkeypatch)
    del mod.__all__
    mod.imported = Path            # imported, not defined here: not part of this API
    mod._private = lambda: None
    assert public_api.public_names(mod) == ["documented", "bare", "Layer", "Base", "Child",
                                            "Pair", "Record", "Cache"]
