"""The torch front end's checks of tensor arguments: integer tensors (positions, tokens)
and padding masks.

Plain arguments go through :mod:`ropelab.checks`; this adds what only torch has: a
tensor whose dtype must hold integers, and a padding mask whose values must be 1 and 0.
A float, complex or bool tensor where integers are meant would have its values truncated
or read as 0/1, never what was meant, so it is refused by name.

Values are read only where that costs no device sync and no graph break
(:func:`is_concrete`: a CPU tensor outside ``torch.compile``); dtypes and shapes are
checked always.
"""

from __future__ import annotations

import torch

from ..checks import check_torch_integer_ops
from ..rows import host_readable

__all__ = ["check_integer_tensor", "check_padding_mask", "is_concrete"]


def is_concrete(value) -> bool:
    """True when ``value``'s values can be read without a device sync or a trace: a CPU
    tensor outside ``torch.compile`` (:func:`ropelab.rows.host_readable`)."""
    return host_readable(value, "torch")


def check_integer_tensor(name: str, value, *, expected: str = "a torch tensor"):
    """``value`` if it is a torch tensor of an integer dtype; else TypeError naming
    ``name`` (and, for a non-tensor, saying ``expected``: "a torch tensor or None", say)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__}")
    dtype = value.dtype
    if dtype.is_floating_point or dtype.is_complex or dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got dtype {dtype}")
    check_torch_integer_ops(name, dtype)
    return value


def check_padding_mask(mask, shape=None, *, name: str = "attention_mask", covers: str = "",
                       values: bool | None = None):
    """``mask`` if it is a padding mask: a ``(B, S)`` torch tensor of bool or integer
    dtype holding 1 (True) for tokens and 0 (False) for padding.

    Args:
        mask: the mask to check.
        shape: the ``(B, S)`` it must have, or None for any two-dimensional shape.
        name: the argument's name in messages.
        covers: what S counts, added to the shape message ("(cached 3 + new 2 keys)").
        values: whether to read the values (a device sync off the CPU); default
            :func:`is_concrete`.

    Raises:
        TypeError: not a torch tensor, or a floating or complex dtype (an additive
            0/-inf mask, as some libraries build, would be misread as 1/0).
        ValueError: a wrong shape, or (when the values are read) a value other than 0
            and 1.
    """
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor, got {type(mask).__name__}")
    got = tuple(mask.shape)
    if (shape is None and mask.dim() != 2) or (shape is not None and got != tuple(shape)):
        want = "(B, S)" if shape is None else f"(B, S) = ({shape[0]}, {shape[1]})"
        covers = f" {covers}" if covers else ""
        raise ValueError(f"{name} must be shaped {want}{covers}, got {got}")
    dtype = mask.dtype
    if dtype.is_floating_point or dtype.is_complex:
        raise TypeError(
            f"{name} must be a bool or integer tensor holding 1 for tokens and 0 for padding, "
            f"got dtype {dtype}; additive masks (0 to attend, -inf or a large negative number "
            f"to hide) are not accepted: pass (mask == 0) for one of those"
        )
    if dtype != torch.bool:
        check_torch_integer_ops(name, dtype)
    if (is_concrete(mask) if values is None else values) and dtype != torch.bool and mask.numel():
        bad = (mask != 0) & (mask != 1)
        if bool(bad.any()):
            row, col = (int(i) for i in bad.nonzero()[0])
            raise ValueError(
                f"{name} must hold 1 for tokens and 0 for padding only, got "
                f"{mask[row, col].item()} at row {row}, slot {col}"
            )
    return mask
