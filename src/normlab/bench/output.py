"""The ``--json`` file of ``normlab bench``: checked before the timing, written atomically."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from .._io import atomic_write_text, check_target


def check_json_path(path: Path) -> Path:
    """Refuse a ``--json`` PATH that could not be written, BEFORE the minutes of timing: a
    directory, or a folder (its nearest existing one, the rest is created at the end) where no
    file can be made. Checked by making and removing a temporary file there, which is what
    the final atomic write does (permission bits alone say nothing for root)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--json: expected a file path, got the directory {str(path)!r}")
    if path.parent.is_dir():   # no link, device or FIFO to write through
        check_target(path, "--json")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"--json: expected a path in a folder, got {str(path)!r} "
                         f"({str(folder)!r} is a file)")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".normlab-bench-", suffix=".tmp"):
            pass
    except OSError as exc:
        raise ValueError(f"--json: expected a writable place, got {str(path)!r} "
                         f"({exc.strerror or exc})") from exc
    return path


def write_json(result: dict, path: Path) -> None:
    """Write ``result`` atomically (temp file in the same folder, then os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=1), "--json")
