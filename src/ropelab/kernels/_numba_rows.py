"""Numba kernel for exact cos/sin rows: :func:`ropelab.rows.torch_rows`'s arithmetic, fused.

Imported only through :mod:`ropelab.kernels.numba_cpu`. The steps and their float32
rounding are those of :mod:`ropelab.rows` (see there why each is exact): ``|p|`` split
into three 11-bit limbs, products with the frequency's six turn limbs, 22 exact bits of
the turn, a quarter-turn reduction, float32 ``sin``/``cos`` of the small angle, then
exact quarter swaps and the sign of ``p``. One pass writes both rows; with ~50 float32
operations per number the torch-op version reads and writes ~50 temporaries instead.

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


@njit(inline="always")
def _row(p, limbs, factor, cos, sin, n):
    a = -p if p < 0 else p
    p0 = _F(a & _MASK)
    p1 = _F((a >> 11) & _MASK)
    p2 = _F(a >> 22)
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
        q = np.round(g * _FOUR)
        g = g - q * _QUARTER
        rest = s3 * _I33 + (s4 * _I44 + s5 * _I55)
        q = q - np.floor(q * _QUARTER) * _FOUR
        angle = (g + rest) * _TWO_PI
        c = np.cos(angle)
        s = np.sin(angle)
        cq = abs(q - _TWO) - _ONE
        sq = _ONE - abs(q - _ONE)
        co = c * cq - s * sq
        so = s * cq + c * sq
        if p < 0:
            so = -so
        cos[n, i] = co * factor
        sin[n, i] = so * factor


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
