"""apply_rope on any array type: numpy arrays, torch tensors and jax arrays.

Shapes: x is ``(..., T, D)``; cos and sin are broadcastable to ``(..., T, R/2)`` with
``R = 2 * cos.shape[-1] <= D`` the rotary dimension. Features past R pass through.

Layouts (see :data:`ropelab.config.LAYOUTS`):
    interleaved: pair i is ``(x[2i], x[2i+1])``
    half:        pair i is ``(x[i], x[i + R/2])``
A pair ``(a, b)`` rotated by phi is ``(a cos phi - b sin phi, a sin phi + b cos phi)``.

No framework is imported here: the array's own module supplies the few operations.
"""

from __future__ import annotations

import numpy as np

from ._optional import array_kind
from .config import check_layout

__all__ = ["apply_rope", "apply_rope_", "permute_for_layout", "rotary_dim_of"]


class _Ops:
    """The handful of array operations apply_rope needs, for one array kind."""

    def __init__(self, kind: str):
        self.kind = kind
        if kind == "numpy":
            self.xp = np
        elif kind == "torch":
            import torch

            self.xp = torch
        else:
            import jax.numpy as jnp

            self.xp = jnp

    def compute_dtype(self, dtype):
        """At least float32: half-precision inputs are rotated in float32."""
        xp = self.xp
        if self.kind == "numpy":
            if not np.issubdtype(dtype, np.floating):
                raise TypeError(f"x must be a floating-point array, got dtype {dtype}")
            return np.result_type(dtype, np.float32)
        if self.kind == "torch":
            if not dtype.is_floating_point:
                raise TypeError(f"x must be a floating-point tensor, got dtype {dtype}")
            return xp.promote_types(dtype, xp.float32)
        if not xp.issubdtype(dtype, xp.floating):
            raise TypeError(f"x must be a floating-point array, got dtype {dtype}")
        return xp.promote_types(dtype, xp.float32)

    def to(self, a, dtype, like):
        """``a`` (any array kind) as this kind's array of ``dtype``, on ``like``'s device."""
        if self.kind == "numpy":
            return np.asarray(a, dtype=dtype)
        if self.kind == "torch":
            torch = self.xp
            if isinstance(a, torch.Tensor):
                return a.to(device=like.device, dtype=dtype)
            return torch.as_tensor(np.asarray(a), device=like.device).to(dtype)
        if isinstance(a, np.ndarray):
            # cast on the host first: jax without x64 would otherwise warn and truncate
            a = a.astype(np.dtype(dtype))
        return self.xp.asarray(a, dtype=dtype)

    def stack_last(self, a, b):
        if self.kind == "torch":
            return self.xp.stack((a, b), dim=-1)
        return self.xp.stack((a, b), axis=-1)

    def cat_last(self, parts):
        if self.kind == "torch":
            return self.xp.cat(parts, dim=-1)
        return self.xp.concatenate(parts, axis=-1)

    def astype(self, a, dtype):
        if self.kind == "torch":
            return a.to(dtype)
        return a.astype(dtype)


_OPS: dict[str, _Ops] = {}


def _ops(kind: str) -> _Ops:
    if kind not in _OPS:
        _OPS[kind] = _Ops(kind)
    return _OPS[kind]


def _check_shapes(x, cos, sin) -> int:
    """Validate shapes; return R (the rotary dimension)."""
    if tuple(cos.shape) != tuple(sin.shape):
        raise ValueError(f"cos and sin must have the same shape, got {tuple(cos.shape)} and {tuple(sin.shape)}")
    if len(x.shape) < 2:
        raise ValueError(f"x must be shaped (..., T, D), got shape {tuple(x.shape)}")
    if len(cos.shape) < 1:
        raise ValueError("cos and sin must be shaped (..., T, R/2), got scalars")
    half = int(cos.shape[-1])
    rotary_dim = 2 * half
    head_dim = int(x.shape[-1])
    if rotary_dim > head_dim or half == 0:
        raise ValueError(
            f"tables of {half} pairs need a rotary dim {rotary_dim} <= the last dim of x, "
            f"got x.shape[-1]={head_dim}"
        )
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
    return rotary_dim


def rotary_dim_of(cos) -> int:
    """The rotary dimension R that a cos/sin table of shape (..., R/2) serves."""
    return 2 * int(cos.shape[-1])


def _rotate(ops: _Ops, x, cos, sin, layout: str, rotary_dim: int):
    """The rotation itself, in x's dtype (already the compute dtype)."""
    half = rotary_dim // 2
    if layout == "interleaved":
        a, b = x[..., 0:rotary_dim:2], x[..., 1:rotary_dim:2]
    else:
        a, b = x[..., :half], x[..., half:rotary_dim]
    ra = a * cos - b * sin
    rb = a * sin + b * cos
    if layout == "interleaved":
        shape = tuple(ra.shape[:-1]) + (rotary_dim,)
        rotated = ops.stack_last(ra, rb).reshape(shape)
        parts = [rotated]
    else:
        parts = [ra, rb]
    if rotary_dim < x.shape[-1]:
        parts.append(x[..., rotary_dim:])
    return parts[0] if len(parts) == 1 else ops.cat_last(parts)


def _rotate_jax(x, cos, sin, layout: str, rotary_dim: int):
    """The rotation written so that XLA emits one loop fusion over x (no concatenate pass).

    Full rotary: pairs are stacked on a new axis and reshaped (a bitcast). Partial
    rotary: every feature is ``x * cos_full + partner * sin_full`` with the partner
    taken by a constant index, and a select keeps the tail exact. ``a*c + b*(-s)``
    rounds exactly as ``a*c - b*s``, so the numbers equal the other kinds' bit for bit.
    """
    import jax.numpy as jnp

    half = rotary_dim // 2
    head_dim = int(x.shape[-1])
    if rotary_dim == head_dim:
        if layout == "interleaved":
            pairs = x.reshape(tuple(x.shape[:-1]) + (half, 2))  # (..., T, R/2, 2)
            a, b = pairs[..., 0], pairs[..., 1]
            return jnp.stack((a * cos - b * sin, a * sin + b * cos), axis=-1).reshape(x.shape)
        halves = x.reshape(tuple(x.shape[:-1]) + (2, half))  # (..., T, 2, R/2)
        a, b = halves[..., 0, :], halves[..., 1, :]
        return jnp.stack((a * cos - b * sin, a * sin + b * cos), axis=-2).reshape(x.shape)
    if layout == "interleaved":
        partner = np.arange(rotary_dim) ^ 1  # 2i <-> 2i+1
        cos_full = jnp.repeat(cos, 2, axis=-1)
        sin_full = jnp.stack((-sin, sin), axis=-1).reshape(tuple(sin.shape[:-1]) + (rotary_dim,))
    else:
        partner = np.concatenate([np.arange(half, rotary_dim), np.arange(half)])
        cos_full = jnp.concatenate((cos, cos), axis=-1)
        sin_full = jnp.concatenate((-sin, sin), axis=-1)
    pad = [(0, 0)] * (cos.ndim - 1) + [(0, head_dim - rotary_dim)]
    cos_full = jnp.pad(cos_full, pad, constant_values=1)
    sin_full = jnp.pad(sin_full, pad)
    index = np.concatenate([partner, np.arange(rotary_dim, head_dim)])
    out = x * cos_full + jnp.take(x, index, axis=-1) * sin_full
    return jnp.where(np.arange(head_dim) < rotary_dim, out, x)


def _apply_reference(x, cos, sin, *, layout: str):
    """The reference path: eager array operations of x's own module (out of place)."""
    kind = array_kind(x)
    ops = _ops(kind)
    rotary_dim = _check_shapes(x, cos, sin)
    dtype = ops.compute_dtype(x.dtype)
    xc = ops.astype(x, dtype) if x.dtype != dtype else x
    c = ops.to(cos, dtype, x)
    s = ops.to(sin, dtype, x)
    rotate = _rotate_jax if kind == "jax" else lambda *a: _rotate(ops, *a)
    out = rotate(xc, c, s, layout, rotary_dim)
    return ops.astype(out, x.dtype) if out.dtype != x.dtype else out


def _broadcasts_to(shape: tuple, target: tuple) -> bool:
    """True when ``shape`` broadcasts to exactly ``target`` (numpy rules; cheap)."""
    if len(shape) > len(target):
        return False
    return all(n == 1 or n == m for n, m in zip(shape[::-1], target[::-1], strict=False))


def _check_positions(x, cos, sin, positions, *, values: bool = True) -> None:
    """Validate a (P, R/2) table indexed by integer positions broadcastable to (..., T)."""
    if tuple(cos.shape) != tuple(sin.shape):
        raise ValueError(f"cos and sin must have the same shape, got {tuple(cos.shape)} and {tuple(sin.shape)}")
    if len(cos.shape) != 2:
        raise ValueError(
            f"with positions, cos and sin must be (P, R/2) tables indexed by position, "
            f"got shape {tuple(cos.shape)}"
        )
    if len(x.shape) < 2:
        raise ValueError(f"x must be shaped (..., T, D), got shape {tuple(x.shape)}")
    half = int(cos.shape[-1])
    if half == 0 or 2 * half > int(x.shape[-1]):
        raise ValueError(
            f"tables of {half} pairs need a rotary dim {2 * half} <= the last dim of x, "
            f"got x.shape[-1]={int(x.shape[-1])}"
        )
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


def _validate_x(x, cos, sin, positions, *, first: bool = True) -> str:
    """Check one array against the tables (position values only for the first); its kind."""
    kind = array_kind(x)
    if positions is None:
        _check_shapes(x, cos, sin)
    else:
        _check_positions(x, cos, sin, positions, values=first)
    _ops(kind).compute_dtype(x.dtype)  # TypeError for a non-float x
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
    if kinds == {"jax"}:
        from .kernels import reference

        out = tuple(reference(xi, cos, sin, layout=layout, positions=positions) for xi in xs)
        return out if isinstance(x, tuple) else out[0]
    from . import kernels

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
    from . import kernels

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
