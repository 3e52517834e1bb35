"""The README stays short (what normlab is, the two commands with the demo's measured time, a
pointer to the documentation), and the Python examples of the README and of the guide pages it
points to run as written (each in a fresh interpreter), so the Quickstart stays true when the
API moves. Every section moved out of the README is a page or a section of the guide."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GUIDE = ROOT / "docs" / "guide"
PAGES = [README, *sorted(GUIDE.glob("*.md"))]
BLOCKS = [(p.relative_to(ROOT).as_posix(), b) for p in PAGES
          for b in re.findall(r"```python\n(.*?)```", p.read_text(), re.S)]
# the README's sections before issue 29 moved them into the guide
MOVED = ("Quickstart (Python)", "What is inside", "The command line", "The experiments", "Sizes",
         "Semantics", "Guarantees", "Real torch models (timm and torchvision)",
         "Scale-out: devices and several processes", "Speed", "The experiments' models",
         "Development", "Architecture")


def test_the_readme_is_short_and_says_what_normlab_is_and_how_to_start():
    text = README.read_text()
    assert len(text.splitlines()) <= 60
    assert re.search(r"^make demo +# ", text, re.M) and re.search(r"^make test +# ", text, re.M)
    # the demo's measured time, and where to read on
    assert re.search(r"Measured on .*?: \d+ min \d+ s wall", text, re.S)
    assert "`make docs`" in text and "site/index.html" in text
    assert [h for h in re.findall(r"^## (.*)$", text, re.M)] == ["Documentation"]


def test_every_moved_section_is_in_the_guide():
    headings = {h.strip() for p in GUIDE.glob("*.md")
                for h in re.findall(r"^#{1,3} (.*)$", p.read_text(), re.M)}
    assert [s for s in MOVED if s not in headings] == []


def test_the_guide_has_python_examples():
    assert any(path.startswith("docs/guide/") for path, _ in BLOCKS)


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[p for p, _ in BLOCKS])
def test_python_example_runs(index):
    proc = subprocess.run([sys.executable, "-c", BLOCKS[index][1]], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    # the Quickstart prints the loss and the state-dict keys, named as PyTorch names them
    if "state_dict" in BLOCKS[index][1]:
        assert "'1.running_mean'" in proc.stdout and "'1.num_batches_tracked'" in proc.stdout
