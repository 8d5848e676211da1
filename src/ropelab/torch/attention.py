"""Multi-head attention with pluggable positions: RoPE, NoPE, or any rotary-like module.

Vaswani et al. 2017 (arXiv:1706.03762) attention with grouped-query heads (Ainslie et
al. 2023, arXiv:2305.13245), rotary positions (Su et al. 2021, arXiv:2104.09864) or none
(NoPE, Kazemnejad et al. 2023, arXiv:2305.19466), and Llama 4's options: chunked
attention and query/key RMS norm on RoPE layers, attention temperature tuning on NoPE
layers (Nakanishi 2025, arXiv:2501.19399).

Shapes: B batch, T new tokens, S keys (cached + new), H heads, K kv heads, D head dim.
    x (B, T, d_model); q (B, H, T, D); k, v (B, K, S, D); positions (B, T) long;
    attention_mask (B, S) with 1 for tokens and 0 for padding, Hugging Face style.

What the options mean (which keys a query sees, the temperature) is written once, in
:class:`ropelab.attention_spec.AttentionSpec` (``module.spec``), which
:class:`ropelab.nnx.Attention` holds too; this module adds torch's layout and kernel.

The kernel is ``torch.nn.functional.scaled_dot_product_attention``. A plainly causal
call (no padding, chunk, window or score bias, no cached prefix under several new
tokens) passes ``is_causal=True`` and no mask, so no T x T matrix is built; the others
pass one boolean (or, with a score bias, float) mask. :func:`eager_attention` is the
plain path beside it, with the same meaning.
"""

from __future__ import annotations

import math

from .._optional import require
from ..attention_spec import AttentionSpec, SpecField
from ..checks import check_choice, check_float
from ..config import RopeConfig

torch = require("torch", feature="ropelab.torch")
nn = torch.nn
F = torch.nn.functional

from .cache import Cache, KVCache, positions_from_mask  # noqa: E402
from .checks import check_integer_tensor, check_padding_mask  # noqa: E402
from .rotary import RotaryEmbedding  # noqa: E402

__all__ = ["Attention", "eager_attention", "rms_norm"]

KERNELS = ("sdpa", "eager")


def rms_norm(x, eps: float):
    """Weightless RMS norm over the last dim, in float32 (Llama 4's L2Norm)."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def eager_attention(q, k, v, attn_mask=None, is_causal=False, enable_gqa=False):
    """The plain path: softmax(q k^T / sqrt(D) + mask) v, with the full score matrix.

    Same arguments and meaning as ``scaled_dot_product_attention`` (boolean masks:
    True means attend). q ``(B, H, T, D)``, k/v ``(B, K, S, D)`` -> ``(B, H, T, D)``.
    """
    if enable_gqa and k.shape[1] != q.shape[1]:
        groups = q.shape[1] // k.shape[1]
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])  # (B, H, T, S)
    if is_causal:
        t, s = scores.shape[-2:]
        keep = torch.ones(t, s, dtype=torch.bool, device=q.device).tril(diagonal=s - t)
        scores = scores.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    return torch.matmul(torch.softmax(scores, dim=-1), v)


class Attention(nn.Module):
    """Grouped-query attention whose positional encoding is a component.

    Args:
        d_model: model width (input and output features).
        num_heads: query heads H.
        num_kv_heads: key/value heads K (divides H; default H).
        head_dim: D (default ``d_model // num_heads``, which must then divide evenly).
        rope: None (NoPE), a :class:`ropelab.RopeConfig` (wrapped in a
            :class:`RotaryEmbedding`), or a module ``rope(q, k, positions) -> (q, k)``
            with positions ``(B, T)`` long (xPos, M-RoPE and the like plug in here). A
            module with ``position_axes = 3`` (:class:`MRoPE`) also takes ``(3, B, T)``.
            A config, or a module's ``config``, must have this layer's head_dim
            (partial rotary is its ``rotary_dim``); checked on later assignment too.
        causal: each token sees earlier slots only; False for bidirectional.
        bias: biases on the four projections.
        chunk_size: Llama 4 chunked attention: a token sees only tokens of its own
            chunk of positions (``pos // chunk_size`` equal).
        window: sliding window: a token sees keys fewer than ``window`` positions away.
        qk_norm: weightless RMS norm of q and k after RoPE (Llama 4), eps ``qk_norm_eps``.
        temperature_tuning: ``(attn_scale, floor_scale)``: queries scaled by
            ``1 + attn_scale * log(floor((pos + 1) / floor_scale) + 1)`` (Llama 4 NoPE
            layers). Unlike transformers, which counts slots, ``pos`` here is the
            token's position, so left-padded rows get the same scale as unpadded ones.
        score_bias: None or a module ``score_bias(q_positions (B, T), k_positions (B, S))
            -> float`` broadcastable to ``(B, H, T, S)``, added to the scores (ALiBi, T5).
        dropout: attention dropout probability while training.

    The options but ``rope``, ``score_bias`` and ``dropout`` are validated and kept in
    ``self.spec`` (:class:`~ropelab.attention_spec.AttentionSpec`); ``attn.chunk_size``
    and the like read it, and setting one validates the new value.

    YaRN's and LongRoPE's attention factor is inside the rope rows (cos and sin are
    multiplied by it, as transformers does), so scores scale by its square. The rows
    are made for each call's positions, exact at any position, with no table kept.

    ``forward(x, positions=None, cache=None, attention_mask=None) -> (B, T, d_model)``:
    see :meth:`forward`.
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
        rope=None,
        causal: bool = True,
        bias: bool = False,
        chunk_size: int | None = None,
        window: int | None = None,
        qk_norm: bool = False,
        temperature_tuning: tuple[float, float] | None = None,
        qk_norm_eps: float = 1e-6,
        score_bias=None,
        dropout: float = 0.0,
    ):
        super().__init__()
        #: the validated options and the meaning they give (shared with ropelab.nnx.Attention)
        self.spec = AttentionSpec(
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
        spec = self.spec
        dropout = check_float("dropout", dropout, minimum=0.0)
        if dropout >= 1.0:
            raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}")
        if score_bias is not None and not isinstance(score_bias, nn.Module):
            raise TypeError(
                f"score_bias must be None or an nn.Module, got {type(score_bias).__name__}"
            )
        self.dropout = float(dropout)
        width, kv_width = spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim
        self.q_proj = nn.Linear(spec.d_model, width, bias=spec.bias)
        self.k_proj = nn.Linear(spec.d_model, kv_width, bias=spec.bias)
        self.v_proj = nn.Linear(spec.d_model, kv_width, bias=spec.bias)
        self.o_proj = nn.Linear(width, spec.d_model, bias=spec.bias)
        self.rope = rope
        self.score_bias = score_bias
        #: "sdpa" (fused, default) or "eager" (the plain path, for checks); checked when set
        self.kernel = "sdpa"

    def __setattr__(self, name, value):
        # rope and kernel are checked wherever they are set: here and on later assignment
        if name == "rope":
            value = self._checked_rope(value)
        elif name == "kernel":
            check_choice("kernel", value, KERNELS)
        super().__setattr__(name, value)

    def _checked_rope(self, rope):
        """None, or a rotary module for this layer's heads (a RopeConfig is wrapped in a
        :class:`RotaryEmbedding`); a module with a RopeConfig ``config`` must be made for
        this head_dim, as a bare config must (partial rotary is the config's
        ``rotary_dim``)."""
        if isinstance(rope, RopeConfig):
            self.spec.check_rope(rope)
            return RotaryEmbedding(rope)
        if rope is not None and not isinstance(rope, nn.Module):
            raise TypeError(
                f"rope must be None, a RopeConfig or an nn.Module, got {type(rope).__name__}"
            )
        config = getattr(rope, "config", None)
        if isinstance(config, RopeConfig):
            self.spec.check_rope(config)
        return rope

    # -- helpers --------------------------------------------------------------------

    @staticmethod
    def _layer_cache(cache):
        if cache is None or isinstance(cache, KVCache):
            return cache
        if isinstance(cache, Cache):
            if len(cache) != 1:
                raise ValueError(
                    f"an Attention layer takes one layer's cache (cache[i]); got a Cache of {len(cache)} layers"
                )
            return cache[0]
        raise TypeError(
            f"cache must be a KVCache, a one-layer Cache or None, got {type(cache).__name__}"
        )

    def _check_positions(self, positions, batch, length):
        check_integer_tensor("positions", positions)
        shape = tuple(positions.shape)
        if shape == (length,):
            return positions.unsqueeze(0)
        if len(shape) == 2 and shape[1] == length and shape[0] in (1, batch):
            return positions
        axes = getattr(self.rope, "position_axes", 1)
        if axes > 1 and len(shape) == 3 and shape[0] == axes and shape[2] == length and shape[1] in (1, batch):
            used = [f"{name}={getattr(self, name)!r}" for name in ("chunk_size", "window", "score_bias",
                                                                   "temperature_tuning")
                    if getattr(self, name) is not None]
            if used:
                raise ValueError(
                    f"{axes}-axis positions {shape} (M-RoPE) go to the rotary module only; "
                    f"{', '.join(used)} need one position per token: pass (B, T) positions"
                )
            return positions
        many = f", or ({axes}, B, T) for this layer's rotary module" if axes > 1 else ""
        raise ValueError(
            f"positions must be shaped (T,) = ({length},) or (B, T) = ({batch}, {length}){many}, got {shape}"
        )

    def _keep(self, past, length, q_pos, k_pos, attention_mask, device):
        """The spec's boolean keep-mask (B or 1, 1, T, S), or None when every key is seen."""
        slots = torch.arange(past + length, device=device)  # new token i sits in slot past + i
        key_valid = None if attention_mask is None else attention_mask.to(torch.bool)
        return self.spec.keep(slots[past:], slots, q_pos, k_pos, key_valid=key_valid)

    def _mask(self, batch, length, past, q_pos, k_pos, attention_mask, device):
        """Boolean keep-mask (B or 1, 1, T, S), or None with is_causal when plain causal."""
        if self.spec.plain(padded=attention_mask is not None) and self.score_bias is None:
            if not self.spec.causal:
                return None, False
            if past == 0:  # SDPA's is_causal is the T == S triangle: no mask to build
                return None, True
            if length == 1:  # one new token sees every cached key
                return None, False
        return self._keep(past, length, q_pos, k_pos, attention_mask, device), False

    # -- forward --------------------------------------------------------------------

    def _check_dtype(self, x) -> None:
        """x in the weights' dtype, as ``nn.Linear`` needs (outside autocast, which casts)."""
        weight = self.q_proj.weight
        if x.dtype == weight.dtype or torch.is_autocast_enabled(x.device.type):
            return
        if not x.dtype.is_floating_point:
            raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
        raise TypeError(
            f"x has dtype {x.dtype} but the layer's weights are {weight.dtype}; cast one to "
            f"the other (x.to({weight.dtype}) or module.to({x.dtype})) or run under torch.autocast"
        )

    def _check_cache_dtype(self, x, layer_cache) -> None:
        """The cache in the weights' dtype (outside autocast, where keys are cast to the
        cache's dtype as they are written)."""
        weight = self.q_proj.weight
        if layer_cache.dtype == weight.dtype or torch.is_autocast_enabled(x.device.type):
            return
        raise ValueError(
            f"the KV cache holds {layer_cache.dtype} keys but the layer's weights are "
            f"{weight.dtype}; make the cache with dtype={weight.dtype} (Transformer.new_cache "
            f"does) or cast the module"
        )

    def _begin(self, x, positions, cache, attention_mask):
        """Check forward's inputs; return ``(batch, length, layer_cache, past, positions,
        attention_mask)``.

        ``positions`` come back as (B or 1, T) long, taken from ``attention_mask`` when
        not given, or without a mask from the cache's record
        (:meth:`KVCache.next_positions`); they stay None when they count on from the
        cache's length (``past + arange(T)``). Without a mask, ``attention_mask`` comes
        back as the cache's record of padding (:meth:`KVCache.key_mask`: a (B, S) bool)
        or None. Subclasses with their own score path start here too.
        """
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != self.d_model:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be shaped (B, T, d_model={self.d_model}), got {shape}")
        self._check_dtype(x)
        batch, length, _ = x.shape
        layer_cache = self._layer_cache(cache)
        past = 0 if layer_cache is None else layer_cache.length
        total = past + length
        if layer_cache is not None:
            if layer_cache.batch != batch:
                raise ValueError(
                    f"cache batch {layer_cache.batch} does not match x's batch {batch}"
                )
            layer_cache.check_room(length)
            self._check_cache_dtype(x, layer_cache)
        if attention_mask is not None:
            # bool from here on: the cache and positions_from_mask need not read its values again
            attention_mask = check_padding_mask(
                attention_mask, (batch, total), covers=f"(cached {past} + new {length} keys)"
            ).to(torch.bool)
            if positions is None:
                positions = positions_from_mask(attention_mask)[:, past:]
        elif layer_cache is not None:  # the cache's record: padding stays hidden, rows go on
            if positions is None:
                positions = layer_cache.next_positions(length)
            attention_mask = layer_cache.key_mask(length)
        if positions is not None:
            positions = self._check_positions(positions, batch, length)  # (B or 1, T)
        return batch, length, layer_cache, past, positions, attention_mask

    @staticmethod
    def _axes(positions):
        """``(positions for the rotary module, one position per token)``: 3-axis M-RoPE
        positions ``(3, B, T)`` give the first (temporal) axis to the cache's records."""
        if positions is not None and positions.dim() == 3:
            return positions, positions[0]
        return positions, positions

    def _project(self, x):
        """q ``(B, H, T, D)``, k and v ``(B, K, T, D)`` from x ``(B, T, d_model)``."""
        batch, length, _ = x.shape
        heads, kv, dim = self.num_heads, self.num_kv_heads, self.head_dim
        q = self.q_proj(x).view(batch, length, heads, dim).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).view(batch, length, kv, dim).transpose(1, 2)  # (B, K, T, D)
        v = self.v_proj(x).view(batch, length, kv, dim).transpose(1, 2)  # (B, K, T, D)
        return q, k, v

    def forward(self, x, positions=None, cache=None, attention_mask=None):
        """Attend: x ``(B, T, d_model)`` -> ``(B, T, d_model)``.

        Args:
            x: the new tokens' features ``(B, T, d_model)``.
            positions: ``(T,)`` or ``(B, T)`` integer position of each new token (what
                RoPE rotates by, and what chunks, windows and temperature tuning read).
                By default they follow ``attention_mask`` (:func:`positions_from_mask`:
                left padding starts every row at 0) or continue each row of the cache
                (:meth:`KVCache.next_positions`: the cache's length on, when it holds no
                padding and was given no positions; ``0..T-1`` without a cache). With an M-RoPE module, ``(3, B or 1, T)``
                (time, height, width, as Qwen2-VL's ``position_ids``) go to it whole;
                the mask stays causal by slot and the cache records the time axis.
            cache: None, a :class:`KVCache` or a one-layer :class:`Cache`. The new
                keys (rotated once, at their positions) and values are written after
                the ``S - T`` cached ones, and the queries attend to all ``S``.
            attention_mask: ``(B, S)`` 1 for tokens and 0 for padding over every key,
                cached and new (``S = T`` without a cache); padded keys are never
                attended to. The cache records it. Without a mask the new tokens are
                tokens and the padding the cache recorded stays hidden; without
                positions too, they continue each row's positions (after a
                left-padded prompt, decoding without a mask equals the full forward
                with the mask extended by ones).

        Returns:
            ``(B, T, d_model)`` in x's dtype; rows of padded tokens are computed but
            meaningless.
        """
        batch, length, layer_cache, past, positions, attention_mask = self._begin(
            x, positions, cache, attention_mask
        )
        rope_positions, positions = self._axes(positions)
        total = past + length

        def pos_tensor():  # (B or 1, T) long, built only when something needs it
            if positions is not None:
                return positions
            return torch.arange(past, total, device=x.device).unsqueeze(0)

        spec = self.spec
        heads, kv, dim = spec.num_heads, spec.num_kv_heads, spec.head_dim
        q, k, v = self._project(x)

        if isinstance(self.rope, RotaryEmbedding):
            # rows of exactly these positions
            q, k = self.rope(q, k, offset=past) if positions is None else self.rope(q, k, positions)
        elif rope_positions is not None and rope_positions.dim() == 3:
            q, k = self.rope(q, k, rope_positions.expand(-1, batch, length))
        elif self.rope is not None:
            q, k = self.rope(q, k, pos_tensor().expand(batch, length))
        if spec.qk_norm:
            q, k = rms_norm(q, spec.qk_norm_eps), rms_norm(k, spec.qk_norm_eps)
        if spec.temperature_tuning is not None:
            scale = spec.query_scale(pos_tensor().float(), torch)  # (B or 1, T) float32
            q = (q * scale[:, None, :, None]).to(q.dtype)  # (B or 1, 1, T, 1)

        need_pos = not spec.plain(padded=False) or self.score_bias is not None
        q_pos = (
            pos_tensor().expand(batch, length) if (need_pos or layer_cache is not None) else None
        )
        k_pos = q_pos
        if layer_cache is not None:
            k, v, k_pos = layer_cache.update(
                k, v, None if positions is None else q_pos, mask=attention_mask
            )  # (B, K, S, D), (B, S)

        keep, is_causal = self._mask(batch, length, past, q_pos, k_pos, attention_mask, x.device)
        attn_mask = keep
        if self.score_bias is not None:
            bias = self.score_bias(q_pos, k_pos).to(q.dtype)
            # (_mask never answers is_causal with a bias: the causal part is in keep)
            attn_mask = bias if keep is None else bias.masked_fill(~keep, float("-inf"))
        dropout_p = self.dropout if self.training else 0.0
        gqa = kv != heads
        if self.kernel == "eager":
            if dropout_p:
                raise ValueError("the eager kernel has no dropout; use kernel='sdpa' for training")
            y = eager_attention(q, k, v, attn_mask, is_causal, enable_gqa=gqa)
        else:
            y = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=attn_mask,
                dropout_p=dropout_p,
                is_causal=is_causal,
                enable_gqa=gqa,
            )  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(batch, length, heads * dim)
        return self.o_proj(y)

    def extra_repr(self) -> str:
        return self.spec.summary() + (", NoPE" if self.rope is None else "")
