"""Sphinx extension: writes the API reference pages and the CLI page before the build reads.

Pages go to ``docs/api/`` (generated, not committed). Each package page lists exactly the
names of :func:`public_api.public_names` (the rule the docstring test checks), so a new public
name shows up without editing a page; the CLI page comes from the typer app's own click
objects, so it cannot drift from ``normlab --help``.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import typer
from public_api import PACKAGES, load, public_names

from normlab._io import atomic_write_text


def _title(text: str, char: str) -> list[str]:
    return [text, char * len(text), ""]


def package_page(modname: str) -> str:
    """reST for one package: its docstring, then one autodoc entry per public name."""
    module = load(modname)
    lines = [*_title(f"``{modname}``", "="), f".. automodule:: {modname}", "   :no-members:", ""]
    names = public_names(module)
    for name in names:
        obj = getattr(module, name)
        target = f"{modname}.{name}"
        if inspect.ismodule(obj):
            lines += [f"* :doc:`{obj.__name__}` (module)", ""]
        elif inspect.isclass(obj):
            lines += [f".. autoclass:: {target}", "   :members:", "   :show-inheritance:", ""]
        elif callable(obj):
            lines += [f".. autofunction:: {target}", ""]
        else:
            lines += [f".. autodata:: {target}", "   :no-value:", ""]
    bases = _shared_bases(module, names)
    if bases:
        lines += [*_title("Base classes", "-"),
                  "Where the public classes above get their shared options and methods.", ""]
        for base in bases:
            # no-index: a base may be shown on two pages (RunningOptions: nn and torch)
            lines += [f".. autoclass:: {base.__module__}.{base.__qualname__}", "   :members:",
                      "   :show-inheritance:", "   :no-index:", ""]
    return "\n".join(lines)


def _shared_bases(module, names: list[str]) -> list[type]:
    """normlab base classes of the public classes that are not public names themselves (e.g.
    ``BatchNormBase``, whose docstring holds the options BatchNorm1d/2d/3d share)."""
    public = {id(getattr(module, n)) for n in names}
    seen: dict[int, type] = {}
    for name in names:
        obj = getattr(module, name)
        if not inspect.isclass(obj):
            continue
        for base in obj.__mro__[1:]:
            if base.__module__.startswith("normlab.") and not base.__name__.startswith("_") \
                    and id(base) not in public:
                seen.setdefault(id(base), base)
    return list(seen.values())


def _cell(text) -> str:
    return " ".join(str(text or "").split())


def cli_page(root) -> str:
    """reST for the command: the group's help, then each visible command's usage, arguments
    and options, each as the command's own ``--help`` describes it (typer's click objects)."""
    top = root.context_class(root, info_name="normlab")
    lines = [*_title("The ``normlab`` command", "="),
             "Generated at build time from the command's own definition (``normlab.cli.app``); "
             "``normlab COMMAND --help`` prints the same.", "", _cell(root.help), ""]
    for name in root.list_commands(top):
        cmd = root.get_command(top, name)
        if cmd is None or cmd.hidden:
            continue
        ctx = cmd.context_class(cmd, info_name=name, parent=top)
        usage = " ".join(["normlab", name, *cmd.collect_usage_pieces(ctx)])
        lines += [*_title(f"normlab {name}", "-"), _cell(cmd.help), "",
                  ".. code-block:: text", "", f"   {usage}", ""]
        records = [p.get_help_record(ctx) for p in cmd.get_params(ctx) if p.name != "help"]
        records = [r for r in records if r is not None]      # hidden options have none
        if records:
            lines += [".. list-table::", "   :header-rows: 1", "   :widths: 30 70", "",
                      "   * - argument or option", "     - meaning"]
            for flags, help_text in records:
                lines += [f"   * - ``{_cell(flags)}``", f"     - {_cell(help_text)}"]
            lines.append("")
    return "\n".join(lines)


def _write_if_changed(path: Path, text: str) -> None:
    # Unchanged pages keep their mtime, so Sphinx's incremental build skips them.
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)


def index_page() -> str:
    """reST for api/index: one entry per package page, and the command's page."""
    lines = [*_title("API reference", "="),
             "Generated from the docstrings: each page lists every public name of its package "
             "(its ``__all__``), each with the equation or section it implements.", "",
             ".. toctree::", "   :maxdepth: 1", "", *(f"   {m}" for m in PACKAGES), "   cli", ""]
    return "\n".join(lines)


def skip_namedtuple_fields(app, what, name, obj, skip, options):
    """Leave out a NamedTuple's generated field entries ("Alias for field number 0")."""
    if (getattr(obj, "__doc__", None) or "").startswith("Alias for field number"):
        return True
    return None


def generate(app) -> None:
    out = Path(app.srcdir) / "api"
    out.mkdir(exist_ok=True)
    _write_if_changed(out / "index.rst", index_page())
    for modname in PACKAGES:
        _write_if_changed(out / f"{modname}.rst", package_page(modname))
    from normlab.cli import app as cli_app
    _write_if_changed(out / "cli.rst", cli_page(typer.main.get_command(cli_app)))


def setup(app):
    app.connect("builder-inited", generate)
    app.connect("autodoc-skip-member", skip_namedtuple_fields)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
