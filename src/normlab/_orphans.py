"""Worker processes that never outlive their parent.

``kill -9`` of a parent gives its children no signal: they are reparented (to init or a
subreaper) and would go on computing, and writing, for nobody. :func:`exit_with_parent` starts a
daemon thread that polls the parent pid and ends the process at once when it changes -- even if
the main thread is blocked in a long computation or a collective.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

POLL_S = 0.25


def exit_with_parent(parent_pid: int, cleanup: Callable[[], None] | None = None) -> None:
    """Exit this process (after ``cleanup``) as soon as its parent ``parent_pid`` is gone."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(POLL_S)
        if cleanup is not None:
            cleanup()
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
