"""Worker processes end with their parent.

A worker whose parent is gone would go on training into ``--out`` (which is no longer
locked) and then wait forever on a pipe nobody reads. Two guards: on Linux the kernel
sends SIGKILL when the parent dies (``prctl(PR_SET_PDEATHSIG)``); everywhere a daemon
thread polls the parent's pid twice a second and ends the process when it changes.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

__all__ = ["die_with_parent", "watch_parent"]

PR_SET_PDEATHSIG = 1  # linux/prctl.h
POLL_SECONDS = 0.5


def _death_signal() -> bool:
    """Ask Linux to SIGKILL this process when its parent thread ends; True if it took."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def watch_parent(parent_pid: int) -> None:
    """End this process (status 1) within :data:`POLL_SECONDS` once ``parent_pid`` is no
    longer its parent."""

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="ropelab-lab-lifeline", daemon=True).start()


def die_with_parent(parent_pid: int) -> None:
    """Both guards, for a worker started by ``parent_pid`` (the parent's own pid, passed
    in: if it already died, ``os.getppid()`` would name the new parent)."""
    _death_signal()
    if os.getppid() != parent_pid:  # died before the signal was armed
        os._exit(1)
    watch_parent(parent_pid)
