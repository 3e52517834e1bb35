"""The ``normlab`` command. Each subcommand's work lives in its own module; this file only parses.

Bad input exits with code 2 and a one-line message (no traceback), as typer/click do for usage
errors.
"""

from __future__ import annotations

import os

# The models here are small (batch 60, 100 units): a multi-threaded BLAS spends more time
# handing tiny matmuls between threads than computing them, and on a busy 2-core machine its
# spinning threads made `normlab reproduce` 10-25x slower. One BLAS thread unless the user says
# otherwise; this must happen before NumPy is first imported, which is why it sits here.
# (PyTorch's own thread pool is left alone: `normlab bench` compares against its default.)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import typer  # noqa: E402

from .. import __version__  # noqa: E402
from ..runner.design import FIRST_CONFIRMATORY_SEED  # noqa: E402

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
    from ..bench import main as run_bench
    try:
        run_bench(quick=quick, tiny=tiny, json_path=json_path)
    except (ValueError, MemoryError) as exc:   # --json, NORMLAB_* settings, a failed write
        from .._escape import one_line

        text = str(exc) or type(exc).__name__
        typer.echo(one_line(f"Error: {text.splitlines()[0]}"), err=True)
        raise typer.Exit(2) from None


@app.command()
def fold(model: Path = typer.Argument(..., help=".npz (normlab: state dict + architecture), "
                                       ".pt/.pth (a state dict with --arch; with --trust-model "
                                       "also a pickled full torch module or TorchScript) or, "
                                       "with --trust-model, .pt2 (torch.export.save)."),
         out: Path = typer.Option(..., "-o", "--out", help="Where to write the folded model "
                                  "(same format as MODEL; with --arch the folded FULL module, "
                                  "torch.save(model))."),
         input_shape: str = typer.Option(..., "--input-shape",
                                         help="Verification input shape, e.g. 1,3,32,32."),
         seed: int = typer.Option(0, "--seed", help="Seed of the random verification input."),
         arch: str = typer.Option(None, "--arch", help="MODEL is a torch state dict of this "
                                  "architecture: package.module:callable (called with no "
                                  "arguments) or paper-fig1 | paper-fig1-digits | init-scale | "
                                  "conv-bn | conv-bn-digits."),
         trust_model: bool = typer.Option(
             False, "--trust-model",
             help="MODEL is a file you trust: also use the torch loaders that can run code "
                  "stored in it, torch.load(weights_only=False) for a pickled full module, "
                  "torch.jit.load for TorchScript and torch.export.load for .pt2. A malicious "
                  "file can then run any command as you. Without it fold reads only .npz "
                  "(no pickles) and state dicts with --arch (torch.load weights_only=True).")
         ) -> None:
    """Fold eval-mode BatchNorm into neighbouring layers and verify on a random input."""
    from .fold_command import run as run_fold
    run_fold(model, out, input_shape, seed, arch, trust_model)


@app.command()
def reproduce(names: list[str] = typer.Argument(None, help="Experiments (default: all)."),
              size: str = typer.Option(None, "--size", help="quick | full | paper: fewer steps "
                                       "(quick), what 2 CPU cores run in minutes (full, the "
                                       "default), or the closest to each source that one GPU "
                                       "runs in about an hour (paper; see the docs)."),
              quick: bool = typer.Option(False, "--quick", help="Same as --size quick."),
              data: str = typer.Option("mnist5k", "--data",
                                       help="mnist5k | digits | fashion-mnist | mnist:DIR"),
              data_dir: Path = typer.Option(None, "--data-dir",
                                            help="Where the fashion-mnist IDX files are."),
              engine: str = typer.Option("numpy", "--engine", help="numpy | torch"),
              out: str = typer.Option("runs/latest", "--out", help="Output folder."),
              seed: int = typer.Option(FIRST_CONFIRMATORY_SEED, "--seed",
                                       help="First seed of weights and batches (default: the "
                                       "confirmatory block, 1000-1004; seeds 0-9 and pilots "
                                       "are exploratory)."),
              seeds: int = typer.Option(None, "--seeds", help="How many seeds (seed, seed+1, "
                                        "...): every claim is a 95% interval over them. "
                                        "Default 3 at quick size, else 5."),
              jobs: int = typer.Option(None, "--jobs", help="Worker processes (default: one "
                                       "per core)."),
              device: str = typer.Option(None, "--device", help="--engine torch: cpu | cuda | "
                                         "auto (CUDA when present). Deterministic settings, "
                                         "TF32 off; stated in the report."),
              workers: int = typer.Option(1, "--workers", help="--engine torch: train each run "
                                          "with DistributedDataParallel over this many "
                                          "processes (1, 2 or 4); BN statistics per worker "
                                          "unless --sync-bn."),
              sync_bn: bool = typer.Option(False, "--sync-bn", help="With --workers: BN over "
                                           "the whole batch (normlab's SyncBatchNorm)."),
              steps_scale: float = typer.Option(None, "--steps-scale", hidden=True,
                                                help="Extra step multiplier (CI).")) -> None:
    """Reproduce published BN claims over seeds (resumable); writes results.json and
    report.html."""
    from .reproduce_command import reproduce as run_reproduce
    run_reproduce(names=names or [], quick=quick, size=size, data_spec=data, data_dir=data_dir,
                  engine=engine, out=out, seed=seed, seeds=seeds, jobs=jobs, device=device,
                  workers=workers, sync_bn=sync_bn, steps_scale=steps_scale)


@app.command("list")
def list_(ledger: bool = typer.Option(False, "--ledger", help="Instead: every statement of "
                                      "the study notes and the experiment part that tests it."),
          as_json: bool = typer.Option(False, "--json", help="With --ledger: a JSON list.")
          ) -> None:
    """List the experiments with their sources and claims (or, --ledger, the notes'
    statements)."""
    if as_json and not ledger:
        from .reproduce_command import _fail
        _fail("--json: expected together with --ledger, got --json alone")
    if ledger:
        from .ledger_command import print_ledger
        print_ledger(as_json)
        return
    from .reproduce_command import list_experiments
    list_experiments()


@app.command()
def report(out: str = typer.Argument(..., help="Folder with results.json."),
           markdown: str = typer.Option(None, "--markdown", help="Also write the verdict and "
                                         "published-vs-measured tables as Markdown here "
                                         "(for RESULTS.md).")) -> None:
    """Rebuild figures, metrics.csv and report.html from OUT/results.json."""
    from .reproduce_command import rebuild_report
    rebuild_report(out, markdown)
