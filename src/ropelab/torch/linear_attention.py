"""Linear attention (Katharopoulos et al. 2020) with RoPE as RoFormer defines it.

Katharopoulos et al., "Transformers are RNNs" (arXiv:2006.16236), eq. 4-6: with the
feature map ``phi(x) = elu(x) + 1``,

    out_i = phi(q_i)^T S_i / (phi(q_i)^T z_i + eps),   S_i = sum_j phi(k_j) v_j^T,  z_i = sum_j phi(k_j)

where j runs over all keys (non-causal) or j <= i (causal). RoFormer (Su et al. 2021,
arXiv:2104.09864) eq. 19 adds RoPE *after* the feature map and only in the numerator:

    out_i = sum_j (R_i phi(q_i))^T (R_j phi(k_j)) v_j / (sum_j phi(q_i)^T phi(k_j) + eps)

so the numerator sees relative positions while the denominator stays positive.

The causal form runs in chunks of C tokens: inside a chunk the (C, C) scores are formed
directly, across chunks a prefix sum of per-chunk states carries the past. Time is
``O(T * (C + E) * D)`` and memory ``O(T * (C + D * E / C))``: both linear in T.
:func:`linear_attention_step` is the recurrent form for decoding, one token at a time.

Shapes: B batch, H heads, T time, D head dim (q, k), E value dim, R rotary dim.
"""

from __future__ import annotations

from typing import NamedTuple

from .._optional import require
from ..config import check_layout

torch = require("torch", feature="ropelab.torch.linear_attention")
F = torch.nn.functional

from .rope_op import rotate  # noqa: E402

__all__ = ["LinearAttentionState", "feature_map", "linear_attention", "linear_attention_step"]


class LinearAttentionState(NamedTuple):
    """The recurrent state after some tokens: ``kv = sum_j R_j phi(k_j) v_j^T`` (B, H, D, E)
    and ``k_sum = sum_j phi(k_j)`` (B, H, D), both in float32 or wider."""

    kv: torch.Tensor
    k_sum: torch.Tensor


def feature_map(x: torch.Tensor) -> torch.Tensor:
    """Katharopoulos et al.'s ``phi(x) = elu(x) + 1`` (positive, so the denominator is)."""
    return F.elu(x) + 1.0


def _check(q, k, v, cos, sin, layout, eps):
    check_layout(layout)
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must be shaped (B, H, T, D), got shape {tuple(t.shape)}")
        if not t.dtype.is_floating_point:
            raise TypeError(f"{name} must be floating point, got dtype {t.dtype}")
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape, got {tuple(q.shape)} and {tuple(k.shape)}")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v must be shaped (B, H, T, E) with q's (B, H, T) = {tuple(q.shape[:3])}, got {tuple(v.shape)}")
    if (cos is None) != (sin is None):
        raise ValueError("give both cos and sin, or neither (no rotation)")
    if not (eps >= 0):
        raise ValueError(f"eps must be >= 0, got {eps!r}")


def _features(q, k, cos, sin, layout):
    """phi(q), phi(k) in >= float32, and their rotated copies (the numerator's)."""
    dtype = torch.promote_types(q.dtype, torch.float32)
    fq, fk = feature_map(q.to(dtype)), feature_map(k.to(dtype))
    if cos is None:
        return fq, fk, fq, fk
    return fq, fk, rotate(fq, cos, sin, layout), rotate(fk, cos, sin, layout)


def linear_attention(
    q,
    k,
    v,
    *,
    cos=None,
    sin=None,
    layout: str = "interleaved",
    causal: bool = True,
    eps: float = 1e-6,
    chunk_size: int = 64,
):
    """Linear attention with elu+1 features and, given cos/sin, RoPE per RoFormer eq. 19.

    Args:
        q, k: ``(B, H, T, D)``; v: ``(B, H, T, E)``.
        cos, sin: RoPE tables broadcastable to ``(B, H, T, R/2)`` (e.g. ``(T, R/2)`` from
            :func:`ropelab.rope_tables`), or None for Katharopoulos's plain form.
        layout: the RoPE pairing, ``"interleaved"`` or ``"half"``.
        causal: token i sees keys j <= i (chunked, linear in T) or all keys.
        eps: added to the denominator.
        chunk_size: C, the causal form's chunk length.

    Returns: ``(B, H, T, E)`` in v's dtype (computed in float32 at least).
    """
    _check(q, k, v, cos, sin, layout, eps)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    fq, fk, rq, rk = _features(q, k, cos, sin, layout)
    vv = v.to(fq.dtype)
    if not causal:
        kv = rk.transpose(-2, -1) @ vv  # (B, H, D, E)
        num = rq @ kv  # (B, H, T, E)
        den = fq @ fk.sum(dim=-2).unsqueeze(-1)  # (B, H, T, 1)
        return (num / (den + eps)).to(v.dtype)
    return _causal_chunked(fq, fk, rq, rk, vv, eps, chunk_size).to(v.dtype)


def _causal_chunked(fq, fk, rq, rk, v, eps, chunk):
    B, H, T, D = fq.shape
    E = v.shape[-1]
    # the denominator needs no chunks: phi(q_i) . (running sum of phi(k_j)), O(T D)
    den = (fq * torch.cumsum(fk, dim=-2)).sum(-1, keepdim=True)  # (B, H, T, 1)
    chunk = min(chunk, T)
    pad = (-T) % chunk
    if pad:  # padded keys come after every real query, so they reach none of them
        rq, rk, v = (F.pad(t, (0, 0, 0, pad)) for t in (rq, rk, v))
    n = (T + pad) // chunk
    rq, rk, v = (t.reshape(B, H, n, chunk, t.shape[-1]) for t in (rq, rk, v))  # (B, H, N, C, .)
    # inside each chunk: the quadratic form, masked to j <= i (tril_ works on the last two dims)
    num = (rq @ rk.transpose(-2, -1)).tril_() @ v  # (B, H, N, C, E)
    if n > 1:
        # across chunks: chunk c sees the state summed over chunks 0..c-1
        kv = rk.transpose(-2, -1) @ v  # (B, H, N, D, E)
        kv_before = torch.cumsum(kv[:, :, :-1], dim=2)  # (B, H, N-1, D, E)
        num[:, :, 1:] += rq[:, :, 1:] @ kv_before
    return num.reshape(B, H, n * chunk, E)[:, :, :T] / (den + eps)


def linear_attention_step(
    state: LinearAttentionState | None,
    q_t,
    k_t,
    v_t,
    *,
    cos=None,
    sin=None,
    layout: str = "interleaved",
    eps: float = 1e-6,
):
    """One decoding step of causal :func:`linear_attention` (the RNN form, eq. 18-20).

    Args:
        state: the state after the previous tokens, or None before the first.
        q_t, k_t: ``(B, H, 1, D)``; v_t: ``(B, H, 1, E)``: the new token.
        cos, sin: the new token's RoPE tables, broadcastable to ``(B, H, 1, R/2)``.

    Returns: ``(out (B, H, 1, E), new_state)``; the output equals row t of the causal
    parallel form over the same tokens.
    """
    _check(q_t, k_t, v_t, cos, sin, layout, eps)
    if q_t.shape[2] != 1:
        raise ValueError(f"a step takes one token (T = 1), got q_t of shape {tuple(q_t.shape)}")
    fq, fk, rq, rk = _features(q_t, k_t, cos, sin, layout)
    vv = v_t.to(fq.dtype)
    kv = rk.transpose(-2, -1) @ vv  # (B, H, D, E)
    k_sum = fk[:, :, 0]  # (B, H, D)
    if state is not None:
        if state.kv.shape != kv.shape or state.k_sum.shape != k_sum.shape:
            raise ValueError(
                f"state shapes {tuple(state.kv.shape)}, {tuple(state.k_sum.shape)} do not match "
                f"this token's {tuple(kv.shape)}, {tuple(k_sum.shape)}"
            )
        kv = state.kv + kv
        k_sum = state.k_sum + k_sum
    num = rq @ kv  # (B, H, 1, E)
    den = fq @ k_sum.unsqueeze(-1)  # (B, H, 1, 1)
    return (num / (den + eps)).to(v_t.dtype), LinearAttentionState(kv, k_sum)
