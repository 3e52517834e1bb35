"""Import directions of every part of normlab, read from the source (no imports run).

The parts, bottom up (:data:`ORDER`): ``core`` (shapes, statistics, caches: the leaf), the two
backends ``reference`` (NumPy) and ``kernels`` (numba), ``functional`` (the API that picks a
backend), ``nn`` (the NumPy engine), ``optim`` and ``serialization`` over it, ``fold`` (BN
folding for NumPy models, and the rules and weight math the torch folders share), ``torch``,
``engines`` (the experiments' models on either engine), ``runner`` (the experiments'
infrastructure), ``experiments``, ``report``, ``reproduce``, and at the top ``bench`` and ``cli``.
``data`` and the helpers ``_io``, ``_escape``, ``_checks``, ``_orphans`` are leaves;
``normlab.__main__`` (``python -m normlab``) only starts ``cli``.

Each part may import only the parts :data:`ALLOWED` lists, all of them below it; nothing imports
another module's ``_private`` name across the normalisation layers; ``torch`` never reaches into
``nn``'s private modules or names. Every ``import`` statement counts, including those inside
functions: a lazy import is still an edge, which is how the old functional <-> kernels cycle hid.
So ``fold`` never imports ``torch`` (the torch folders import ``fold``'s rules, not the other way
round; reading torch files is the fold command's job, in ``cli``), and nothing below ``cli``
imports ``experiments``, ``report``, ``reproduce``, ``bench`` or ``cli`` unless listed here.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "normlab"

# bottom up; "" is the package itself (``normlab/__init__.py``: the version, lazy save/load)
ORDER = ("_io", "_escape", "_checks", "_orphans", "data", "core", "reference", "kernels",
         "functional", "nn", "optim", "serialization", "", "fold", "torch", "engines", "runner",
         "experiments", "report", "reproduce", "bench", "cli", "__main__")
HELPERS = {"_io", "_escape", "_checks", "_orphans"}

# part -> the normlab top-level parts it may import (besides itself)
ALLOWED = {
    "_io": set(),
    "_escape": set(),
    "_checks": set(),
    "_orphans": set(),
    "data": set(),
    "core": set(),
    "reference": {"core"},
    "kernels": {"core"},
    "functional": {"core", "reference", "kernels", "_checks"},
    "nn": {"core", "functional", "kernels", "_checks"},
    "optim": {"nn", "kernels"},
    "serialization": {"_io"},
    "": {"serialization"},
    "fold": {"core", "functional", "nn", "kernels", "serialization"},
    # fold.rules/weights/report: the fold tools' pure helpers the torch fold shares
    "torch": {"core", "functional", "nn", "_checks", "_orphans", "fold"},
    # engines.torch: the experiments' torch trainers (one process, DDP workers)
    "engines": {"core", "functional", "nn", "optim", "torch", "_checks", "_orphans"},
    "runner": {"nn", "optim", "data", "engines", "_io", "_checks"},
    # fold: the cost experiment times a folded network
    "experiments": {"functional", "nn", "fold", "data", "engines", "runner"},
    "report": {"runner", "_io", "_escape"},
    "reproduce": {"", "data", "torch", "runner", "experiments", "report", "_io", "_escape",
                  "_orphans"},
    "bench": {"core", "functional", "kernels", "_io", "_escape"},
    # the top: every command may use any part below it
    "cli": set(ORDER[:ORDER.index("cli")]),
    # ``python -m normlab``
    "__main__": {"cli"},
}
# layers whose private names stay inside their own module, whoever imports them
PRIVATE = {"core", "reference", "kernels", "functional", "nn"}


def _module_name(path: Path, root: Path) -> tuple[str, bool]:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def _is_module(name: str, root: Path) -> bool:
    rel = Path(*name.split(".")[1:]) if "." in name else Path()
    base = root / rel
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports(root: Path) -> list[tuple[str, str, str | None, int]]:
    """(importing module, imported normlab module, imported name or None, line) for every
    import statement under ``root`` (the normlab package directory)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        module, is_package = _module_name(path, root)
        package = module if is_package else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [(module, a.name, None, node.lineno) for a in node.names
                          if a.name.split(".")[0] == "normlab"]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] != "normlab":
                    continue
                for a in node.names:   # "from .. import kernels" imports the module kernels
                    sub = f"{target}.{a.name}"
                    if _is_module(sub, root):
                        found.append((module, sub, None, node.lineno))
                    else:
                        found.append((module, target, a.name, node.lineno))
    return found


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def violations(root: Path) -> list[str]:
    """Every import that breaks the rules in the module docstring, as readable lines."""
    bad = []
    for importer, target, name, line in imports(root):
        src, dst = _part(importer), _part(target)
        where = f"{importer}:{line} imports {target}" + (f".{name}" if name else "")
        allowed = ALLOWED.get(src, set())
        if dst != src and dst not in allowed:
            bad.append(f"{where}: {src} may import only {sorted(allowed) or 'nothing'}")
        if name is not None and name.startswith("_") and dst in PRIVATE and target != importer:
            bad.append(f"{where}: a private name of another module")
        if src == "torch" and dst == "nn" and any(p.startswith("_") for p in target.split(".")[2:]):
            bad.append(f"{where}: torch reaches into a private module of nn")
    return bad


def test_layers_import_only_downward():
    assert violations(SRC) == []


def test_every_part_has_a_rule_and_the_rules_point_down():
    """A new top-level module or package needs a row here, and no row allows a back edge."""
    parts = {_part(m) for m, _, _, _ in imports(SRC)} | {
        p.stem if p.is_file() else p.name for p in SRC.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    assert parts - {"__main__"} <= set(ALLOWED), sorted(parts - set(ALLOWED))
    assert set(ALLOWED) == set(ORDER)
    for part, allowed in ALLOWED.items():
        assert all(ORDER.index(a) < ORDER.index(part) for a in allowed), part


def test_fold_engine_uses_no_private_nn_name():
    names = [(t, n) for m, t, n, _ in imports(SRC)
             if m == "normlab.fold.engine" and _part(t) == "nn"]
    assert names and all(not (n or "").startswith("_") for _, n in names)


@pytest.mark.parametrize("planted, rule", [
    ("kernels/batch.py", "from ..functional.batch import check_input\n"),
    ("core/shapes.py", "from ..kernels import for_array\n"),
    ("functional/batch.py", "def late():\n    from ..nn import BatchNorm1d\n"),
    ("nn/module.py", "import normlab.torch\n"),
    ("nn/renorm.py", "from .batchnorm import _RECORD_DEPTH\n"),
    ("torch/running.py", "from ..nn.batchnorm import _RECORD_DEPTH\n"),
    ("torch/fold/modules.py", "def late():\n    from ...engines.spec import mlp_spec\n"),
    ("torch/sync.py", "from ..experiments import get\n"),
    ("torch/fold/graph.py", "def late():\n    from ...engines.torch import TorchTrainer\n"),
    ("fold/engine.py", "def late():\n    from ..torch.fold import fold_bn\n"),
    ("fold/archive.py", "from ..runner.cnn import cnn_spec\n"),
    ("engines/numpy.py", "from ..runner.train import evaluate\n"),
    ("runner/base.py", "from ..experiments import registry\n"),
    ("runner/store.py", "from ..report.html import write_report\n"),
    ("experiments/paper_fig1.py", "from ..reproduce.suite import Options\n"),
    ("report/html.py", "from ..cli import app\n"),
    ("reproduce/suite.py", "from ..bench import run\n"),
    ("optim.py", "from .torch import BatchNorm1d\n"),
    ("data/__init__.py", "from ..nn import Linear\n"),
])
def test_a_planted_back_edge_is_caught(tmp_path, planted, rule):
    """The check is not vacuous: one back edge (or private import) added to a copy fails it."""
    assert violations(planted_copy(tmp_path, planted, rule)), planted


def planted_copy(tmp_path: Path, planted: str, code: str) -> Path:
    """A copy of the package with ``code`` appended to the module ``planted``."""
    root = tmp_path / "normlab"
    shutil.copytree(SRC, root, ignore=shutil.ignore_patterns("__pycache__"))
    with open(root / planted, "a") as f:
        f.write("\n" + code)
    return root


# RunContext: the run's engine, handed to make_trainer (and its one note for a NumPy-only run)
ENGINE_HOLDER = "runner/base.py"


def engine_branches(root: Path) -> list[str]:
    """Every place under ``experiments/`` or ``runner/`` that reaches a trainer's torch module
    (any ``.torch`` attribute) or compares an engine (``X.engine`` in a comparison); an
    experiment reads no ``.engine`` at all, and only :data:`ENGINE_HOLDER` compares it."""
    bad = []
    for part in ("experiments", "runner"):
        for path in sorted((root / part).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                where = f"{rel}:{getattr(node, 'lineno', '?')}"
                if isinstance(node, ast.Attribute) and node.attr == "torch":
                    bad.append(f"{where}: reaches a torch module through .torch")
                elif isinstance(node, ast.Attribute) and node.attr == "engine" \
                        and part == "experiments":
                    bad.append(f"{where}: an experiment reads the engine")
                elif isinstance(node, ast.Compare) and rel != ENGINE_HOLDER and any(
                        isinstance(o, ast.Attribute) and o.attr == "engine"
                        for o in (node.left, *node.comparators)):
                    bad.append(f"{where}: branches on the engine")
    return bad


def test_experiments_and_runner_never_branch_on_the_engine():
    assert engine_branches(SRC) == []


@pytest.mark.parametrize("planted, code", [
    ("experiments/landscape.py", "def late(trainer):\n    return trainer.engine == 'torch'\n"),
    ("experiments/rnn_norm.py", "def late(ctx):\n    return ctx.engine\n"),
    ("experiments/running_stats.py", "def late(trainer):\n    return trainer.torch.no_grad()\n"),
    ("runner/batchnorm.py", "def late(trainer):\n    return 'torch' != trainer.engine\n"),
    ("runner/train.py", "def late(trainer):\n    return trainer.torch\n"),
])
def test_a_planted_engine_branch_is_caught(tmp_path, planted, code):
    """The check is not vacuous: one branch on the engine added to a copy fails it."""
    assert engine_branches(planted_copy(tmp_path, planted, code)), planted


# Import cycles between files that are tolerated; each entry is one cycle as
# :func:`file_cycles` lists it (its files, sorted). None is.
KNOWN_CYCLES: set[tuple[str, ...]] = set()


def file_cycles(root: Path) -> list[tuple[str, ...]]:
    """Every import cycle between files under ``root``: the strongly connected components of
    the graph "module A has an import statement naming module B" (imports inside functions
    count, as in :func:`imports`), each as its sorted module names. A cycle hidden by a lazy
    import is still a cycle: neither file can be read, moved or tested without the other."""
    graph: dict[str, set[str]] = {}
    for importer, target, _, _ in imports(root):
        graph.setdefault(importer, set())
        if target != importer:
            graph[importer].add(target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(start: str) -> None:   # Tarjan's algorithm, iterative (no recursion limit)
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(tuple(sorted(component)))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_no_import_cycle_between_files():
    unexpected = [c for c in file_cycles(SRC) if c not in KNOWN_CYCLES]
    assert unexpected == [], "\n".join(" <-> ".join(c) for c in unexpected)


@pytest.mark.parametrize("planted, code, cycle", [
    ("torch/_plain.py", "def late():\n    from .frozen import FrozenBatchNorm2d\n",
     ("normlab.torch._plain", "normlab.torch.frozen")),
    ("core/shapes.py", "def late():\n    from .caches import LayerNormCache\n",
     ("normlab.core.caches", "normlab.core.shapes", "normlab.core.stats")),
    ("cli/torch_load.py", "from . import fold_files\n",
     ("normlab.cli.fold_arch", "normlab.cli.fold_files", "normlab.cli.torch_load")),
])
def test_a_planted_cycle_is_caught(tmp_path, planted, code, cycle):
    """The check is not vacuous: a lazy import back up a chain of files closes a cycle."""
    assert cycle in file_cycles(planted_copy(tmp_path, planted, code))
