"""Multi-head attention with pluggable positions: RoPE, NoPE, or any rotary-like module.

Vaswani et al. 2017 (arXiv:1706.03762) attention with grouped-query heads (Ainslie et
al. 2023, arXiv:2305.13245), rotary positions (Su et al. 2021, arXiv:2104.09864) or none
(NoPE, Kazemnejad et al. 2023, arXiv:2305.19466), and Llama 4's options: chunked
attention and query/key RMS norm on RoPE layers, attention temperature tuning on NoPE
layers (Nakanishi 2025, arXiv:2501.19399).

Shapes: B batch, T new tokens, S keys (cached + new), H heads, K kv heads, D head dim.
    x (B, T, d_model); q (B, H, T, D); k, v (B, K, S, D); positions (B, T) long;
    attention_mask (B, S) with 1 for tokens and 0 for padding, Hugging Face style.

The kernel is ``torch.nn.functional.scaled_dot_product_attention``. A plainly causal
call (no padding, chunk, window or score bias, no cached prefix under several new
tokens) passes ``is_causal=True`` and no mask, so no T x T matrix is built; the others
pass one boolean (or, with a score bias, float) mask. :func:`eager_attention` is the
plain path beside it, with the same meaning.
"""

from __future__ import annotations

import math

from .._optional import require
from ..config import RopeConfig

torch = require("torch", feature="ropelab.torch")
nn = torch.nn
F = torch.nn.functional

from .cache import Cache, KVCache, positions_from_mask  # noqa: E402
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


def _check_count(name, value, *, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"{name} must be a positive integer{' or None' if allow_none else ''}, got {value!r}"
        )
    return value


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

    YaRN's and LongRoPE's attention factor is inside the rope tables (cos and sin are
    multiplied by it, as transformers does), so scores scale by its square.

    ``forward(x, positions=None, cache=None, attention_mask=None) -> (B, T, d_model)``.
    ``positions`` (T,) or (B, T) long; by default they follow ``attention_mask``
    (:func:`positions_from_mask`) or count on from the cache's length. With an M-RoPE
    module, ``(3, B or 1, T)`` (time, height, width, as Qwen2-VL's ``position_ids``) go to
    it whole; the mask stays causal by slot and the cache records the time axis. ``cache`` is a
    :class:`KVCache` (or a one-layer :class:`Cache`); the new keys are written to it.
    """

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
        _check_count("d_model", d_model)
        _check_count("num_heads", num_heads)
        if head_dim is None:
            if d_model % num_heads:
                raise ValueError(
                    f"d_model={d_model} is not divisible by num_heads={num_heads}; "
                    "pass head_dim or choose num_heads dividing d_model"
                )
            head_dim = d_model // num_heads
        _check_count("head_dim", head_dim)
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        _check_count("num_kv_heads", num_kv_heads)
        if num_heads % num_kv_heads:
            raise ValueError(
                f"num_heads={num_heads} is not divisible by num_kv_heads={num_kv_heads}"
            )
        self.chunk_size = _check_count("chunk_size", chunk_size, allow_none=True)
        self.window = _check_count("window", window, allow_none=True)
        if temperature_tuning is not None:
            try:
                attn_scale, floor_scale = (float(v) for v in temperature_tuning)
            except (TypeError, ValueError):
                raise ValueError(
                    f"temperature_tuning must be (attn_scale, floor_scale), got {temperature_tuning!r}"
                ) from None
            if not (math.isfinite(attn_scale) and floor_scale > 0 and math.isfinite(floor_scale)):
                raise ValueError(
                    f"temperature_tuning needs a finite attn_scale and floor_scale > 0, got {temperature_tuning!r}"
                )
            temperature_tuning = (attn_scale, floor_scale)
        self.temperature_tuning = temperature_tuning
        if not (isinstance(qk_norm_eps, (int, float)) and qk_norm_eps > 0):
            raise ValueError(f"qk_norm_eps must be a number > 0, got {qk_norm_eps!r}")
        if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if isinstance(rope, RopeConfig):
            if rope.head_dim != head_dim:
                raise ValueError(
                    f"rope config has head_dim={rope.head_dim} but the attention heads have "
                    f"head_dim={head_dim}"
                )
            rope = RotaryEmbedding(rope)
        elif rope is not None and not isinstance(rope, nn.Module):
            raise TypeError(
                f"rope must be None, a RopeConfig or an nn.Module, got {type(rope).__name__}"
            )
        if score_bias is not None and not isinstance(score_bias, nn.Module):
            raise TypeError(
                f"score_bias must be None or an nn.Module, got {type(score_bias).__name__}"
            )

        self.d_model, self.num_heads, self.num_kv_heads, self.head_dim = (
            d_model,
            num_heads,
            num_kv_heads,
            head_dim,
        )
        self.causal = bool(causal)
        self.qk_norm = bool(qk_norm)
        self.qk_norm_eps = float(qk_norm_eps)
        self.dropout = float(dropout)
        self.q_proj = nn.Linear(d_model, num_heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(d_model, num_kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, num_kv_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(num_heads * head_dim, d_model, bias=bias)
        self.rope = rope
        self.score_bias = score_bias
        #: "sdpa" (fused, default) or "eager" (the plain path, for checks)
        self.kernel = "sdpa"

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
        if not isinstance(positions, torch.Tensor):
            raise TypeError(f"positions must be a torch tensor, got {type(positions).__name__}")
        if (
            positions.dtype.is_floating_point
            or positions.dtype == torch.bool
            or positions.is_complex()
        ):
            raise TypeError(f"positions must be an integer tensor, got dtype {positions.dtype}")
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

    def _mask(self, batch, length, past, q_pos, k_pos, attention_mask, device):
        """Boolean keep-mask (B or 1, 1, T, S), or None with is_causal when plain causal."""
        total = past + length
        plain = attention_mask is None and self.chunk_size is None and self.window is None
        if plain and self.score_bias is None:
            if not self.causal:
                return None, False
            if past == 0:
                return None, True
            if length == 1:  # one new token sees every cached key
                return None, False
        keep = None
        if self.causal:  # by slot: new token i sits in slot past + i
            keep = torch.ones(length, total, dtype=torch.bool, device=device).tril(diagonal=past)
            keep = keep.unsqueeze(0)  # (1, T, S)
        if self.chunk_size is not None or self.window is not None:
            qp, kp = q_pos[:, :, None], k_pos[:, None, :]  # (B, T, 1), (B, 1, S)
            if self.chunk_size is not None:
                same = (qp // self.chunk_size) == (kp // self.chunk_size)
                keep = same if keep is None else keep & same
            if self.window is not None:
                near = (qp - kp) < self.window
                if not self.causal:
                    near = near & ((kp - qp) < self.window)
                keep = near if keep is None else keep & near
        if attention_mask is not None:
            pad = attention_mask.to(torch.bool)[:, None, :]  # (B, 1, S)
            keep = pad if keep is None else keep & pad
        if keep is None:
            return None, False
        # a row with no key at all (a left pad under a causal mask) would give NaN;
        # let it see every key instead: its output is a pad's and is never used
        keep = keep | ~keep.any(dim=-1, keepdim=True)
        return keep.unsqueeze(1), False  # (B or 1, 1, T, S)

    # -- forward --------------------------------------------------------------------

    def _begin(self, x, positions, cache, attention_mask):
        """Check forward's inputs; return ``(batch, length, layer_cache, past, positions)``.

        ``positions`` come back as (B or 1, T) long, taken from ``attention_mask`` when
        not given, and stay None only when neither was given (they then count on from
        the cache's length). Subclasses with their own score path start here too.
        """
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != self.d_model:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be shaped (B, T, d_model={self.d_model}), got {shape}")
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
        if attention_mask is not None:
            if not isinstance(attention_mask, torch.Tensor) or tuple(attention_mask.shape) != (
                batch,
                total,
            ):
                shape = (
                    tuple(attention_mask.shape)
                    if isinstance(attention_mask, torch.Tensor)
                    else type(attention_mask).__name__
                )
                raise ValueError(
                    f"attention_mask must be shaped (B, S) = ({batch}, {total}) (cached {past} + new "
                    f"{length} keys), got {shape}"
                )
            if positions is None:
                positions = positions_from_mask(attention_mask)[:, past:]
        if positions is not None:
            positions = self._check_positions(positions, batch, length)  # (B or 1, T)
        return batch, length, layer_cache, past, positions

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
        batch, length, layer_cache, past, positions = self._begin(
            x, positions, cache, attention_mask
        )
        rope_positions, positions = self._axes(positions)
        total = past + length

        def pos_tensor():  # (B or 1, T) long, built only when something needs it
            if positions is not None:
                return positions
            return torch.arange(past, total, device=x.device).unsqueeze(0)

        heads, kv, dim = self.num_heads, self.num_kv_heads, self.head_dim
        q, k, v = self._project(x)

        if isinstance(self.rope, RotaryEmbedding):
            q, k = self.rope(
                q, k, positions, offset=past
            )  # slices the tables when positions is None
        elif rope_positions is not None and rope_positions.dim() == 3:
            q, k = self.rope(q, k, rope_positions.expand(-1, batch, length))
        elif self.rope is not None:
            q, k = self.rope(q, k, pos_tensor().expand(batch, length))
        if self.qk_norm:
            q, k = rms_norm(q, self.qk_norm_eps), rms_norm(k, self.qk_norm_eps)
        if self.temperature_tuning is not None:
            attn_scale, floor_scale = self.temperature_tuning
            # the form of transformers' Llama4TextAttention, in float32
            scale = (
                torch.log1p(torch.floor((pos_tensor().float() + 1.0) / floor_scale)) * attn_scale
                + 1.0
            )
            q = (q * scale[:, None, :, None]).to(q.dtype)  # (B or 1, 1, T, 1)

        need_pos = (
            self.chunk_size is not None or self.window is not None or self.score_bias is not None
        )
        q_pos = (
            pos_tensor().expand(batch, length) if (need_pos or layer_cache is not None) else None
        )
        k_pos = q_pos
        if layer_cache is not None:
            k, v, k_pos = layer_cache.update(k, v, q_pos)  # (B, K, S, D), (B, S)

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
        opts = [
            f"d_model={self.d_model}",
            f"heads={self.num_heads}",
            f"kv_heads={self.num_kv_heads}",
            f"head_dim={self.head_dim}",
            f"causal={self.causal}",
        ]
        for name in ("chunk_size", "window", "temperature_tuning"):
            if getattr(self, name) is not None:
                opts.append(f"{name}={getattr(self, name)}")
        if self.qk_norm:
            opts.append(f"qk_norm_eps={self.qk_norm_eps}")
        if self.rope is None:
            opts.append("NoPE")
        return ", ".join(opts)
