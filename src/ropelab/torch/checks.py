"""The torch front end's one check of an integer tensor argument (positions, tokens).

Plain arguments go through :mod:`ropelab.checks`; this adds what only torch has: a
tensor whose dtype must hold integers. A float, complex or bool tensor would have its
values truncated or read as 0/1, never what was meant, so it is refused by name.
"""

from __future__ import annotations

import torch

__all__ = ["check_integer_tensor"]


def check_integer_tensor(name: str, value, *, expected: str = "a torch tensor"):
    """``value`` if it is a torch tensor of an integer dtype; else TypeError naming
    ``name`` (and, for a non-tensor, saying ``expected``: "a torch tensor or None", say)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__}")
    dtype = value.dtype
    if dtype.is_floating_point or dtype.is_complex or dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got dtype {dtype}")
    return value
