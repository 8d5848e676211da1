"""Flax NNX attention with RoPE or NoPE, grouped-query heads and Llama 4's options.

Vaswani et al. 2017 attention with grouped-query heads (Ainslie et al. 2023), rotary
positions (Su et al. 2021, RoFormer) or none (NoPE, Kazemnejad et al. 2023), and Llama
4's options: chunked attention and weightless query/key RMS norm on RoPE layers, attention
temperature tuning on NoPE layers (Nakanishi 2025, "Scalable-Softmax Is Superior for
Attention"). Left padding and a :class:`~ropelab.nnx.KVCache` for decoding. Same
meaning as :class:`ropelab.torch.Attention` with the same weights.

Shapes: B batch, T new tokens, S keys (cached + new), C cache capacity, H heads,
K kv heads, D head dim, R rotary dim.
    x (B, T, d_model); q (B, T, H, D); k, v (B, T, K, D) or (B, C, K, D) from a cache;
    positions (T,) or (B, T) integers; attention_mask (B, S) or (B, T), 1 for tokens and
    0 for padding, Hugging Face style.

The positional part is the core's: cos/sin come from :func:`ropelab.rope_tables` (float64
on the host for concrete positions; float32 rows computed in the trace from traced
positions under ``jax.jit``, :mod:`ropelab.rows`; both exact at any int32 position) and
the rotation from :func:`ropelab.apply_rope`. Nothing here re-derives frequencies.
``rope=None`` is NoPE: no rotation at all.

What the options mean (which keys a query sees, the temperature) is written once, in
:class:`ropelab.attention_spec.AttentionSpec` (``module.spec``), which
:class:`ropelab.torch.Attention` holds too; this module adds the ``(B, T, H, D)`` layout
of :func:`jax.nn.dot_product_attention`, the padding rules of a fixed-size cache and jit.

The projections are named ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj`` like
:class:`ropelab.torch.Attention` and Hugging Face's Llama attention, so
:func:`ropelab.nnx.load_torch_state_dict` (``ropelab.nnx.torch_weights``) copies a torch
state dict in.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..attention_spec import AttentionSpec, SpecField
from ..checks import check_int
from ..config import RopeConfig
from ..rotary import apply_rope
from ..rows import length_regimes, rope_rows
from ..tables import rope_tables
from .cache import KVCache, positions_from_mask
from .torch_weights import load_torch_state_dict

__all__ = ["Attention", "attend", "position_tables", "rms_norm"]


@functools.lru_cache(maxsize=64)
def _cached_tables(config: RopeConfig, length: int) -> tuple[np.ndarray, np.ndarray]:
    cos, sin = rope_tables(config, np.arange(length))
    cos.setflags(write=False)
    sin.setflags(write=False)
    return cos, sin


def position_tables(config: RopeConfig, length: int) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin for positions ``0..length-1``, float64 ``(length, R/2)``, cached per config.

    For length-dependent schemes (dynamic NTK, LongRoPE) the table is the one for a
    sequence of exactly ``length`` tokens, as transformers computes it.
    """
    try:
        return _cached_tables(config, int(length))
    except TypeError:  # an unhashable scheme: compute without the cache
        return rope_tables(config, np.arange(int(length)))


def _concrete(positions):
    """positions as a numpy array, or None when they are traced (inside jit)."""
    try:
        return np.asarray(positions)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def _mask_width(width: int, start, length: int) -> None:
    """ValueError for a (B, S) mask whose S is not cached + new (also a host callback under jit)."""
    start = int(start)
    if width != start + length:
        raise ValueError(
            f"attention_mask of width {width} does not cover the {start} cached and {length} "
            f"new keys: give (B, {start + length}) over every key or (B, {length}) over the new ones"
        )


#: positions are kept as int32 (jax's integers without x64: cache slots, masks)
_INT32 = 2**31


def check_positions(positions, batch: int, length: int) -> None:
    """positions must be integers shaped ``(T,)``, ``(1, T)`` or ``(B, T)`` (TypeError for
    another dtype, ValueError for another shape) and, where their values can be read,
    within int32 (ValueError), never wrapped or truncated."""
    shape = tuple(positions.shape)
    if shape not in ((length,), (1, length), (batch, length)):
        raise ValueError(
            f"positions must be shaped (T,) = ({length},) or (B, T) = ({batch}, {length}), got {shape}"
        )
    if not jnp.issubdtype(positions.dtype, jnp.integer):
        raise TypeError(f"positions must be integers, got dtype {positions.dtype}")
    host = _concrete(positions)
    if host is not None and host.size:
        low, high = int(host.min()), int(host.max())
        if low < -_INT32 or high >= _INT32:
            raise ValueError(
                f"positions must lie in [-2**31, 2**31), the int32 range the cache and masks keep; "
                f"got values from {low} to {high}"
            )


def rope_for(config: RopeConfig, positions, batch: int, length: int, *, bound: int | None = None,
             source: str = "traced arguments"):
    """cos/sin for ``positions`` shaped to rotate ``(B, T, H, D)`` arrays: ``(..., T, 1, R/2)``.

    ``positions`` is None (``0..T-1``), ``(T,)``, ``(1, T)`` or ``(B, T)``. Concrete positions
    (and the default ``0..T-1``) get float64 host rows (:func:`ropelab.rope_tables`).
    Traced positions (under ``jax.jit``) get float32 rows computed in the trace from the
    positions themselves (:func:`ropelab.rows.jax_rows`): within 3e-7 of the true cos and
    sin at every int32 position, negative ones included, with no table and so no length
    limit.

    A length-dependent scheme (dynamic NTK, LongRoPE) reads the length as
    ``max(positions) + 1``, like :func:`ropelab.rope_tables` (and transformers). For
    traced positions that works when the lengths they can give (at most ``bound``, which
    the caller knows when it derived them; any length otherwise) fall in a few of the
    scheme's regimes: the rows of each are computed and one picked by the traced length.
    Otherwise ValueError (``source`` says where the traced positions came from).
    """
    if positions is None:
        cos, sin = position_tables(config, length)
        return cos[:, None, :], sin[:, None, :]
    check_positions(positions, batch, length)
    host = _concrete(positions)
    if host is not None:
        cos, sin = rope_tables(config, host)
        return cos[..., None, :], sin[..., None, :]
    if not config.dynamic:
        cos, sin = rope_rows(config, positions, "jax")  # (..., T, R/2) float32
        return cos[..., None, :], sin[..., None, :]
    firsts = length_regimes(config, bound)
    if firsts is None:
        raise ValueError(
            f"the rope scheme {config.scaling!r} picks its frequencies by the sequence length "
            f"(max(positions) + 1), and under jit this call's positions are {source}, so the "
            "length is not known while tracing; call the module outside jax.jit, or pass "
            "positions that are not traced (a numpy array the jitted function closes over)"
        )
    top = jnp.max(positions)  # the length - 1 (never + 1: int32's largest position would wrap)
    cos = sin = None
    for first in firsts:  # ascending: a later regime wins once the length reaches it
        c, s = rope_rows(config, positions, "jax", seq_len=first)  # (..., T, R/2) float32
        if cos is None:
            cos, sin = c, s
        else:
            cos, sin = jnp.where(top >= first - 1, c, cos), jnp.where(top >= first - 1, s, sin)
    return cos[..., None, :], sin[..., None, :]


def attend(q, k, v, *, causal: bool, mask=None):
    """Scaled dot-product attention over ``(B, T, H, D)`` q and ``(B, S, K, D)`` k, v.

    Uses :func:`jax.nn.dot_product_attention` (XLA's fused path, cuDNN where present);
    query head ``h`` reads kv head ``h // (H // K)``. Scale ``1 / sqrt(D)``. ``mask`` is
    None or a boolean keep-mask broadcastable to ``(B, H, T, S)`` (True: attend);
    ``causal`` is the top-left aligned ``T == S`` causal mask. Returns ``(B, T, H, D)``.
    :func:`ropelab.reference.attention` is the float64 reference.
    """
    return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal)


def rms_norm(x, eps: float):
    """Weightless RMS norm over the last dim, in float32 (Llama 4's L2Norm); x's dtype out."""
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    return (xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)).astype(x.dtype)


def _position_overflow(last) -> None:
    """ValueError for rows whose next positions pass the int32 range (also a host callback
    under jit)."""
    raise ValueError(
        f"the cache's rows continue after position {int(last)}, so the new tokens' positions "
        f"would pass 2**31 - 1, the int32 range the cache keeps; pass positions explicitly"
    )


def _continued_positions(cache: KVCache, past, length: int):
    """Positions ``(B, T)`` for new tokens after a cache: each row's last token's position
    + 1 + ``0..T-1`` (from 0 in a row without a token; recorded padding is skipped).

    Returns ``(positions, wrapped)``: concrete int64 positions and None outside jit
    (ValueError past the int32 range), or traced int32 positions and a traced bool
    that is True when they wrapped (its callback raises when the step runs).
    """
    last, has_token = cache.last_token_positions()  # (B,)
    if past is not None:
        last, has_token = np.asarray(last, np.int64), np.asarray(has_token)
        if np.any(has_token & (last > _INT32 - 1 - length)):
            _position_overflow(last[has_token].max())
        first = np.where(has_token, last + 1, 0)
        return first[:, None] + np.arange(length), None
    first = jnp.where(has_token, last + 1, 0)
    wrapped = jnp.any(has_token & (last > _INT32 - 1 - length))
    worst = jnp.max(jnp.where(has_token, last, 0))
    jax.lax.cond(wrapped, lambda: jax.debug.callback(_position_overflow, worst), lambda: None)
    return first[:, None] + jnp.arange(length, dtype=jnp.int32), wrapped


def _float_dtype(name: str, value):
    """``value`` as a floating-point jnp dtype; TypeError naming ``name`` otherwise."""
    try:
        dtype = None if value is None else jnp.dtype(value)  # (jnp.dtype(None) is float64)
    except TypeError:
        dtype = None
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating-point dtype such as jnp.bfloat16, got {value!r}")
    return dtype


def _concrete_int(value):
    """``value`` as a Python int, or None when it is traced (inside jit)."""
    try:
        return int(value)
    except (jax.errors.TracerIntegerConversionError, jax.errors.ConcretizationTypeError):
        return None


class Attention(nnx.Module):
    """Multi-head / grouped-query self-attention with RoPE (or NoPE), for Flax NNX.

    RoFormer (Su et al. 2021, arXiv:2104.09864) rotary positions; GQA (Ainslie et al.
    2023, arXiv:2305.13245); NoPE (Kazemnejad et al. 2023, arXiv:2305.19466) when
    ``rope=None``; Llama 4's chunked attention, qk norm and temperature tuning. Same
    meaning as :class:`ropelab.torch.Attention` with the same weights.

    Args:
        d_model: model width.
        num_heads: query heads H.
        num_kv_heads: key/value heads K (must divide H); defaults to H.
        head_dim: D; defaults to ``d_model // num_heads``.
        rope: a :class:`ropelab.RopeConfig` with ``head_dim == D``, or None for NoPE.
        causal: causal (decoder) or bidirectional (encoder) attention; causality is by
            slot (a token sees the keys written before it and itself).
        bias: biases on all four projections.
        chunk_size: Llama 4 chunked attention: a token sees only keys of its own chunk
            of positions (``pos // chunk_size`` equal).
        window: sliding window: a token sees keys fewer than ``window`` positions away
            (on both sides when not causal).
        qk_norm: weightless RMS norm of q and k after RoPE (Llama 4's L2Norm), eps
            ``qk_norm_eps``.
        temperature_tuning: ``(attn_scale, floor_scale)``: queries scaled by
            ``1 + attn_scale * log(floor((pos + 1) / floor_scale) + 1)`` (Llama 4 NoPE
            layers), ``pos`` the token's position (not its slot), in float32.
        dtype: the computation dtype of the projections and so of the attention and the
            output (Flax's convention); None (the default) infers it from x and the
            weights, as ``nnx.Linear`` does (float32 x and weights: float32).
        param_dtype: the dtype of the projection weights (default float32).
        rngs: ``nnx.Rngs`` for the projection weights.

    The options but ``rope`` are validated and kept in
    ``self.spec`` (:class:`~ropelab.attention_spec.AttentionSpec`); ``module.chunk_size``
    and the like read it, and setting one validates the new value.

    Call: ``module(x, positions=None, *, attention_mask=None, cache=None)``; see
    :meth:`__call__`.

    Under ``jax.jit`` the cache length and so the positions are traced: RoPE computes the
    cos/sin rows from them in the trace (:mod:`ropelab.rows`, float32, within 3e-7 of the
    true values at every int32 position, negative ones included; no table, no position
    limit). A length-dependent scheme (dynamic NTK, LongRoPE) reads the length as
    ``max(positions) + 1``, as eagerly; under jit that works while the lengths a call may
    have fall in a few of its regimes (LongRoPE always; dynamic NTK up to a few tokens
    past its original length) and raises ValueError otherwise, saying what to do
    instead. A step that overflows the cache (or a
    ``(B, S)`` mask whose S is not cached + new) raises ValueError outside jit; under
    jit it raises when the step runs, jax's ``JaxRuntimeError`` (a RuntimeError)
    carrying the same message, and its output is NaN, never a silently wrong answer.

    Rows of padding (a left pad under a causal mask sees no token) attend to every
    filled slot instead, as in the torch module; their outputs are a pad's, never used.
    """

    # the options live in self.spec; these read them (and setting one re-validates)
    d_model = SpecField()
    num_heads = SpecField()
    num_kv_heads = SpecField()
    head_dim = SpecField()
    causal = SpecField()
    chunk_size = SpecField()
    window = SpecField()
    qk_norm = SpecField()
    qk_norm_eps = SpecField()
    temperature_tuning = SpecField()

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        *,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        rope: RopeConfig | None = None,
        causal: bool = True,
        bias: bool = False,
        chunk_size: int | None = None,
        window: int | None = None,
        qk_norm: bool = False,
        temperature_tuning: tuple[float, float] | None = None,
        qk_norm_eps: float = 1e-6,
        dtype=None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        #: the validated options and the meaning they give (shared with ropelab.torch.Attention)
        self.spec = spec = AttentionSpec(
            d_model,
            num_heads,
            num_kv_heads=num_kv_heads,
            head_dim=head_dim,
            causal=causal,
            bias=bias,
            chunk_size=chunk_size,
            window=window,
            qk_norm=qk_norm,
            qk_norm_eps=qk_norm_eps,
            temperature_tuning=temperature_tuning,
        )
        if rope is not None:
            if not isinstance(rope, RopeConfig):
                raise TypeError(f"rope must be a ropelab.RopeConfig or None (NoPE), got {rope!r}")
            spec.check_rope(rope)
        self.rope = rope
        dtype = None if dtype is None else _float_dtype("dtype", dtype)
        param_dtype = _float_dtype("param_dtype", param_dtype)
        width, kv_width = spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim
        linear = functools.partial(nnx.Linear, use_bias=bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.q_proj = linear(spec.d_model, width)
        self.k_proj = linear(spec.d_model, kv_width)
        self.v_proj = linear(spec.d_model, kv_width)
        self.o_proj = linear(width, spec.d_model)

    # -- helpers --------------------------------------------------------------------

    def _check_cache(self, cache, batch: int, length: int):
        if not isinstance(cache, KVCache):
            raise TypeError(f"cache must be a ropelab.nnx.KVCache or None, got {type(cache).__name__}")
        want = (batch, self.num_kv_heads, self.head_dim)
        have = (cache.batch, cache.num_kv_heads, cache.head_dim)
        if have != want:
            raise ValueError(
                f"cache of shape (B, C, K, D) = {tuple(cache.keys.shape)} does not fit this call: "
                f"expected B={batch}, K={self.num_kv_heads}, D={self.head_dim}"
            )
        cache.check_room(length)

    def _split_mask(self, attention_mask, batch: int, length: int, cache, past):
        """``(full, new)``: the (B, S) mask when given over every key (else None), and
        the (B, T) mask of the new tokens, both bool."""
        mask = attention_mask if hasattr(attention_mask, "shape") else np.asarray(attention_mask)
        shape = tuple(mask.shape)
        if cache is None:
            if shape != (batch, length):
                raise ValueError(
                    f"attention_mask must be shaped (B, S) = ({batch}, {length}) (cached 0 + new "
                    f"{length} keys), got {shape}"
                )
            return None, jnp.asarray(mask) != 0
        if len(shape) != 2 or shape[0] != batch:
            ok = False
        elif past is not None:
            ok = shape[1] in (length, past + length)
        else:  # traced length: any width from T to the capacity; S != cached + new raises when the step runs
            ok = length <= shape[1] <= cache.capacity
        if not ok:
            cached = "cached" if past is None else past
            raise ValueError(
                f"attention_mask must be shaped (B, S) = ({batch}, {cached} + {length}) over cached "
                f"and new keys, or (B, T) = ({batch}, {length}) over the new tokens, got {shape}"
            )
        mask = jnp.asarray(mask) != 0
        if shape[1] == length:  # the new tokens only (also the full mask of an empty cache)
            return None, mask
        new = jax.lax.dynamic_slice_in_dim(mask, cache.length, length, axis=1)  # (B, T)
        return mask, new

    # -- call -----------------------------------------------------------------------

    def __call__(self, x, positions=None, *, attention_mask=None, cache=None):
        """Attend: x ``(B, T, d_model)`` -> ``(B, T, d_model)`` (and the new cache).

        Args:
            x: ``(B, T, d_model)`` (or ``(T, d_model)`` without mask and cache).
            positions: None, ``(T,)``, ``(1, T)`` or ``(B, T)`` integers. By default
                they follow ``attention_mask`` (:func:`~ropelab.nnx.positions_from_mask`,
                as torch does); without a mask the new tokens are all tokens, and with a
                cache they continue each row after its last cached token (its recorded
                position + 1, + ``0..T-1``; from 0 in a row with no token yet; the
                cached padding stays hidden), which for a cache without padding is the
                cache's length + ``0..T-1``; ``0..T-1`` without a cache.
            attention_mask: 1/0 ``(B, S)`` over every key, cached and new (torch's
                meaning), or ``(B, T)`` over the new tokens only; the two agree on an
                empty cache. The cache remembers which slots were padding, so the
                new-tokens form is enough and keeps one shape per decode step under jit.
            cache: None or a :class:`~ropelab.nnx.KVCache` (an immutable pytree; see
                ``ropelab.nnx.cache`` for why it is not module state).

        Returns:
            Without a cache, the output ``(B, T, d_model)`` (``(T, d_model)`` for an
            unbatched x); with one, ``(output, new_cache)``, the new keys written into
            ``new_cache`` and ``cache`` left as it was. The output is in the computation
            dtype: ``dtype`` when set, else x's and the weights' promoted together.
        """
        x = jnp.asarray(x)
        unbatched = x.ndim == 2
        if unbatched:
            if cache is not None or attention_mask is not None:
                raise ValueError(
                    "attention_mask and cache need x shaped (B, T, d_model); got an unbatched x "
                    f"of shape {tuple(x.shape)}"
                )
            x = x[None]
        if x.ndim != 3 or x.shape[-1] != self.d_model:
            raise ValueError(
                f"x must be shaped (B, T, d_model={self.d_model}) or (T, d_model), got {tuple(x.shape)}"
            )
        if positions is not None and not hasattr(positions, "shape"):
            positions = np.asarray(positions)
        if positions is not None and unbatched and len(positions.shape) != 1:
            raise ValueError(f"an unbatched x needs positions shaped (T,), got {tuple(positions.shape)}")
        B, T, _ = x.shape
        spec = self.spec
        H, K, D = spec.num_heads, spec.num_kv_heads, spec.head_dim
        if positions is not None:
            check_positions(positions, B, T)

        past = 0
        if cache is not None:
            self._check_cache(cache, B, T)
            past = _concrete_int(cache.length)  # None when traced
        full = new_mask = wrapped = None
        bound, source = None, "traced arguments"  # what rope_for knows of derived positions
        if attention_mask is not None:
            full, new_mask = self._split_mask(attention_mask, B, T, cache, past)
        start = 0 if cache is None else (past if past is not None else cache.length)
        if cache is not None and full is not None:
            # the full mask is the truth about every key's padding, as in torch
            width = full.shape[1]
            cache = dataclasses.replace(cache, valid=cache.valid.at[:, :width].set(full))
        if positions is None:
            if new_mask is not None:
                if cache is None:
                    positions, bound, source = positions_from_mask(new_mask), T, "derived from the traced attention_mask"
                else:  # tokens before this call, then cumsum - 1 (positions_from_mask's rule)
                    before = jnp.sum(cache.valid & (jnp.arange(cache.capacity) < start), axis=1)
                    counts = before[:, None] + jnp.cumsum(new_mask, axis=1, dtype=jnp.int32)
                    positions = jnp.maximum(counts - 1, 0).astype(jnp.int32)
                    bound, source = cache.capacity, "derived from the traced attention_mask and cache"
            elif cache is not None:  # new tokens, continuing each row after its last token
                positions, wrapped = _continued_positions(cache, past, T)
                source = "continued from the traced cache"

        q = self.q_proj(x).reshape(B, T, H, D)  # (B, T, H, D)
        k = self.k_proj(x).reshape(B, T, K, D)  # (B, T, K, D)
        v = self.v_proj(x).reshape(B, T, K, D)
        if self.rope is not None:
            # (..., T, 1, R/2): one row per token, broadcast over heads
            cos, sin = rope_for(self.rope, positions, B, T, bound=bound, source=source)
            rope = self.rope
            q, k = apply_rope((q, k), cos, sin, layout=rope.layout, rotary_dim=rope.rotary_dim)
        if spec.qk_norm:
            q, k = rms_norm(q, spec.qk_norm_eps), rms_norm(k, spec.qk_norm_eps)

        pos = jnp.arange(T, dtype=jnp.int32) if positions is None else jnp.asarray(positions)
        pos = jnp.broadcast_to(pos.reshape((-1, T)), (B, T))  # (B, T)
        if spec.temperature_tuning is not None:
            scale = spec.query_scale(pos.astype(jnp.float32), jnp)  # (B, T) float32
            q = (q * scale[:, :, None, None]).astype(q.dtype)  # (B, T, 1, 1)

        bad = wrapped  # a traced flag, or None
        if cache is None:
            if spec.plain(padded=new_mask is not None):  # the kernel's causal flag says it all
                out = attend(q, k, v, causal=spec.causal)
            else:
                slots = jnp.arange(T)
                keep = spec.keep(slots, slots, pos, pos, key_valid=new_mask)  # (B or 1, 1, T, T)
                out = attend(q, k, v, causal=False, mask=keep)
        else:
            cache = cache.update(k, v, pos, new_mask)
            C = cache.capacity
            slots = jnp.arange(C)
            q_slot = start + jnp.arange(T)
            filled = slots < start + T
            keep = spec.keep(q_slot, slots, pos, cache.positions, key_valid=cache.valid, filled=filled)
            out = attend(q, cache.keys.astype(q.dtype), cache.values.astype(q.dtype), causal=False, mask=keep)
            if past is None:  # traced: what outside jit is a ValueError raises when the step runs
                overflow = start + T > C  # (check_room's callback reports it)
                bad = overflow if bad is None else bad | overflow
                if full is not None:
                    width = full.shape[1]
                    wrong = width != start + T
                    jax.lax.cond(wrong, lambda: jax.debug.callback(_mask_width, width, start, T), lambda: None)
                    bad = bad | wrong
        out = self.o_proj(out.reshape(B, T, H * D))  # (B, T, d_model)
        if bad is not None:
            out = jnp.where(bad, jnp.nan, out)
        if cache is not None:
            return out, cache
        return out[0] if unbatched else out

    @classmethod
    def from_torch_state_dict(
        cls,
        state_dict: Mapping,
        *,
        num_heads: int,
        num_kv_heads: int | None = None,
        rope: RopeConfig | None = None,
        causal: bool = True,
        chunk_size: int | None = None,
        window: int | None = None,
        qk_norm: bool = False,
        temperature_tuning: tuple[float, float] | None = None,
        qk_norm_eps: float = 1e-6,
        dtype=None,
        param_dtype=jnp.float32,
    ) -> Attention:
        """Build an Attention holding the weights of a torch ``Attention`` state dict.

        ``d_model``, ``head_dim`` and ``bias`` are read from the weight shapes; the
        rest (which the weights do not say) must be given.
        """
        if "q_proj.weight" not in state_dict or "o_proj.weight" not in state_dict:
            raise ValueError(
                "state_dict must hold q_proj.weight and o_proj.weight, got keys "
                f"{sorted(state_dict)}"
            )
        q_rows, d_model = tuple(state_dict["q_proj.weight"].shape)
        num_heads = check_int("num_heads", num_heads, minimum=1)
        if q_rows % num_heads:
            raise ValueError(
                f"q_proj.weight has {q_rows} rows, not a multiple of num_heads={num_heads}"
            )
        module = cls(
            int(d_model),
            num_heads,
            num_kv_heads=num_kv_heads,
            head_dim=q_rows // num_heads,
            rope=rope,
            causal=causal,
            bias="q_proj.bias" in state_dict,
            chunk_size=chunk_size,
            window=window,
            qk_norm=qk_norm,
            temperature_tuning=temperature_tuning,
            qk_norm_eps=qk_norm_eps,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=nnx.Rngs(0),
        )
        return load_torch_state_dict(module, state_dict)
