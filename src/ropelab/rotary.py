"""apply_rope on any array type: numpy arrays, torch tensors and jax arrays.

Shapes: x is ``(..., T, D)``; cos and sin are broadcastable to ``(..., T, R/2)`` with
``R = 2 * cos.shape[-1] <= D`` the rotary dimension. Features past R pass through.

Layouts (see :data:`ropelab.config.LAYOUTS`):
    interleaved: pair i is ``(x[2i], x[2i+1])``
    half:        pair i is ``(x[i], x[i + R/2])``
A pair ``(a, b)`` rotated by phi is ``(a cos phi - b sin phi, a sin phi + b cos phi)``.

The arguments are checked here (:mod:`ropelab.kernels.checks`); the rotation is
:mod:`ropelab.kernels`' (a fused backend where one applies, the reference path
otherwise). No framework is imported here.
"""

from __future__ import annotations

import numpy as np

from . import kernels
from ._optional import array_kind
from .config import check_layout
from .kernels import reference
from .kernels.checks import check_positions, check_tables

__all__ = ["apply_rope", "apply_rope_", "permute_for_layout", "rotary_dim_of"]


def rotary_dim_of(cos) -> int:
    """The rotary dimension R that a cos/sin table of shape (..., R/2) serves."""
    return 2 * int(cos.shape[-1])


def _validate_x(x, cos, sin, positions, *, first: bool = True) -> str:
    """Check one array against the tables (position values only for the first); its kind."""
    kind = array_kind(x)
    if positions is None:
        check_tables(x, cos, sin)
    else:
        check_positions(x, cos, sin, positions, values=first)
    reference.compute_dtype(x)  # TypeError for a non-float x
    return kind


def apply_rope(x, cos, sin, *, layout: str = "interleaved", positions=None):
    """Rotate the first R features of ``x`` by the angles whose cos/sin are given.

    RoFormer (Su et al. 2021, arXiv:2104.09864), eq. 34, in either pairing.

    Args:
        x: ``(..., T, D)`` numpy array, torch tensor or jax array, floating point; or a
            tuple of such arrays (e.g. ``(q, k)``), all rotated by the same tables.
        cos, sin: tables broadcastable to ``(..., T, R/2)``, e.g. from
            :func:`ropelab.rope_tables` (numpy float64) or already of x's kind.
            Give one row per token to use arbitrary positions (offsets, KV-cache steps,
            packed sequences).
        layout: ``"interleaved"`` or ``"half"``.
        positions: optional integers broadcastable to ``(..., T)``; then cos and sin
            are ``(P, R/2)`` tables and token ``t`` uses row ``positions[..., t]``
            (decode steps and packed sequences need no gathered copy of the tables).

    Returns:
        An array of x's kind, shape and dtype (a tuple for a tuple ``x``). The math runs
        in float32 at least (bfloat16/float16 inputs are upcast once and rounded once).

    numpy arrays and torch CPU tensors go through the fused out-of-place kernel of
    :mod:`ropelab.kernels` when it applies (never while autograd records or
    torch.compile traces); everything else through the eager reference path.
    """
    check_layout(layout)
    xs = x if isinstance(x, tuple) else (x,)
    kinds = {_validate_x(xi, cos, sin, positions, first=i == 0) for i, xi in enumerate(xs)}
    if kinds == {"jax"}:  # no backend takes jax arrays: jit fuses the reference path
        out = tuple(reference.rotate(xi, cos, sin, layout=layout, positions=positions) for xi in xs)
        return out if isinstance(x, tuple) else out[0]
    return kernels.rope(x, cos, sin, layout=layout, positions=positions)


def apply_rope_(x, cos, sin, *, layout: str = "interleaved", positions=None):
    """In-place :func:`apply_rope` for numpy arrays and torch tensors; returns ``x``.

    One fused pass over memory (read and write each element once) where the kernel of
    :mod:`ropelab.kernels` applies, the reference path (compute, then copy back)
    otherwise. ``x`` may be a tuple ``(q, k)``: both are rotated by the same
    tables in one call, and the tuple is returned. ``positions`` as in
    :func:`apply_rope`. Autograd does not record the write; train through
    :func:`ropelab.torch.rope_op.rotate`.
    """
    check_layout(layout)
    xs = x if isinstance(x, tuple) else (x,)
    for i, xi in enumerate(xs):
        if array_kind(xi) == "jax":
            raise TypeError("jax arrays are immutable; use apply_rope (jit fuses it) instead of apply_rope_")
        _validate_x(xi, cos, sin, positions, first=i == 0)
    return kernels.rope_inplace(x, cos, sin, layout=layout, positions=positions)


def permute_for_layout(w, num_heads: int, *, src: str, dst: str, rotary_dim: int | None = None):
    """Reorder a q or k projection's output rows from one pairing to the other.

    ``w`` is a weight ``(num_heads * D, in_features)`` or bias ``(num_heads * D,)`` (any
    array kind). A checkpoint trained with ``src`` pairing gives identical attention
    scores under ``dst`` pairing once its q and k projections are permuted. Only the
    first ``rotary_dim`` rows of each head (default: all) move.
    """
    check_layout(src)
    check_layout(dst)
    if isinstance(num_heads, bool) or not isinstance(num_heads, (int, np.integer)) or num_heads < 1:
        raise ValueError(f"num_heads must be a positive integer, got {num_heads!r}")
    rows = int(w.shape[0])
    if rows % num_heads:
        raise ValueError(f"w has {rows} rows, not a multiple of num_heads={num_heads}")
    head_dim = rows // num_heads
    rotary_dim = head_dim if rotary_dim is None else rotary_dim
    if rotary_dim % 2 or not 2 <= rotary_dim <= head_dim:
        raise ValueError(f"rotary_dim must be even and in [2, head_dim={head_dim}], got {rotary_dim}")
    if src == dst:
        return w
    # half position j holds interleaved position order[j]
    order = np.concatenate([np.arange(0, rotary_dim, 2), np.arange(1, rotary_dim, 2)])
    if src == "half":  # half -> interleaved: the inverse permutation
        order = np.argsort(order)
    per_head = np.concatenate([order, np.arange(rotary_dim, head_dim)])
    index = (np.arange(num_heads)[:, None] * head_dim + per_head[None, :]).reshape(-1)
    kind = array_kind(w)
    if kind == "torch":
        import torch

        return w[torch.as_tensor(index, device=w.device)]
    return w[index]
