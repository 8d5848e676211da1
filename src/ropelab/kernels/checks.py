"""The argument checks every rotation entry point shares: tables against x, positions
against the tables.

:func:`ropelab.apply_rope` / :func:`ropelab.apply_rope_` and the torch op
(:mod:`ropelab.torch.rope_op`) check their arguments here, once, before any path of
:mod:`ropelab.kernels` runs; the kernels themselves trust what they are given.

Shapes: x ``(..., T, D)``; cos/sin broadcastable to ``(..., T, R/2)``, or with
``positions`` (integers broadcastable to ``(..., T)``) ``(P, R/2)`` tables indexed by
position. R = 2 * cos.shape[-1] <= D.
"""

from __future__ import annotations

import numpy as np

from .._optional import array_kind

__all__ = ["check_positions", "check_tables"]


def _check_pair(x, cos, sin) -> int:
    """cos and sin alike, x at least (T, D) and wide enough for them; R/2."""
    if tuple(cos.shape) != tuple(sin.shape):
        raise ValueError(f"cos and sin must have the same shape, got {tuple(cos.shape)} and {tuple(sin.shape)}")
    if len(x.shape) < 2:
        raise ValueError(f"x must be shaped (..., T, D), got shape {tuple(x.shape)}")
    if len(cos.shape) < 1:
        raise ValueError("cos and sin must be shaped (..., T, R/2), got scalars")
    half = int(cos.shape[-1])
    if half == 0 or 2 * half > int(x.shape[-1]):
        raise ValueError(
            f"tables of {half} pairs need a rotary dim {2 * half} <= the last dim of x, "
            f"got x.shape[-1]={int(x.shape[-1])}"
        )
    return half


def check_tables(x, cos, sin) -> int:
    """Check cos/sin broadcastable to x's ``(..., T, R/2)``; return R (the rotary dim)."""
    half = _check_pair(x, cos, sin)
    target = tuple(x.shape[:-1]) + (half,)
    try:
        joint = np.broadcast_shapes(tuple(cos.shape), target)
    except ValueError:
        joint = None
    if joint != target:
        raise ValueError(
            f"cos/sin of shape {tuple(cos.shape)} do not broadcast to x's (..., T, R/2) = {target}; "
            f"x has shape {tuple(x.shape)} (T={x.shape[-2]}): the tables need one row per token"
        )
    return 2 * half


def _broadcasts_to(shape: tuple, target: tuple) -> bool:
    """True when ``shape`` broadcasts to exactly ``target`` (numpy rules; cheap)."""
    if len(shape) > len(target):
        return False
    return all(n == 1 or n == m for n, m in zip(shape[::-1], target[::-1], strict=False))


def check_positions(x, cos, sin, positions, *, values: bool = True) -> None:
    """Check ``(P, R/2)`` tables indexed by integer positions broadcastable to x's ``(..., T)``.

    ``values``: also check that every position lies in ``[0, P)``, where the values can
    be read (not for jax arrays, nor for tensors that torch.compile is tracing).
    """
    if tuple(cos.shape) != tuple(sin.shape):
        raise ValueError(f"cos and sin must have the same shape, got {tuple(cos.shape)} and {tuple(sin.shape)}")
    if len(cos.shape) != 2:
        raise ValueError(
            f"with positions, cos and sin must be (P, R/2) tables indexed by position, "
            f"got shape {tuple(cos.shape)}"
        )
    _check_pair(x, cos, sin)
    dtype = getattr(positions, "dtype", None)
    kind = "numpy" if dtype is None or isinstance(positions, np.ndarray) else array_kind(positions)
    if kind == "numpy":
        positions = np.asarray(positions)
        integer = np.issubdtype(positions.dtype, np.integer)
    elif kind == "torch":
        integer = not (positions.dtype.is_floating_point or positions.is_complex()) and str(positions.dtype) != "torch.bool"
    else:
        import jax.numpy as jnp

        integer = jnp.issubdtype(positions.dtype, jnp.integer)
    if not integer:
        raise TypeError(f"positions must be integers, got dtype {positions.dtype}")
    lead = tuple(x.shape[:-1])
    if not _broadcasts_to(tuple(positions.shape), lead):
        raise ValueError(
            f"positions of shape {tuple(positions.shape)} do not broadcast to x's (..., T) = {lead}"
        )
    if not values or kind == "jax" or (positions.size == 0 if kind == "numpy" else positions.numel() == 0):
        return
    if kind == "torch":
        import torch

        if torch.compiler.is_compiling():
            return
        if positions.device.type == "cpu":  # numpy's min/max cost a fraction of torch's
            positions = positions.numpy()
            lo, hi = int(positions.min()), int(positions.max())
        else:
            lo, hi = (int(v) for v in torch.aminmax(positions))
    else:
        lo, hi = int(positions.min()), int(positions.max())
    rows = int(cos.shape[0])
    if lo < 0 or hi >= rows:
        raise ValueError(
            f"positions must lie in [0, {rows}) to index the (P={rows}, R/2) tables, "
            f"got values from {lo} to {hi}"
        )
