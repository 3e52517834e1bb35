"""The README's Python examples run as written (each in a fresh interpreter), so the Quickstart
stays true when the API moves."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_the_readme_has_python_examples():
    assert BLOCKS


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_example_runs(index):
    proc = subprocess.run([sys.executable, "-c", BLOCKS[index]], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    # the Quickstart prints the loss and the state-dict keys, named as PyTorch names them
    if "state_dict" in BLOCKS[index]:
        assert "'1.running_mean'" in proc.stdout and "'1.num_batches_tracked'" in proc.stdout
