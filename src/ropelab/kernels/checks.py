"""The argument checks every rotation entry point shares: tables against x, positions
against the tables.

:func:`ropelab.apply_rope` / :func:`ropelab.apply_rope_` and the torch op
(:mod:`ropelab.torch.rope_op`) check their arguments here, once, before any path of
:mod:`ropelab.kernels` runs; the kernels themselves trust what they are given.

Shapes: x ``(..., T, D)``; cos/sin broadcastable to ``(..., T, R/2)``, or with
``positions`` (integers broadcastable to ``(..., T)``) ``(P, R/2)`` tables indexed by
position. R = 2 * cos.shape[-1] <= D.

``out=`` buffers (:func:`check_out`) follow numpy's and torch's rules: x's kind, device,
shape and dtype, writeable, no two of their elements in one place, and no memory shared
with an input unless it is that very input (then the rotation is in place).
"""

from __future__ import annotations

import numpy as np

from .._optional import array_kind

__all__ = ["check_out", "check_positions", "check_tables", "overlap"]


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
    be read (not for jax arrays traced by jit or on an accelerator, whose rows then come
    out NaN, nor for tensors that torch.compile is tracing).
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
    if kind == "jax":
        from ..rows import host_readable

        if not values or positions.size == 0 or not host_readable(positions, "jax"):
            return  # traced: the gather gives NaN rows for a position outside the tables
        positions = np.asarray(positions)
        kind = "numpy"
    if not values or (positions.size == 0 if kind == "numpy" else positions.numel() == 0):
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


# -- out= buffers -----------------------------------------------------------------------


# numpy >= 1.25 keeps it in np.exceptions
_TOO_HARD = getattr(np, "exceptions", np).TooHardError


def _span(a) -> tuple[int, int]:
    """[first byte, last byte + 1) that tensor ``a`` may touch."""
    size = a.element_size()
    start = a.data_ptr()
    if a.numel() == 0:
        return start, start
    low = sum((n - 1) * st for n, st in zip(a.shape, a.stride(), strict=True) if st < 0)
    high = sum((n - 1) * st for n, st in zip(a.shape, a.stride(), strict=True) if st > 0)
    return start + low * size, start + (high + 1) * size


def _same_view(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return (a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
                and a.shape == b.shape and a.strides == b.strides and a.dtype == b.dtype)
    return (a.data_ptr() == b.data_ptr() and tuple(a.shape) == tuple(b.shape)
            and a.stride() == b.stride() and a.dtype == b.dtype)


def _as_numpy(t):
    """A CPU tensor's memory as a numpy view (bfloat16 as int16), for an exact overlap test."""
    t = t.detach()
    if str(t.dtype) == "torch.bfloat16":
        import torch

        t = t.view(torch.int16)
    try:
        return t.numpy()
    except (RuntimeError, TypeError):  # conjugate/negative views and the like
        return None


def overlap(a, b) -> str:
    """How two arrays of one kind share memory: ``"none"``, ``"full"`` (the same elements
    in the same places: one view of the other) or ``"partial"``.

    Exact for numpy arrays and CPU tensors; on other devices two tensors whose byte ranges
    meet count as sharing memory (as torch's own ``out=`` check does for dense tensors).
    """
    if isinstance(a, np.ndarray):
        if not np.may_share_memory(a, b):
            return "none"
        if _same_view(a, b):
            return "full"
        try:
            return "partial" if np.shares_memory(a, b, max_work=10**6) else "none"
        except _TOO_HARD:
            return "partial"
    if a.device != b.device or a.device.type == "meta" or a.numel() == 0 or b.numel() == 0:
        return "none"
    (alo, ahi), (blo, bhi) = _span(a), _span(b)
    if ahi <= blo or bhi <= alo:
        return "none"
    if _same_view(a, b):
        return "full"
    if a.device.type == "cpu":
        na, nb = _as_numpy(a), _as_numpy(b)
        if na is not None and nb is not None:
            return overlap(na, nb)
    return "partial"


def _self_overlapping(o) -> bool:
    """Whether two elements of ``o`` are one place in memory (a broadcast view)."""
    strides = o.strides if isinstance(o, np.ndarray) else o.stride()
    return any(st == 0 and n > 1 for n, st in zip(o.shape, strides, strict=True))


def _check_one_out(name: str, x, o) -> None:
    kind = array_kind(x)
    try:
        okind = array_kind(o)
    except TypeError:
        okind = None
    if okind != kind:
        raise TypeError(
            f"{name} must be a {_KIND_NAMES[kind]} like x, got {type(o).__module__}.{type(o).__qualname__}"
        )
    if kind == "torch" and o.device != x.device:
        raise ValueError(f"{name} is on {o.device} but x is on {x.device}; give a buffer on x's device")
    if tuple(o.shape) != tuple(x.shape):
        raise ValueError(f"{name} has shape {tuple(o.shape)} but x has shape {tuple(x.shape)}; "
                         "out must have x's shape")
    if o.dtype != x.dtype:
        raise TypeError(f"{name} has dtype {o.dtype} but x has dtype {x.dtype}; out must have x's dtype")
    if kind == "numpy" and not o.flags.writeable:
        raise ValueError(f"{name} is read-only; give a writeable array")
    if _self_overlapping(o):
        raise ValueError(
            f"{name} has a zero stride (strides {o.strides if kind == 'numpy' else o.stride()} for shape "
            f"{tuple(o.shape)}): several of its elements are one place in memory (a broadcast view); "
            "give a buffer with its own memory per element"
        )


_KIND_NAMES = {"numpy": "numpy array", "torch": "torch tensor", "jax": "jax array"}


def check_distinct(xs: tuple) -> None:
    """ValueError when two arrays of an in-place call share memory: each shared element
    would be rotated once per array that holds it."""
    for i in range(len(xs)):
        for j in range(i):
            how = overlap(xs[i], xs[j])
            if how != "none":
                raise ValueError(
                    f"x[{i}] shares memory with x[{j}] ({'partly' if how == 'partial' else 'it is that array'}); "
                    "rotated in place, the shared elements would turn once per array: pass each array once"
                )


def check_out(x, out) -> tuple[tuple, tuple]:
    """Check an ``out=`` buffer (or a tuple of them for a tuple ``x``) against ``x``.

    Returns ``(outs, in_place)``: the buffers as a tuple, and for each whether it is its
    own input (the same view of the same memory: the rotation is done in place). Raises
    TypeError for jax arrays (immutable), a wrong kind or dtype, or a tuple against a
    single array; ValueError for a wrong shape, device or length, a read-only or
    broadcast buffer, and memory shared other than whole (a buffer that partly overlaps
    an input or another buffer).
    """
    xs = x if isinstance(x, tuple) else (x,)
    if any(array_kind(xi) == "jax" for xi in xs):
        raise TypeError(
            "jax arrays are immutable, so apply_rope cannot write into out=; use the array it "
            "returns (under jax.jit, XLA reuses buffers itself: see donate_argnums)"
        )
    if isinstance(x, tuple):
        if not isinstance(out, tuple):
            raise TypeError(f"x is a tuple of {len(xs)} arrays, so out must be a tuple of {len(xs)} "
                            f"buffers, got {type(out).__name__}")
        if len(out) != len(xs):
            raise ValueError(f"out has {len(out)} buffers but x has {len(xs)} arrays; give one buffer per array")
        outs = out
    else:
        if isinstance(out, (tuple, list)):
            raise TypeError(f"x is one array, so out must be one buffer, got a {type(out).__name__} of {len(out)}")
        outs = (out,)
    many = len(xs) > 1
    for i, (xi, oi) in enumerate(zip(xs, outs, strict=True)):
        _check_one_out(f"out[{i}]" if many else "out", xi, oi)
    in_place = []
    for i, oi in enumerate(outs):
        name = f"out[{i}]" if many else "out"
        for j, xj in enumerate(xs):
            how = overlap(oi, xj)
            if how == "none" or (how == "full" and i == j):
                continue
            what = f"x[{j}]" if many else "x"
            raise ValueError(
                f"{name} shares memory with {what} ({'partly' if how == 'partial' else 'it is that array'}); "
                "out must be either the input itself (an in-place rotation) or memory of its own"
            )
        for j in range(i):
            if overlap(oi, outs[j]) != "none":
                raise ValueError(f"{name} shares memory with out[{j}]; give each array its own buffer")
        in_place.append(overlap(oi, xs[i]) == "full")
    return tuple(outs), tuple(in_place)
