"""Triton kernel for RoPE on GPUs: q and k in one launch, cos/sin loaded once per token.

Imported only through :mod:`ropelab.kernels.triton_gpu`, which decides when it applies
(CUDA tensors, triton installed). One program per token ``(b, t)``: it forms that token's
cos/sin row once and rotates every head of q, then every head of k, a block of heads at
a time. The row is either loaded (from tables broadcast over batch and time, or the
table row a position names, NaN for a position outside the table, never a read past
it), or computed in the program from the token's integer position and the turn limbs of
the frequencies (:mod:`ropelab.rows`' exact integer-turn arithmetic, the same steps in
float32: within 3e-7 of the true cos and sin at every ``|p| < 2**31``; NaN beyond
:data:`ropelab.rows.MAX_EXACT_POSITION`), so no table indexed by position is needed; in place, or into
fresh outputs or given buffers with the features past the rotary dim copied. Math in
float32, stored in the input's dtype (float32, bfloat16, float16).

Triton's interpreter (``TRITON_INTERPRET=1``) runs the same kernel on CPU tensors: that
is how the tests hold it to the reference path on machines without a GPU.

Shapes (canonicalised by :func:`rope`): x ``(B, H, T, D)`` with unit stride over D;
cos/sin ``(P, R/2)`` rows picked by ``positions`` broadcast to ``(B, 1, T)``, or tables
broadcast to ``(B, 1, T, R/2)`` (one row per token, the same for every head), or turn
limbs ``(6, R/2)`` with ``positions``.
"""

from __future__ import annotations

import triton
import triton.language as tl

from ..rows import LIMBS, MAX_EXACT_POSITION

__all__ = ["DTYPES", "rope", "rows"]

#: storage dtypes (names of torch dtypes) the kernel reads and writes
DTYPES = ("float32", "bfloat16", "float16")

# heads rotated per block of a program (more heads loop)
_MAX_BLOCK_H = 16


@triton.jit
def _rotate_heads(x, out, H, sx_b, sx_h, sx_t, so_b, so_h, so_t, b, t, c, s, ia, ib, mi, rest, mr,
                  HALF: tl.constexpr, BLOCK_H: tl.constexpr, COPY_REST: tl.constexpr):
    """Rotate the H heads of token (b, t) of x into out (which may be x itself)."""
    hs = tl.arange(0, BLOCK_H)
    for h0 in range(0, H, BLOCK_H):
        h = (h0 + hs).to(tl.int64)
        mh = h < H
        m2 = mh[:, None] & mi[None, :]
        src = x + b * sx_b + t * sx_t + h[:, None] * sx_h
        dst = out + b * so_b + t * so_t + h[:, None] * so_h
        a = tl.load(src + ia[None, :], mask=m2, other=0.0).to(tl.float32)
        bb = tl.load(src + ib[None, :], mask=m2, other=0.0).to(tl.float32)
        tl.store(dst + ia[None, :], (a * c[None, :] - bb * s[None, :]).to(out.dtype.element_ty), mask=m2)
        tl.store(dst + ib[None, :], (a * s[None, :] + bb * c[None, :]).to(out.dtype.element_ty), mask=m2)
        if COPY_REST:  # out of place with partial rotary: the rest passes through
            mrest = mh[:, None] & mr[None, :]
            v = tl.load(src + 2 * HALF + rest[None, :], mask=mrest, other=0.0)
            tl.store(dst + 2 * HALF + rest[None, :], v, mask=mrest)


@triton.jit
def _sin_cos(x):
    """sin and cos of a float32 angle within +-0.82 rad: Taylor polynomials to x**13 and
    x**14 (truncation below 2e-11), the same float32 steps under the interpreter and on
    a GPU, whatever its sin/cos instructions."""
    x2 = x * x
    sp = -1.0 / 39916800.0
    sp = sp * x2 + 1.0 / 362880.0
    sp = sp * x2 - 1.0 / 5040.0
    sp = sp * x2 + 1.0 / 120.0
    sp = sp * x2 - 1.0 / 6.0
    sn = x + x * (x2 * sp)
    cp = 1.0 / 479001600.0
    cp = cp * x2 - 1.0 / 3628800.0
    cp = cp * x2 + 1.0 / 40320.0
    cp = cp * x2 - 1.0 / 720.0
    cp = cp * x2 + 1.0 / 24.0
    cp = cp * x2 - 0.5
    cs = 1.0 + x2 * cp
    return sn, cs


@triton.jit
def _exact_row(p, limbs, i, mi, HALF: tl.constexpr):
    """cos, sin float32 ``(BLOCK_HALF,)`` of ``p * inv_freq`` for one integer position
    ``p`` (int64) from the frequencies' turn limbs ``(6, HALF)`` (ropelab.rows: every
    product and sum of three below 2**24, so the fraction of a turn is exact to 22 bits)."""
    a = tl.abs(p)
    p0 = (a & 2047).to(tl.float32)  # |p| in 11-bit limbs, weights 1, 2**11, 2**22
    p1 = ((a >> 11) & 2047).to(tl.float32)
    p2 = (a >> 22).to(tl.float32)
    t1 = tl.load(limbs + i, mask=mi, other=0.0)  # limb j weighs 2**(-11 j)
    t2 = tl.load(limbs + HALF + i, mask=mi, other=0.0)
    t3 = tl.load(limbs + 2 * HALF + i, mask=mi, other=0.0)
    t4 = tl.load(limbs + 3 * HALF + i, mask=mi, other=0.0)
    t5 = tl.load(limbs + 4 * HALF + i, mask=mi, other=0.0)
    t6 = tl.load(limbs + 5 * HALF + i, mask=mi, other=0.0)
    s1 = p0 * t1 + p1 * t2 + p2 * t3
    s2 = p0 * t2 + p1 * t3 + p2 * t4
    s3 = p0 * t3 + p1 * t4 + p2 * t5
    s4 = p0 * t4 + p1 * t5 + p2 * t6
    s5 = p0 * t5 + p1 * t6
    whole = (s1 - tl.floor(s1 * (1.0 / 2048.0)) * 2048.0) * 2048.0 + s2
    whole = whole - tl.floor(whole * (1.0 / 4194304.0)) * 4194304.0
    g = whole * (1.0 / 4194304.0)  # the turn's first 22 bits, in [0, 1), exact
    q = tl.floor(g * 4.0 + 0.5)  # nearest quarter turn, 0..4
    g = g - q * 0.25  # within +-1/8, exact
    rest = s3 * (1.0 / 8589934592.0) + (s4 * (1.0 / 17592186044416.0) + s5 * (1.0 / 36028797018963968.0))
    q = q - tl.floor(q * 0.25) * 4.0  # 4 -> 0
    sn, cs = _sin_cos((g + rest) * 6.2831854820251465)  # float32(2 pi)
    cq = tl.abs(q - 2.0) - 1.0  # cos and sin of q quarter turns: exact 0, +-1
    sq = 1.0 - tl.abs(q - 1.0)
    c = cs * cq - sn * sq
    s = sn * cq + cs * sq
    s = tl.where(p < 0, -s, s)  # a negative position turns the other way
    return c, s


@triton.jit
def _rows_kernel(pos, limbs, cos, sin, n_rows, factor, HALF: tl.constexpr, BLOCK_HALF: tl.constexpr):
    """Row ``r`` of cos and sin ``(N, HALF)``: position ``pos[r]``'s, times ``factor``
    (NaN past the exact range ``+-n_rows``)."""
    r = tl.program_id(0).to(tl.int64)
    i = tl.arange(0, BLOCK_HALF)
    mi = i < HALF
    p = tl.load(pos + r).to(tl.int64)
    c, s = _exact_row(p, limbs, i, mi, HALF)
    inside = (p >= -n_rows) & (p <= n_rows)
    tl.store(cos + r * HALF + i, tl.where(inside, c * factor, float("nan")), mask=mi)
    tl.store(sin + r * HALF + i, tl.where(inside, s * factor, float("nan")), mask=mi)


@triton.jit
def _rope_kernel(q, k, q_out, k_out, cos, sin, pos, T, HQ, HK,
                 sq_b, sq_h, sq_t, sk_b, sk_h, sk_t, oq_b, oq_h, oq_t, ok_b, ok_h, ok_t,
                 c_b, c_t, c_p, p_b, p_t, n_rows, sign, factor,
                 HALF: tl.constexpr, REST: tl.constexpr, BLOCK_HALF: tl.constexpr,
                 BLOCK_REST: tl.constexpr, BLOCK_H: tl.constexpr, INTERLEAVED: tl.constexpr,
                 HAS_POS: tl.constexpr, EXACT: tl.constexpr, COPY_REST: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    b = pid // T
    t = pid % T
    i = tl.arange(0, BLOCK_HALF)
    mi = i < HALF
    if EXACT:  # computed from the position (cos holds the turn limbs)
        p = tl.load(pos + b * p_b + t * p_t).to(tl.int64)
        c, s = _exact_row(p, cos, i, mi, HALF)
        inside = (p >= -n_rows) & (p <= n_rows)  # n_rows: the largest exact |p|
        c = tl.where(inside, c * factor, float("nan"))
        s = tl.where(inside, s * (factor * sign), float("nan"))
    else:
        if HAS_POS:  # the table's row named by the position; outside the table: NaN
            p = tl.load(pos + b * p_b + t * p_t).to(tl.int64)
            inside = (p >= 0) & (p < n_rows)
            row = tl.where(inside, p, 0) * c_p
            c = tl.load(cos + row + i, mask=mi, other=0.0).to(tl.float32)
            s = tl.load(sin + row + i, mask=mi, other=0.0).to(tl.float32) * sign
            c = tl.where(inside, c, float("nan"))
            s = tl.where(inside, s, float("nan"))
        else:
            row = b * c_b + t * c_t
            c = tl.load(cos + row + i, mask=mi, other=0.0).to(tl.float32)
            s = tl.load(sin + row + i, mask=mi, other=0.0).to(tl.float32) * sign
    if INTERLEAVED:
        ia = 2 * i
        ib = 2 * i + 1
    else:
        ia = i
        ib = i + HALF
    rest = tl.arange(0, BLOCK_REST)
    mr = rest < REST
    _rotate_heads(q, q_out, HQ, sq_b, sq_h, sq_t, oq_b, oq_h, oq_t, b, t, c, s, ia, ib, mi, rest, mr,
                  HALF, BLOCK_H, COPY_REST)
    _rotate_heads(k, k_out, HK, sk_b, sk_h, sk_t, ok_b, ok_h, ok_t, b, t, c, s, ia, ib, mi, rest, mr,
                  HALF, BLOCK_H, COPY_REST)


def _as4(x):
    """x ``(..., T, D)`` as a 4-D view ``(B, H, T, D)`` (leading dims padded, or None when
    more than two of them would need merging)."""
    while x.dim() < 4:
        x = x.unsqueeze(0)
    return x if x.dim() == 4 else None


def _token_strides(t, shape):
    """Element strides over (B, T) of ``t`` broadcast to ``shape`` = (B, H, T, ...), or
    None when it differs between heads (the kernel reads one row per token)."""
    import torch

    try:
        t = torch.broadcast_to(t, shape)
    except RuntimeError:
        return None
    if shape[1] > 1 and t.stride(1) != 0:
        return None
    return t.stride(0), t.stride(2)


def rope(xs: tuple, cos, sin, *, layout: str, positions=None, inverse: bool = False, inplace: bool = False,
         outs: tuple | None = None, limbs=None, attention_factor: float = 1.0):
    """Rotate each tensor of ``xs`` (q, or q and k) in one launch; the outputs (``xs``
    themselves when ``inplace``, ``outs`` when given: buffers of each x's shape and dtype
    with memory of their own), or None when the kernel does not apply.

    It applies to tensors of :data:`DTYPES` on one device, shaped ``(..., T, D)`` with at
    most four dims and a unit stride over D, sharing B and T; float32 tables whose rows
    are the same for every head; integer positions. With ``positions``, cos/sin are
    ``(P, R/2)`` tables and a position outside ``0..P-1`` rotates its token to NaN.
    Shapes and values are the caller's to check (:func:`ropelab.apply_rope` does).

    ``limbs``: instead of tables (cos and sin None), the float32 turn limbs ``(6, R/2)``
    of the frequencies (:func:`ropelab.rows.limbs_for`) on x's device, with integer
    ``positions``: each token's cos/sin (times ``attention_factor``) are computed from
    its position in the kernel, exact at any ``|p| <=``
    :data:`~ropelab.rows.MAX_EXACT_POSITION` (NaN beyond).
    """
    import torch

    if limbs is not None:
        if positions is None or limbs.dtype != torch.float32 or limbs.dim() != 2 or limbs.shape[0] != LIMBS:
            return None
        cos = sin = limbs.contiguous()

    if not 1 <= len(xs) <= 2:
        return None
    views = [_as4(x) for x in xs]
    if any(v is None or str(v.dtype).removeprefix("torch.") not in DTYPES or v.stride(-1) != 1 for v in views):
        return None
    device = views[0].device
    if any(v.device != device for v in views) or cos.device != device or sin.device != device:
        return None
    B, _, T, D = views[0].shape
    if B * T == 0 or any(v.shape[0] != B or v.shape[2] != T or v.shape[3] != D for v in views):
        return None
    if cos.dtype != torch.float32 or sin.dtype != torch.float32 or cos.shape != sin.shape or cos.stride(-1) != 1 \
            or sin.stride() != cos.stride():
        return None
    half = cos.shape[-1]
    if 2 * half > D:
        return None
    if positions is None:
        strides = _token_strides(cos, (B, views[0].shape[1], T, half))
        if strides is None:
            return None
        c_b, c_t, c_p, p_b, p_t, pos = *strides, 0, 0, 0, cos
    else:
        if cos.dim() != 2 or positions.dtype.is_floating_point or positions.device != device:
            return None
        pstr = _token_strides(positions, (B, views[0].shape[1], T))
        if pstr is None:
            return None
        c_b, c_t, c_p, (p_b, p_t), pos = 0, 0, cos.stride(0), pstr, positions
    n_rows = MAX_EXACT_POSITION if limbs is not None else (cos.shape[0] if positions is not None else 0)
    given = outs
    if given is not None:
        outs = [_as4(o) for o in given]
        if any(o is None or o.stride(-1) != 1 or o.device != device for o in outs):
            return None
    elif inplace:
        outs = views
    else:
        outs = [torch.empty(v.shape, dtype=v.dtype, device=device) for v in views]
    q, k = views[0], views[-1]
    qo, ko = outs[0], outs[-1]
    hq, hk = q.shape[1], (k.shape[1] if len(views) == 2 else 0)
    rest = D - 2 * half
    _rope_kernel[(B * T,)](
        q, k, qo, ko, cos, sin, pos, T, hq, hk,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        qo.stride(0), qo.stride(1), qo.stride(2), ko.stride(0), ko.stride(1), ko.stride(2),
        c_b, c_t, c_p, p_b, p_t, n_rows, -1.0 if inverse else 1.0, float(attention_factor),
        HALF=half, REST=rest, BLOCK_HALF=triton.next_power_of_2(half),
        BLOCK_REST=triton.next_power_of_2(max(rest, 1)),
        BLOCK_H=min(_MAX_BLOCK_H, triton.next_power_of_2(max(hq, hk, 1))),
        INTERLEAVED=layout == "interleaved", HAS_POS=positions is not None, EXACT=limbs is not None,
        COPY_REST=not inplace and rest > 0,
    )
    if inplace:
        return tuple(xs)
    if given is not None:
        return tuple(given)
    return tuple(out.view(x.shape) for out, x in zip(outs, xs, strict=True))


def rows(positions, limbs, attention_factor: float = 1.0):
    """float32 ``(cos, sin)`` of shape ``positions.shape + (R/2,)`` on the positions'
    device, one program per position, from the turn limbs ``(6, R/2)`` (float32, on that
    device): the rows :func:`rope` makes in its exact mode. Positions past
    :data:`~ropelab.rows.MAX_EXACT_POSITION` give NaN rows (the caller checks where it can)."""
    import torch

    flat = positions.reshape(-1).contiguous()
    half = limbs.shape[1]
    cos = torch.empty((flat.numel(), half), dtype=torch.float32, device=flat.device)
    sin = torch.empty_like(cos)
    if flat.numel():
        _rows_kernel[(flat.numel(),)](flat, limbs.contiguous(), cos, sin, MAX_EXACT_POSITION,
                                      float(attention_factor), HALF=half,
                                      BLOCK_HALF=triton.next_power_of_2(half))
    shape = tuple(positions.shape) + (half,)
    return cos.view(shape), sin.view(shape)
