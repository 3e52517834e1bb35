"""Ship a finished reproduction as a reference: ``python tools/make_reference.py RESULTS.json``
writes ``src/normlab/data/reference/<size>-<data>-<engine>.json.gz`` (the trimmed form of
:func:`normlab.reproduce.reference.trim`), replacing the reference of that size, data and
engine. ``make reference`` runs the quick reproduction and ships it; ``make reference-full``
does the same for the confirmatory full size (hours on two cores), or ships an existing run's
results with ``make reference-full FULL_RESULTS=path/results.json``.

``--update`` replaces only the run's experiments in the reference of the same configuration and
keeps the others: after a code change that moves one experiment, rerun that experiment alone
(``normlab reproduce NAME --size full``) instead of the whole block. The reference's ``updates``
list says which experiments came from which run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from normlab._io import atomic_write_bytes
from normlab.reproduce.reference import decode, describe, encode, file_name, trim

FOLDER = Path(__file__).resolve().parents[1] / "src" / "normlab" / "data" / "reference"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a finished reproduction's results.json")
    parser.add_argument("--into", type=Path, default=FOLDER, help="the reference folder")
    parser.add_argument("--update", action="store_true",
                        help="replace only this run's experiments in the reference of the "
                             "same configuration, keeping the others")
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text(encoding="utf-8"))
    unfinished = [n for n, e in results.get("experiments", {}).items() if "verdict" not in e]
    if unfinished:
        parser.error(f"results: expected a finished reproduction (verdicts computed), got "
                     f"no verdict for {', '.join(unfinished)}")
    reference = trim(results)
    path = args.into / file_name(reference["key"])
    if args.update:
        if not path.is_file():
            parser.error(f"--update: expected an existing reference at {path}, got none")
        old = decode(path.read_bytes())
        if old.get("key") != reference["key"]:
            parser.error(f"--update: expected a run of the reference's configuration "
                         f"({describe(old.get('key', {}))}), got {describe(reference['key'])}")
        run = {k: reference[k] for k in ("normlab", "environment", "wall_time")}
        reference = {**old, "experiments": {**old["experiments"], **reference["experiments"]},
                     "updates": [*old.get("updates", []),
                                 {"experiments": list(reference["experiments"]), **run}]}
    data = encode(reference)
    args.into.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data, "--into")
    print(f"{path}: {describe(reference['key'])}, {len(reference['experiments'])} experiments "
          f"({', '.join(reference['experiments'])}), {len(data):,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
