"""Numba kernels for RoPE: one fused pass over memory, in place or out of place.

Imported only through :mod:`ropelab.kernels.numba_cpu`, which decides when they apply.

Shapes (after :mod:`ropelab.kernels.numba_cpu` has canonicalised the inputs):
    x, out:   flat 1-D views over the storage of ``(B, H, T, D)`` arrays with any
              non-negative strides whose last stride is 1 (element strides ``xs``, ``os``)
    cos, sin: flat 1-D views over tables, element strides ``ts`` over (B, H, T) (0 where
              the table broadcasts); with positions a ``(P, R/2)`` table and ``ts == 0``
    pos:      flat int64 positions with element strides ``ps``; the table row of a
              token is ``pos[...] * pstride`` (``pstride == 0`` when positions are absent)

Storage codes (dtype of the flat views): float32, float64, int16 = bfloat16 bits,
uint16 = float16 bits. The math runs in float32 (float64 for float64 x) without
fastmath, so the products and sums round exactly as the reference path's do.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core.errors import TypingError
from numba.extending import intrinsic, overload

__all__ = ["rope_rows_inplace", "rope_rows_inplace_serial", "rope_rows_out", "rope_rows_out_serial"]

# rows of D features handed to a worker at a time: big enough that the per-chunk index
# arithmetic vanishes, small enough that 2..64 threads balance on short inputs
_CHUNK_ROWS = 16


@intrinsic
def _bf16_to_f32(typingctx, bits):
    """bfloat16 bits (int16) -> float32: the bf16 bits are the float32's high half."""

    def codegen(context, builder, signature, args):
        wide = builder.zext(args[0], ir.IntType(32))
        return builder.bitcast(builder.shl(wide, ir.Constant(ir.IntType(32), 16)), ir.FloatType())

    return types.float32(bits), codegen


@intrinsic
def _f32_bits(typingctx, val):
    """The bits of a float32 as uint32."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(val), codegen


@intrinsic
def _f16_to_f32(typingctx, bits):
    """float16 bits (uint16) -> float32, exact (LLVM fpext; F16C where the CPU has it)."""

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(bits), codegen


@intrinsic
def _f32_to_f16(typingctx, val):
    """float32 -> float16 bits (uint16), round to nearest even (LLVM fptrunc)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))

    return types.uint16(val), codegen


def _load(arr, i):  # pragma: no cover - replaced by the overload inside jitted code
    """``arr[i]`` in the compute dtype."""


def _store(arr, i, v):  # pragma: no cover - replaced by the overload inside jitted code
    """``arr[i] = v`` rounded to the storage dtype."""


def _compute(arr, v):  # pragma: no cover - replaced by the overload inside jitted code
    """``v`` in the compute dtype of an array stored like ``arr``."""


@overload(_load)
def _load_impl(arr, i):
    dt = arr.dtype
    if dt == types.float32 or dt == types.float64:
        return lambda arr, i: arr[i]
    if dt == types.int16:
        return lambda arr, i: _bf16_to_f32(arr[i])
    if dt == types.uint16:
        return lambda arr, i: _f16_to_f32(arr[i])
    raise TypingError(f"ropelab kernels: unsupported storage dtype {dt}")


def _round_bf16(v):
    """float32 -> bfloat16 bits, round to nearest even; NaN stays a (quiet) NaN."""
    u = _f32_bits(v)
    if (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):
        return np.int16(np.uint16((u >> np.uint32(16)) | np.uint32(0x0040)))
    u = u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))
    return np.int16(np.uint16(u >> np.uint32(16)))


_round_bf16_jit = njit(_round_bf16)


@overload(_store)
def _store_impl(arr, i, v):
    dt = arr.dtype
    if dt == types.float32:

        def impl(arr, i, v):
            arr[i] = np.float32(v)

        return impl
    if dt == types.float64:

        def impl(arr, i, v):
            arr[i] = v

        return impl
    if dt == types.int16:

        def impl(arr, i, v):
            arr[i] = _round_bf16_jit(np.float32(v))

        return impl
    if dt == types.uint16:

        def impl(arr, i, v):
            arr[i] = _f32_to_f16(np.float32(v))

        return impl
    raise TypingError(f"ropelab kernels: unsupported storage dtype {dt}")


@overload(_compute)
def _compute_impl(arr, v):
    if arr.dtype == types.float64:
        return lambda arr, v: np.float64(v)
    return lambda arr, v: np.float32(v)


# Row helpers index the flat views with unsigned offsets: numba then emits no
# negative-index wraparound, and the inner loops vectorise (no per-row array slices,
# whose reference counts would be shared, atomically, between the threads).
_U2 = np.uint64(2)
_U1 = np.uint64(1)


@njit
def _rotate_row(x, xo, out, oo, cos, sin, to, half, sg, interleaved):
    """One row: ``x[xo:xo+R]`` rotated into ``out[oo:oo+R]`` (different memory)."""
    if interleaved:
        for i in range(half):
            a = _load(x, xo + _U2 * i)
            b = _load(x, xo + _U2 * i + _U1)
            c = _compute(x, cos[to + i])
            s = _compute(x, sin[to + i]) * sg
            _store(out, oo + _U2 * i, a * c - b * s)
            _store(out, oo + _U2 * i + _U1, a * s + b * c)
    else:
        for i in range(half):
            a = _load(x, xo + i)
            b = _load(x, xo + half + i)
            c = _compute(x, cos[to + i])
            s = _compute(x, sin[to + i]) * sg
            _store(out, oo + i, a * c - b * s)
            _store(out, oo + half + i, a * s + b * c)


@njit
def _rotate_row_inplace(x, xo, cos, sin, to, half, sg, interleaved):
    """One row rotated in place: loads and stores through one array, so LLVM sees
    that each pair is read before it is written and vectorises without alias checks."""
    if interleaved:
        for i in range(half):
            a = _load(x, xo + _U2 * i)
            b = _load(x, xo + _U2 * i + _U1)
            c = _compute(x, cos[to + i])
            s = _compute(x, sin[to + i]) * sg
            _store(x, xo + _U2 * i, a * c - b * s)
            _store(x, xo + _U2 * i + _U1, a * s + b * c)
    else:
        for i in range(half):
            a = _load(x, xo + i)
            b = _load(x, xo + half + i)
            c = _compute(x, cos[to + i])
            s = _compute(x, sin[to + i]) * sg
            _store(x, xo + i, a * c - b * s)
            _store(x, xo + half + i, a * s + b * c)


@njit
def _out_chunk(chunk, n, x, xs, out, os, cos, sin, ts, pos, ps, pstride, shape, half, rot, head_dim,
               interleaved, sg):
    """Rows ``chunk * _CHUNK_ROWS ...`` of x rotated into out, tail features copied."""
    B, H, T = shape
    r = chunk * _CHUNK_ROWS
    stop = min(r + _CHUNK_ROWS, n)
    # (b, h, t) of the chunk's first row, then an odometer: no division per row
    t = r % T
    h = (r // T) % H
    b = r // (T * H)
    while r < stop:
        xo = b * xs[0] + h * xs[1] + t * xs[2]
        oo = b * os[0] + h * os[1] + t * os[2]
        to = b * ts[0] + h * ts[1] + t * ts[2] + pos[b * ps[0] + h * ps[1] + t * ps[2]] * pstride
        _rotate_row(x, np.uint64(xo), out, np.uint64(oo), cos, sin, np.uint64(to), np.uint64(half),
                    sg, interleaved)
        for i in range(rot, head_dim):
            out[oo + i] = x[xo + i]
        r += 1
        t += 1
        if t == T:
            t = 0
            h += 1
            if h == H:
                h = 0
                b += 1


@njit
def _inplace_chunk(chunk, n, x, xs, cos, sin, ts, pos, ps, pstride, shape, half, interleaved, sg):
    """Rows ``chunk * _CHUNK_ROWS ...`` of x rotated in place."""
    B, H, T = shape
    r = chunk * _CHUNK_ROWS
    stop = min(r + _CHUNK_ROWS, n)
    t = r % T
    h = (r // T) % H
    b = r // (T * H)
    while r < stop:
        xo = b * xs[0] + h * xs[1] + t * xs[2]
        to = b * ts[0] + h * ts[1] + t * ts[2] + pos[b * ps[0] + h * ps[1] + t * ps[2]] * pstride
        _rotate_row_inplace(x, np.uint64(xo), cos, sin, np.uint64(to), np.uint64(half), sg, interleaved)
        r += 1
        t += 1
        if t == T:
            t = 0
            h += 1
            if h == H:
                h = 0
                b += 1


# Each entry point comes parallel (prange over chunks of rows) and serial: waking a
# thread pool costs tens of microseconds (milliseconds when another OpenMP pool, e.g.
# torch's, is spinning on the same cores), more than a decode step's whole rotation.


@njit(parallel=True, cache=True, nogil=True)
def rope_rows_out(x, xs, out, os, cos, sin, ts, pos, ps, pstride, shape, half, rot, head_dim,
                  interleaved, sign):
    """Rotate every row of ``x`` into ``out``; features ``rot:head_dim`` are copied.

    ``sign`` multiplies sin: +1 forward, -1 the inverse rotation (the gradient's).
    """
    n = shape[0] * shape[1] * shape[2]
    sg = _compute(x, sign)
    for chunk in prange((n + _CHUNK_ROWS - 1) // _CHUNK_ROWS):
        _out_chunk(chunk, n, x, xs, out, os, cos, sin, ts, pos, ps, pstride, shape, half, rot,
                   head_dim, interleaved, sg)


@njit(cache=True, nogil=True)
def rope_rows_out_serial(x, xs, out, os, cos, sin, ts, pos, ps, pstride, shape, half, rot, head_dim,
                         interleaved, sign):
    """:func:`rope_rows_out` on the calling thread (small inputs)."""
    n = shape[0] * shape[1] * shape[2]
    sg = _compute(x, sign)
    for chunk in range((n + _CHUNK_ROWS - 1) // _CHUNK_ROWS):
        _out_chunk(chunk, n, x, xs, out, os, cos, sin, ts, pos, ps, pstride, shape, half, rot,
                   head_dim, interleaved, sg)


@njit(parallel=True, cache=True, nogil=True)
def rope_rows_inplace(x, xs, cos, sin, ts, pos, ps, pstride, shape, half, interleaved, sign):
    """Rotate the first ``2 * half`` features of every row of ``x`` in place."""
    n = shape[0] * shape[1] * shape[2]
    sg = _compute(x, sign)
    for chunk in prange((n + _CHUNK_ROWS - 1) // _CHUNK_ROWS):
        _inplace_chunk(chunk, n, x, xs, cos, sin, ts, pos, ps, pstride, shape, half, interleaved, sg)


@njit(cache=True, nogil=True)
def rope_rows_inplace_serial(x, xs, cos, sin, ts, pos, ps, pstride, shape, half, interleaved, sign):
    """:func:`rope_rows_inplace` on the calling thread (small inputs)."""
    n = shape[0] * shape[1] * shape[2]
    sg = _compute(x, sign)
    for chunk in range((n + _CHUNK_ROWS - 1) // _CHUNK_ROWS):
        _inplace_chunk(chunk, n, x, xs, cos, sin, ts, pos, ps, pstride, shape, half, interleaved, sg)
