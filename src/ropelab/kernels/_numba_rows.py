"""Numba kernel for exact cos/sin rows: :func:`ropelab.rows.torch_rows`'s arithmetic, fused.

Imported only through :mod:`ropelab.kernels.numba_cpu`. The steps and their float32
rounding are those of :mod:`ropelab.rows` (see there why each is exact): ``|p|`` split
into three 11-bit limbs, products with the frequency's six turn limbs, 22 exact bits of
the turn, a quarter-turn reduction, ``sin``/``cos`` of the small angle (here float32
polynomials, so that the loop over frequencies vectorises; within 2e-7 of float32
``sin``/``cos``), then exact quarter swaps and the sign of ``p``. One pass writes both
rows; the torch-op version reads and writes ~50 temporaries instead.

Shapes: pos ``(N,)`` int64; limbs ``(6, R/2)`` float32; cos, sin ``(N, R/2)`` float32.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

__all__ = ["turn_rows", "turn_rows_serial"]

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

