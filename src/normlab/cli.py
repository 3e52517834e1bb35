"""The ``normlab`` command. Each subcommand's work lives in its own module; this file only parses.

Bad input exits with code 2 and a one-line message (no traceback), as typer/click do for usage
errors.
"""

from __future__ import annotations

from pathlib import Path

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


@app.command()
def bench(quick: bool = typer.Option(False, "--quick", help="Fewer repetitions."),
          json_path: str = typer.Option(None, "--json", help="Also write the results here."),
          tiny: bool = typer.Option(False, "--tiny", hidden=True, help="CI-sized smoke run.")
          ) -> None:
    """Time normlab's normalisation (numba and NumPy) against the textbook code and PyTorch."""
    from .bench import main as run_bench
    run_bench(quick=quick, tiny=tiny, json_path=json_path)


@app.command()
def fold(model: Path = typer.Argument(..., help=".npz (normlab: state dict + architecture) "
                                       "or .pt (a pickled full torch module)."),
         out: Path = typer.Option(..., "-o", "--out", help="Where to write the folded model."),
         input_shape: str = typer.Option(..., "--input-shape",
                                         help="Verification input shape, e.g. 1,3,32,32."),
         seed: int = typer.Option(0, "--seed", help="Seed of the random verification input.")
         ) -> None:
    """Fold eval-mode BatchNorm into neighbouring layers and verify on a random input."""
    from .fold.command import run as run_fold
    run_fold(model, out, input_shape, seed)


if __name__ == "__main__":  # pragma: no cover
    app()
