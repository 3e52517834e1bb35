"""The ``normlab`` command. Each subcommand's work lives in its own module; this file only parses.

Bad input exits with code 2 and a one-line message (no traceback), as typer/click do for usage
errors.
"""

from __future__ import annotations

import typer

from . import __version__

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Batch Normalization: exact layers, the experiments, the tools.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"normlab {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """normlab: readable, exact, fast normalization layers and the evidence that BN works."""


if __name__ == "__main__":  # pragma: no cover
    app()
