"""``normlab bench``: check the settings, time, print the tables, write the JSON."""

from __future__ import annotations

from pathlib import Path

from .._escape import terminal
from .output import check_json_path, write_json
from .suite import run
from .tables import mlp_line, models_table, table


def main(quick: bool = False, tiny: bool = False, json_path: Path | None = None) -> dict:
    """What ``normlab bench`` does: check the settings, run, print the table, write the JSON.

    ``--json`` and ``NORMLAB_OUTPUT_POOL`` are checked before anything is timed; a write that
    fails at the end anyway (disk full) raises ValueError after the table is printed. Lines
    holding user text (the path) are printed with ``markup=False``: rich would read a ``[/x]``
    in them as a closing tag and crash.
    """
    from rich.console import Console

    from ..kernels.outputs import pool_budget

    if json_path is not None:
        json_path = check_json_path(json_path)
    pool_budget()
    console = Console()
    # Plain progress lines, no live spinner: a refresh thread competing for the GIL while the
    # kernels release it adds milliseconds to every timed call.
    result = run(quick=quick, tiny=tiny, progress=lambda s: console.print(f"timing {s}"))
    console.print(table(result))
    console.print(f"byte model: training fwd+bwd = {result['byte_model']['train']}; "
                  f"eval = {result['byte_model']['eval']}; copy = {result['byte_model']['copy']}")
    for note in sorted({r["note"] for r in result["rows"] if r["note"]}):
        console.print(f"note: {note}")
    console.print(mlp_line(result))
    models = result.get("models", {"skipped": "not run"})
    if "skipped" in models:
        console.print(f"models: skipped ({models['skipped']})", markup=False)
    else:
        console.print(models_table(result))
    if json_path is not None:
        try:
            write_json(result, json_path)
        except OSError as exc:
            raise ValueError(f"--json: could not write {str(json_path)!r} "
                             f"({exc.strerror or exc}); the timings above were not saved"
                             ) from exc
        console.print(f"wrote {terminal(json_path)}", markup=False, highlight=False)
    return result
