"""Files ropelab writes (lab runs, extend results, checkpoints): atomically, once.

Every file goes to a temporary file of its own in the same folder
(``.tmp-<pid>-<random>-<name>``, created with ``O_EXCL | O_NOFOLLOW``: never an existing
file, never through a symbolic link), is flushed to disk and moved into place with
``os.replace``, so a process killed at any moment leaves the old file or the new one,
never half of one. Files are created ``0666`` less the umask, like any other output.
JSON is strict: a NaN or infinity is a ValueError, never written.

Standard library only.
"""

from __future__ import annotations

import json
import os
import secrets
from typing import Any

__all__ = ["TMP_PREFIX", "write_atomic", "write_json"]

TMP_PREFIX = ".tmp-"

_FLAGS_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def _fsync_folder(folder: str) -> None:
    """Make the rename itself durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes | str) -> None:
    """Write ``data`` (str: UTF-8) to ``path`` through a fresh temporary file and
    ``os.replace``; the folder is created if missing. OSError as the OS raises it (the
    temporary file is removed first)."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{os.path.basename(path)}")
    payload = data.encode() if isinstance(data, str) else data
    try:
        os.makedirs(folder, exist_ok=True)
        fd = os.open(tmp, _FLAGS_NEW, 0o666)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_folder(folder)


def write_json(path: str, obj: Any, *, indent: int = 1, sort_keys: bool = False) -> None:
    """``obj`` as strict JSON, atomically."""
    write_atomic(path, json.dumps(obj, indent=indent, sort_keys=sort_keys, allow_nan=False) + "\n")
