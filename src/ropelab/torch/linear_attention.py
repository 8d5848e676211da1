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
from ..checks import check_bool, check_float, check_int
from ..config import RopeConfig, check_layout
from ..rotary import LAYOUT_FAMILIES

torch = require("torch", feature="ropelab.torch.linear_attention")
F = torch.nn.functional

from .attention import Attention, rms_norm  # noqa: E402
from .rope_op import rotate_qk  # noqa: E402

__all__ = [
    "LinearAttention",
    "LinearAttentionState",
    "feature_map",
    "linear_attention",
    "linear_attention_state",
    "linear_attention_step",
]


class LinearAttentionState(NamedTuple):
    """The recurrent state after some tokens: ``kv = sum_j R_j phi(k_j) v_j^T`` (B, H, D, E)
    and ``k_sum = sum_j phi(k_j)`` (B, H, D), both in float32 or wider."""

    kv: torch.Tensor
    k_sum: torch.Tensor


def feature_map(x: torch.Tensor) -> torch.Tensor:
    """Katharopoulos et al.'s ``phi(x) = elu(x) + 1`` (positive, so the denominator is)."""
    return F.elu(x) + 1.0


def _check(q, k, v, cos, sin, layout, eps):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must be shaped (B, H, T, D), got shape {tuple(t.shape)}")
        if not t.dtype.is_floating_point:
            raise TypeError(f"{name} must be floating point, got dtype {t.dtype}")
    if q.shape != k.shape:
        raise ValueError(
            f"q and k must have the same shape, got {tuple(q.shape)} and {tuple(k.shape)}"
        )
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(
            f"v must be shaped (B, H, T, E) with q's (B, H, T) = {tuple(q.shape[:3])}, got {tuple(v.shape)}"
        )
    if (cos is None) != (sin is None):
        raise ValueError("give both cos and sin, or neither (no rotation)")
    if layout is not None:
        check_layout(layout)
    elif cos is not None:
        raise TypeError(f"cos and sin need layout=, the pairing they rotate by: {LAYOUT_FAMILIES}")
    check_float("eps", eps, minimum=0.0)


def _features(q, k, cos, sin, layout):
    """phi(q), phi(k) in >= float32, and their rotated copies (the numerator's)."""
    dtype = torch.promote_types(q.dtype, torch.float32)
    fq, fk = feature_map(q.to(dtype)), feature_map(k.to(dtype))
    if cos is None:
        return fq, fk, fq, fk
    return fq, fk, *rotate_qk(fq, fk, cos, sin, layout)


def linear_attention(
    q,
    k,
    v,
    *,
    cos=None,
    sin=None,
    layout: str | None = None,
    causal: bool = True,
    eps: float = 1e-6,
    chunk_size: int = 64,
    key_mask=None,
    initial_state: LinearAttentionState | None = None,
    return_state: bool = False,
):
    """Linear attention with elu+1 features and, given cos/sin, RoPE per RoFormer eq. 19.

    Args:
        q, k: ``(B, H, T, D)``; v: ``(B, H, T, E)``.
        cos, sin: RoPE tables broadcastable to ``(B, H, T, R/2)`` (e.g. ``(T, R/2)`` from
            :func:`ropelab.rope_tables`), or None for Katharopoulos's plain form.
        layout: the RoPE pairing, ``"interleaved"`` or ``"half"``; required with cos/sin.
        causal: token i sees keys j <= i (chunked, linear in T) or all keys.
        eps: added to the denominator.
        chunk_size: C, the causal form's chunk length.
        key_mask: ``(B, T)``, 0/False for keys no query may see (padding), or None.
        initial_state: sums over earlier tokens (a prefix already processed), or None.
        return_state: also return the state after these tokens.

    Returns: ``(B, H, T, E)`` in v's dtype (computed in float32 at least), and the new
    :class:`LinearAttentionState` if ``return_state``.
    """
    _check(q, k, v, cos, sin, layout, eps)
    causal = check_bool("causal", causal)
    chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    length = q.shape[2]
    if causal and length > _SEGMENT:
        # long inputs go segment by segment, carrying the state: the temporaries stay
        # the size of one segment, so time and memory stay linear beyond the CPU caches
        outs, state = [], initial_state
        for start in range(0, length, _SEGMENT):
            part = slice(start, min(start + _SEGMENT, length))
            out, state = linear_attention(
                q[:, :, part],
                k[:, :, part],
                v[:, :, part],
                cos=_rows(cos, part, length),
                sin=_rows(sin, part, length),
                layout=layout,
                eps=eps,
                chunk_size=chunk_size,
                key_mask=None if key_mask is None else key_mask[:, part],
                initial_state=state,
                return_state=True,
            )
            outs.append(out)
        out = torch.cat(outs, dim=2)
        return (out, state) if return_state else out
    fq, fk, rq, rk = _features(q, k, cos, sin, layout)
    fk, rk = _mask_keys(fk, rk, key_mask)
    vv = v.to(fq.dtype)
    kv0 = k0 = None
    if initial_state is not None:
        kv0, k0 = initial_state.kv.to(fq.dtype), initial_state.k_sum.to(fq.dtype)
        if kv0.shape != (*q.shape[:2], q.shape[-1], v.shape[-1]) or k0.shape != (
            *q.shape[:2],
            q.shape[-1],
        ):
            raise ValueError(
                f"state shapes {tuple(kv0.shape)}, {tuple(k0.shape)} do not match these tokens' "
                f"{(*q.shape[:2], q.shape[-1], v.shape[-1])}, {(*q.shape[:2], q.shape[-1])}"
            )
    if causal:
        num, den = _causal_chunked(fq, fk, rq, rk, vv, chunk_size)
    else:
        num = rq @ (rk.transpose(-2, -1) @ vv)  # (B, H, T, E)
        den = fq @ fk.sum(dim=-2).unsqueeze(-1)  # (B, H, T, 1)
    if initial_state is not None:
        num = num + rq @ kv0
        den = den + fq @ k0.unsqueeze(-1)
    out = (num / (den + eps)).to(v.dtype)
    if not return_state:
        return out
    kv, k_sum = rk.transpose(-2, -1) @ vv, fk.sum(dim=-2)  # (B, H, D, E), (B, H, D)
    if initial_state is not None:
        kv, k_sum = kv + kv0, k_sum + k0
    return out, LinearAttentionState(kv, k_sum)


def linear_attention_state(k, v, *, cos=None, sin=None, layout: str | None = None, key_mask=None):
    """The state after keys ``k`` (B, H, T, D) and values ``v`` (B, H, T, E): a prefill.

    Equals the state :func:`linear_attention` returns for the same tokens, without
    computing their outputs.
    """
    _check(k, k, v, cos, sin, layout, 0.0)
    _, fk, _, rk = _features(k, k, cos, sin, layout)
    fk, rk = _mask_keys(fk, rk, key_mask)
    return LinearAttentionState(rk.transpose(-2, -1) @ v.to(fk.dtype), fk.sum(dim=-2))


def _mask_keys(fk, rk, key_mask):
    """Zero the features of masked keys, so they add nothing to any sum."""
    if key_mask is None:
        return fk, rk
    if tuple(key_mask.shape) != (fk.shape[0], fk.shape[2]):
        raise ValueError(
            f"key_mask must be shaped (B, T) = {(fk.shape[0], fk.shape[2])}, got {tuple(key_mask.shape)}"
        )
    keep = key_mask.to(fk.dtype)[:, None, :, None]  # (B, 1, T, 1)
    return fk * keep, rk * keep


#: tokens per segment of a long causal input (see linear_attention)
_SEGMENT = 8192


def _rows(table, part: slice, length: int):
    """Rows ``part`` of a (..., T, R/2) table; tables broadcast along T are kept whole."""
    if table is None or table.shape[-2] == 1:
        return table
    if table.shape[-2] != length:
        raise ValueError(f"cos/sin have {table.shape[-2]} rows for {length} tokens")
    return table[..., part, :]


def _causal_chunked(fq, fk, rq, rk, v, chunk):
    """Numerator (B, H, T, E) and denominator (B, H, T, 1) of the causal form."""
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
    return num.reshape(B, H, n * chunk, E)[:, :, :T], den


def linear_attention_step(
    state: LinearAttentionState | None,
    q_t,
    k_t,
    v_t,
    *,
    cos=None,
    sin=None,
    layout: str | None = None,
    eps: float = 1e-6,
):
    """One decoding step of causal :func:`linear_attention` (the RNN form, eq. 18-20).

    Args:
        state: the state after the previous tokens, or None before the first.
        q_t, k_t: ``(B, H, 1, D)``; v_t: ``(B, H, 1, E)``: the new token.
        cos, sin: the new token's RoPE tables, broadcastable to ``(B, H, 1, R/2)``.

    Returns: ``(out (B, H, 1, E), new_state)``; the output equals row t of the causal
    parallel form over the same tokens. Time and memory per step are O(D E), whatever t.
    """
    _check(q_t, k_t, v_t, cos, sin, layout, eps)
    if q_t.shape[2] != 1:
        raise ValueError(f"a step takes one token (T = 1), got q_t of shape {tuple(q_t.shape)}")
    return linear_attention(
        q_t,
        k_t,
        v_t,
        cos=cos,
        sin=sin,
        layout=layout,
        eps=eps,
        initial_state=state,
        return_state=True,
    )


class LinearAttention(Attention):
    """Causal linear attention with RoPE (RoFormer eq. 19) as an attention layer.

    Same constructor, projections (``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``),
    positions, padding mask and KV cache as :class:`ropelab.torch.Attention`; ``rope`` is
    None or a :class:`ropelab.RopeConfig` (the rotation acts on the features, after the
    feature map, so it must be a plain rotary schedule). ``block_size`` is the chunk C
    of the causal form. Chunked/windowed attention, score biases and temperature tuning
    are softmax options and are refused.

    With a KV cache the layer keeps raw keys and values like the softmax layers and
    rebuilds the state of the cached prefix on each call (O(S) per step, as softmax
    decoding is); :func:`linear_attention_step` is the O(1) recurrent form.
    """

    def __init__(
        self, d_model: int, num_heads: int, *, block_size: int = 64, eps: float = 1e-6, **kwargs
    ):
        for name in ("chunk_size", "window", "score_bias", "temperature_tuning"):
            if kwargs.get(name) is not None:
                raise ValueError(
                    f"LinearAttention has no {name} option (it belongs to softmax attention)"
                )
        rope = kwargs.get("rope")
        if rope is not None and not isinstance(rope, RopeConfig):
            raise TypeError(
                f"LinearAttention's rope must be None or a RopeConfig (rotation after the feature "
                f"map), got {type(rope).__name__}"
            )
        super().__init__(d_model, num_heads, **kwargs)
        self.block_size = check_int("block_size", block_size, minimum=1)
        self.eps = check_float("eps", eps, minimum=0.0)

    def _tables(self, positions):
        if self.rope is None:
            return None, None
        cos, sin = self.rope.tables_for(positions)  # (B, T, R/2)
        return cos.unsqueeze(1), sin.unsqueeze(1)  # (B, 1, T, R/2)

    def forward(self, x, positions=None, cache=None, attention_mask=None):
        """Linear attention: x ``(B, T, d_model)`` -> ``(B, T, d_model)``.

        ``positions`` ``(T,)`` or ``(B, T)`` (default: along ``attention_mask``, or on
        from each row of the cache) rotate the feature-mapped q and k; ``attention_mask``
        ``(B, S)`` (1 for tokens, 0 for padding over cached and new keys) drops padded
        keys from the sums; ``cache`` (a :class:`KVCache`, causal layers only) keeps raw
        keys and values, and the prefix's sums are rebuilt from them on each call.
        """
        if cache is not None and not self.causal:
            raise ValueError(
                "a KV cache needs causal attention; this LinearAttention is bidirectional"
            )
        batch, length, layer_cache, past, positions, attention_mask = self._begin(
            x, positions, cache, attention_mask
        )
        counted = positions is None  # slot indices, which the cache writes itself
        if counted:
            positions = torch.arange(past, past + length, device=x.device).unsqueeze(0)
        q_pos = positions.expand(batch, length)  # (B, T)
        heads, dim = self.num_heads, self.head_dim
        q, k, v = self._project(x)  # (B, H, T, D), (B, K, T, D)
        if self.qk_norm:
            q, k = rms_norm(q, self.qk_norm_eps), rms_norm(k, self.qk_norm_eps)
        state = None
        if layer_cache is not None:
            k_all, v_all, k_pos = layer_cache.update(
                k, v, None if counted else q_pos, mask=attention_mask
            )  # (B, K, S, D), (B, S)
            if past:  # the prefix's sums, rebuilt from the cached raw keys
                k0, v0 = _repeat(k_all[:, :, :past], heads), _repeat(v_all[:, :, :past], heads)
                cos0, sin0 = self._tables(k_pos[:, :past])
                mask0 = None if attention_mask is None else attention_mask[:, :past]
                state = linear_attention_state(
                    k0, v0, cos=cos0, sin=sin0, layout=self._layout(), key_mask=mask0
                )
        cos, sin = self._tables(q_pos)
        y = linear_attention(
            q,
            _repeat(k, heads),
            _repeat(v, heads),
            cos=cos,
            sin=sin,
            layout=self._layout(),
            causal=self.causal,
            eps=self.eps,
            chunk_size=self.block_size,
            key_mask=None if attention_mask is None else attention_mask[:, past:],
            initial_state=state,
        )  # (B, H, T, D)
        return self.o_proj(y.transpose(1, 2).reshape(batch, length, heads * dim))

    def _layout(self) -> str | None:
        return None if self.rope is None else self.rope.config.layout

    def extra_repr(self) -> str:
        return super().extra_repr() + f", linear (elu+1), block_size={self.block_size}"


def _repeat(t, heads: int):
    """(B, K, S, .) -> (B, H, S, .): each kv head serves H / K query heads."""
    return t if t.shape[1] == heads else t.repeat_interleave(heads // t.shape[1], dim=1)
