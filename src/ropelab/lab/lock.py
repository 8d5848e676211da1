"""One run per ``--out``: an OS file lock on ``<out>/.lock``, held for the whole run.

The lock is ``flock`` on an open file: the kernel drops it when the holder exits, however
it exits (``kill -9`` included), so a lock is never stale. The holder writes who it is
(pid, host, start time) into the file; a second run reads that to name the holder. Where
``fcntl`` does not exist (Windows), runs are not locked.
"""

from __future__ import annotations

import json
import os
import socket
import time

from .errors import LabError, OutInUse

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None

__all__ = ["LOCK_NAME", "OutLock", "lock_out"]

LOCK_NAME = ".lock"


class OutLock:
    """A held lock on an ``--out`` folder; :meth:`release` (or the process's end) drops it."""

    def __init__(self, fd: int | None, path: str):
        self.fd, self.path = fd, path

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.ftruncate(self.fd, 0)  # the holder's note no longer holds
            except OSError:
                pass
            os.close(self.fd)  # closing drops the flock
            self.fd = None

    def __enter__(self) -> OutLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not yet said who it is"


def lock_out(out: str) -> OutLock:
    """Take ``out``'s lock (creating ``out``); OutInUse naming the holder if another run has it."""
    path = os.path.join(out, LOCK_NAME)
    try:
        os.makedirs(out, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as err:
        raise LabError(f"cannot create {path if os.path.isdir(out) else out}: {err.strerror}") from None
    if fcntl is None:  # pragma: no cover
        return OutLock(fd, path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise OutInUse(
            f"--out {out} is in use by another ropelab lab run ({holder}); "
            "wait for it to end, or pass another --out"
        ) from None
    except OSError as err:
        os.close(fd)
        raise LabError(f"cannot lock {path}: {err.strerror}") from None
    note = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S %z")})
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, note.encode(), 0)
    except OSError:
        pass  # the lock holds without its note
    return OutLock(fd, path)
