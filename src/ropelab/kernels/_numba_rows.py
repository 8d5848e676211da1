"""Numba kernel for exact cos/sin rows: :func:`ropelab.rows.torch_rows`'s arithmetic, fused.

Imported only through :mod:`ropelab.kernels.numba_cpu`. The steps and their float32
rounding are those of :mod:`ropelab.rows` (see there why each is exact): ``|p|`` split
into three 11-bit limbs, products with the frequency's six turn limbs, 22 exact bits of
the turn, a quarter-turn reduction, ``sin``/``cos`` of the small angle (here float32
polynomials, so that the loop over frequencies vectorises; within 2e-7 of float32
``sin``/``cos``), then exact quarter swaps and the sign of ``p``. One pass writes both
rows; the torch-op version reads and writes ~50 temporaries instead.

:func:`rotate_turns_inplace` fuses the rows with an in-place rotation: each worker makes
the rows of a chunk of tokens into a small buffer of its own and rotates every head of
those tokens with them, so the rows never travel through memory (a prefill's full rows,
fresh each call, cost page faults worth a fifth of the rotation); q and k go through one
launch and share each chunk's rows.

Shapes: pos ``(N,)`` int64; limbs ``(6, R/2)`` float32; cos, sin ``(N, R/2)`` float32.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._numba import _compute, _rotate_row_inplace

__all__ = ["rotate_turns_inplace", "rotate_turns_inplace_serial", "turn_rows", "turn_rows_serial"]

_F = np.float32
_MASK = np.int64(2047)
_W11 = _F(2.0**11)
_I11 = _F(2.0**-11)
_W22 = _F(2.0**22)
_I22 = _F(2.0**-22)
_I33 = _F(2.0**-33)
_I44 = _F(2.0**-44)
_I55 = _F(2.0**-55)
_QUARTER = _F(0.25)
_FOUR = _F(4.0)
_ONE = _F(1.0)
_TWO = _F(2.0)
_TWO_PI = _F(2 * math.pi)
# rows handed to a worker at a time
_CHUNK = 64


# Taylor coefficients of sin and cos: on |angle| <= pi/4 + 2**-5 the first dropped terms
# (angle**11 / 11!, angle**12 / 12!) are below 3e-9, and a float32 Horner evaluation
# adds about one ulp; calls to sinf/cosf would keep the loop from vectorising
_S3, _S5, _S7, _S9 = (_F(c) for c in (-1 / 6, 1 / 120, -1 / 5040, 1 / 362880))
_C2, _C4, _C6, _C8, _C10 = (_F(c) for c in (-1 / 2, 1 / 24, -1 / 720, 1 / 40320, -1 / 3628800))
_HALF = _F(0.5)


@njit(inline="always")
def _row(p, limbs, factor, cos, sin, n):
    a = -p if p < 0 else p
    p0 = _F(a & _MASK)
    p1 = _F((a >> 11) & _MASK)
    p2 = _F(a >> 22)
    sign = -factor if p < 0 else factor
    for i in range(limbs.shape[1]):
        t1 = limbs[0, i]
        t2 = limbs[1, i]
        t3 = limbs[2, i]
        t4 = limbs[3, i]
        t5 = limbs[4, i]
        t6 = limbs[5, i]
        s1 = p0 * t1 + p1 * t2 + p2 * t3
        s2 = p0 * t2 + p1 * t3 + p2 * t4
        s3 = p0 * t3 + p1 * t4 + p2 * t5
        s4 = p0 * t4 + p1 * t5 + p2 * t6
        s5 = p0 * t5 + p1 * t6
        whole = (s1 - np.floor(s1 * _I11) * _W11) * _W11 + s2
        whole = whole - np.floor(whole * _I22) * _W22
        g = whole * _I22
        q = np.floor(g * _FOUR + _HALF)  # the nearest quarter (exact: g has 22 bits)
        g = g - q * _QUARTER
        rest = s3 * _I33 + (s4 * _I44 + s5 * _I55)
        q = q - np.floor(q * _QUARTER) * _FOUR
        x = (g + rest) * _TWO_PI
        x2 = x * x
        s = x + x * x2 * (_S3 + x2 * (_S5 + x2 * (_S7 + x2 * _S9)))
        c = _ONE + x2 * (_C2 + x2 * (_C4 + x2 * (_C6 + x2 * (_C8 + x2 * _C10))))
        cq = abs(q - _TWO) - _ONE
        sq = _ONE - abs(q - _ONE)
        cos[n, i] = (c * cq - s * sq) * factor
        sin[n, i] = (s * cq + c * sq) * sign


@njit(parallel=True, cache=True, nogil=True)
def turn_rows(pos, limbs, factor, cos, sin):
    """Rows of every position, in parallel over chunks of positions."""
    n = pos.shape[0]
    for chunk in prange((n + _CHUNK - 1) // _CHUNK):
        for r in range(chunk * _CHUNK, min(chunk * _CHUNK + _CHUNK, n)):
            _row(pos[r], limbs, factor, cos, sin, r)


@njit(cache=True, nogil=True)
def turn_rows_serial(pos, limbs, factor, cos, sin):
    """:func:`turn_rows` on the calling thread (a decode step's few positions)."""
    for r in range(pos.shape[0]):
        _row(pos[r], limbs, factor, cos, sin, r)



@njit(inline="always")
def _rotate_chunk(x, xs, shape, b0, b1, t0, t1, cflat, sflat, half, interleaved):
    """Rows ``t0 .. t1`` of every head of x (batch rows ``b0 .. b1``) rotated by the
    chunk's rows, walked in memory order; a tensor of no heads is left as it is."""
    B, H, T = shape
    sg = _compute(x, 1.0)
    uhalf = np.uint64(half)
    for b in range(b0, b1):
        if xs[1] <= xs[2]:  # (B, T, H, D) memory: the heads of a token are neighbours
            for t in range(t0, t1):
                for h in range(H):
                    _rotate_row_inplace(x, np.uint64(b * xs[0] + h * xs[1] + t * xs[2]), cflat, sflat,
                                        np.uint64((t - t0) * half), uhalf, sg, interleaved)
        else:
            for h in range(H):
                for t in range(t0, t1):
                    _rotate_row_inplace(x, np.uint64(b * xs[0] + h * xs[1] + t * xs[2]), cflat, sflat,
                                        np.uint64((t - t0) * half), uhalf, sg, interleaved)


@njit(inline="always")
def _turn_chunk(item, chunks, tokens, x, xs, shape, y, ys, yshape, pos, limbs, factor, interleaved):
    """Work item ``item`` (a row of ``pos`` and a chunk of its tokens): the chunk's rows,
    made once, then every row of x and of y they rotate."""
    B, _, T = shape
    half = limbs.shape[1]
    bp = item // chunks
    t0 = (item % chunks) * tokens
    t1 = min(t0 + tokens, T)
    cos = np.empty((t1 - t0, half), dtype=np.float32)
    sin = np.empty((t1 - t0, half), dtype=np.float32)
    for t in range(t0, t1):
        _row(pos[bp, t], limbs, factor, cos, sin, t - t0)
    cflat = cos.reshape(-1)
    sflat = sin.reshape(-1)
    b0, b1 = (0, B) if pos.shape[0] == 1 else (bp, bp + 1)
    _rotate_chunk(x, xs, shape, b0, b1, t0, t1, cflat, sflat, half, interleaved)
    _rotate_chunk(y, ys, yshape, b0, b1, t0, t1, cflat, sflat, half, interleaved)


@njit(parallel=True, cache=True, nogil=True)
def rotate_turns_inplace(x, xs, shape, y, ys, yshape, pos, limbs, factor, interleaved, tokens):
    """Rotate the first ``R`` features of every row of x and of y (flat, element strides
    ``xs``/``ys`` over ``shape``/``yshape`` (B, H, T), the same B and T; a y of no heads
    for x alone) in place by the exact rows of ``pos`` ``(1 or B, T)``, made from
    ``limbs`` ``(6, R/2)`` once a chunk of tokens for both; in parallel over chunks."""
    chunks = (shape[2] + tokens - 1) // tokens
    for item in prange(pos.shape[0] * chunks):
        _turn_chunk(item, chunks, tokens, x, xs, shape, y, ys, yshape, pos, limbs, factor, interleaved)


@njit(cache=True, nogil=True)
def rotate_turns_inplace_serial(x, xs, shape, y, ys, yshape, pos, limbs, factor, interleaved, tokens):
    """:func:`rotate_turns_inplace` on the calling thread (a decode step)."""
    chunks = (shape[2] + tokens - 1) // tokens
    for item in range(pos.shape[0] * chunks):
        _turn_chunk(item, chunks, tokens, x, xs, shape, y, ys, yshape, pos, limbs, factor, interleaved)
