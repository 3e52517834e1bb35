"""The ``normlab`` command run as a user runs it (a subprocess), at CI size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

NORMLAB = [sys.executable, "-m", "normlab.cli"]
ENV = {**os.environ, "NORMLAB_CI_SCALE": "0.02"}
QUICK = ("--quick", "--data", "digits", "--seeds", "2")


def normlab(*args, env=ENV, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([*NORMLAB, *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def run_metrics(out: Path) -> dict:
    """experiment -> run -> seed -> metrics."""
    res = json.loads((out / "results.json").read_text())
    return {name: {k: r["metrics"] for k, r in e["runs"].items()}
            for name, e in res["experiments"].items()}
