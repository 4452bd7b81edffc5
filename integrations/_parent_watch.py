"""Every process a test run starts stops when the run is gone, so a killed run (a timeout, a
closed terminal) leaves no server or worker behind."""

from __future__ import annotations

import os
import threading
import time


def exit_with_parent(parent_pid: int) -> None:
    """End this process, from a daemon thread, once ``parent_pid`` is no longer its parent."""
    threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), daemon=True).start()


def _exit_when_orphaned(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os._exit(0)
