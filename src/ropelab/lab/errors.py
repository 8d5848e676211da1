"""How the lab fails: errors the user reads, files it refuses, training that diverged.

:class:`LabError` is what ``ropelab lab`` prints as ``ropelab lab: error: ...`` (exit 1;
:class:`OutInUse`, a bad argument, exits 2). :class:`BadFile` is a file read back that
is not what the run expects: the caller falls back (an earlier checkpoint, training or
evaluating again) and says so in one line through :func:`warn`.
"""

from __future__ import annotations

import sys

__all__ = ["BadFile", "LabError", "NonFiniteLoss", "OutInUse", "warn", "write_error"]


class LabError(Exception):
    """An error the user reads as one line; ``code`` is the exit status."""

    code = 1


class OutInUse(LabError):
    """``--out`` is locked by another run."""

    code = 2


class BadFile(Exception):
    """A file read back is unreadable, malformed, or does not fit the run."""

    def __init__(self, path: str, reason: str):
        super().__init__(path, reason)
        self.path, self.reason = path, reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class NonFiniteLoss(Exception):
    """The training loss became NaN or infinite at ``step`` (1-based)."""

    def __init__(self, step: int, value: float):
        super().__init__(step, value)
        self.step, self.value = step, value

    def __str__(self) -> str:
        return f"loss {self.value} at step {self.step}"


def write_error(path: str, err: OSError) -> LabError:
    """The LabError for a failed write of ``path``."""
    return LabError(f"cannot write {path}: {err.strerror or err}")


def warn(message: str) -> None:
    """One line on stderr: something read back was refused and what the lab does instead."""
    print(f"ropelab lab: {message}", file=sys.stderr, flush=True)
