"""The reference path: the rotation as eager operations of the array's own module.

It runs on every array kind (numpy arrays, torch tensors on any device, jax arrays),
is differentiable by torch's autograd and traceable by ``torch.compile`` and
``jax.jit``, and is what :mod:`ropelab.kernels` falls back to when no backend takes a
call. The tests hold every backend equal to it.

Shapes: x ``(..., T, D)``; cos/sin broadcastable to ``(..., T, R/2)``, or with
``positions`` (integers broadcastable to ``(..., T)``) a ``(P, R/2)`` table indexed by
position. R = 2 * cos.shape[-1] <= D; features past R pass through.

Layouts (see :data:`ropelab.config.LAYOUTS`):
    interleaved: pair i is ``(x[2i], x[2i+1])``
    half:        pair i is ``(x[i], x[i + R/2])``
A pair ``(a, b)`` rotated by phi is ``(a cos phi - b sin phi, a sin phi + b cos phi)``.

No framework is imported at module load: the array's own module supplies the few
operations.
"""

from __future__ import annotations

import numpy as np

from .._optional import array_kind
from ..checks import is_float_dtype
from .checks import check_tables

__all__ = ["compute_dtype", "rotate", "rotate_inplace"]


class _Ops:
    """The handful of array operations the rotation needs, for one array kind."""

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
            if not is_float_dtype(dtype):
                raise TypeError(f"x must be a floating-point array, got dtype {dtype}")
            # bfloat16 (ml_dtypes) does not promote with numpy's types: float32 for it
            return np.dtype(np.float32) if np.dtype(dtype).name == "bfloat16" else np.result_type(dtype, np.float32)
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


def compute_dtype(x):
    """The dtype x is rotated in: x's, at least float32. TypeError for a non-float x."""
    return _ops(array_kind(x)).compute_dtype(x.dtype)


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


def _host(a):
    """An integer array as numpy (torch tensors are moved to the host)."""
    if isinstance(a, np.ndarray):
        return a
    try:
        kind = array_kind(a)
    except TypeError:
        return np.asarray(a)
    if kind == "torch":
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _gather(table, positions):
    """``table[positions]`` for a (P, R/2) table of any kind and positions of any kind.

    jax positions gather in jax (numpy tables move there: traced positions cannot come
    to the host); a position outside ``[0, P)`` gives a NaN row there, never another
    row (jax would clamp it), which checked calls outside a trace refuse beforehand."""
    kind = array_kind(table)
    if kind != "jax" and not isinstance(positions, (np.ndarray, list, tuple, int)) and _is_jax(positions):
        import jax.numpy as jnp

        table, kind = jnp.asarray(table), "jax"
    if kind == "numpy":
        return table[np.asarray(_host(positions))]
    if kind == "torch":
        import torch

        return table[torch.as_tensor(_host(positions), device=table.device)]
    import jax.numpy as jnp

    positions = jnp.asarray(positions)
    rows = table.shape[0]
    inside = (positions >= 0) & (positions < rows)
    return jnp.take(table, jnp.where(inside, positions, rows), axis=0, mode="fill", fill_value=jnp.nan)


def _is_jax(a) -> bool:
    try:
        return array_kind(a) == "jax"
    except TypeError:
        return False


def rotate(x, cos, sin, *, layout: str, positions=None, inverse: bool = False):
    """x rotated, out of place: a new array of x's kind, dtype and shape (math in at
    least float32); table rows gathered first when ``positions`` is given.

    ``inverse`` rotates by the negative angle (sin negated): the transpose of the
    rotation, which is what a gradient needs.
    """
    if positions is not None:
        cos, sin = _gather(cos, positions), _gather(sin, positions)
    if inverse:
        sin = -sin
    kind = array_kind(x)
    ops = _ops(kind)
    rotary_dim = check_tables(x, cos, sin)
    dtype = ops.compute_dtype(x.dtype)
    xc = ops.astype(x, dtype) if x.dtype != dtype else x
    c = ops.to(cos, dtype, x)
    s = ops.to(sin, dtype, x)
    if kind == "jax":
        out = _rotate_jax(xc, c, s, layout, rotary_dim)
    else:
        out = _rotate(ops, xc, c, s, layout, rotary_dim)
    return ops.astype(out, x.dtype) if out.dtype != x.dtype else out


def rotate_inplace(x, cos, sin, *, layout: str, positions=None):
    """x rotated in place (numpy arrays, torch tensors): compute, then copy back. The copy
    runs under ``no_grad``, as any in-place update autograd does not record."""
    out = rotate(x, cos, sin, layout=layout, positions=positions)
    if array_kind(x) == "torch":
        import torch

        with torch.no_grad():
            x.copy_(out)
    else:
        x[...] = out
    return x
