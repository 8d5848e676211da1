"""Shaw et al.'s relative position representations as an attention layer.

Shaw, Uszkoreit and Vaswani 2018 (arXiv:1803.02155): learned vectors for each clipped
relative distance, added to the keys in the scores and to the values in the output.
The value-side term has no place in a fused kernel, so :class:`ShawAttention` forms the
scores itself; everything else (projections, positions, masks, KV cache) is
:class:`ropelab.torch.Attention`'s.

Shapes: B batch, T new tokens, S keys (cached + new), H heads, K kv heads, D head dim,
c the clip.
    x (B, T, d_model); q (B, H, T, D); k, v (B, K, S, D); positions (B, T) long;
    relative index (B, T, S) in [0, 2c].
"""

from __future__ import annotations

import math

from .._optional import require
from ..checks import check_int
from ..positional import shaw_relative_index

torch = require("torch", feature="ropelab.torch.shaw")
nn = torch.nn
F = torch.nn.functional

from .attention import Attention, rms_norm  # noqa: E402

__all__ = ["ShawAttention"]


class ShawAttention(Attention):
    """Relative position representations (Shaw et al. 2018, arXiv:1803.02155).

    ``e_ij = q_i . (k_j + a^K_ij) / sqrt(D)``, ``out_i = sum_j p_ij (v_j + a^V_ij)``, with
    ``a_ij = w[clip(j - i, -clip, clip)]`` learned vectors shared by all heads (as in
    the paper), ``2 * clip + 1`` of each (``rel_k``, ``rel_v``). The relative terms are
    gathered from ``q @ w^K`` (B, H, T, 2c+1) and scattered into (B, H, T, 2c+1) before
    ``@ w^V``, so no (T, S, D) tensor is built.

    Same constructor as :class:`Attention` (no ``rope`` or ``score_bias``: the relative
    vectors are the positional encoding) plus ``clip``; same projections (``q_proj``,
    ``k_proj``, ``v_proj``, ``o_proj``), masks, positions and KV cache. The scores are
    formed explicitly (the fused kernel has no value-side term).
    """

    def __init__(self, d_model: int, num_heads: int, *, clip: int = 16, **kwargs):
        for name in ("rope", "score_bias"):
            if kwargs.get(name) is not None:
                raise ValueError(
                    f"ShawAttention takes no {name}: its relative vectors are the positions"
                )
        super().__init__(d_model, num_heads, **kwargs)
        self.clip = check_int("clip", clip, minimum=1)
        self.rel_k = nn.Embedding(2 * self.clip + 1, self.head_dim)
        self.rel_v = nn.Embedding(2 * self.clip + 1, self.head_dim)
        nn.init.normal_(self.rel_k.weight, std=0.02)
        nn.init.normal_(self.rel_v.weight, std=0.02)

    def forward(self, x, positions=None, cache=None, attention_mask=None):
        """Attend with relative keys and values: x ``(B, T, d_model)`` -> ``(B, T, d_model)``.

        ``positions`` ``(T,)`` or ``(B, T)`` (default: along ``attention_mask``, or on
        from each row of the cache) give the distances ``j - i`` the relative vectors are
        picked by; ``cache`` (a :class:`KVCache`) and ``attention_mask`` ``(B, S)`` (1
        for tokens, 0 for padding over cached and new keys) mean what they mean in
        :meth:`ropelab.torch.Attention.forward`.
        """
        batch, length, layer_cache, past, positions, attention_mask = self._begin(
            x, positions, cache, attention_mask
        )
        counted = positions is None  # slot indices, which the cache writes itself
        if counted:
            positions = torch.arange(past, past + length, device=x.device).unsqueeze(0)
        total = past + length
        q_pos = positions.expand(batch, length)  # (B, T)
        spec = self.spec
        heads, kv, dim = spec.num_heads, spec.num_kv_heads, spec.head_dim
        q, k, v = self._project(x)  # (B, H, T, D), (B, K, T, D)
        if spec.qk_norm:
            q, k = rms_norm(q, spec.qk_norm_eps), rms_norm(k, spec.qk_norm_eps)
        if spec.temperature_tuning is not None:  # scales both of q's terms, as in Attention
            scale = spec.query_scale(q_pos.float(), torch)  # (B, T) float32
            q = (q * scale[:, None, :, None]).to(q.dtype)  # (B, 1, T, 1)
        k_pos = q_pos
        if layer_cache is not None:
            k, v, k_pos = layer_cache.update(
                k, v, None if counted else q_pos, mask=attention_mask
            )  # (B, K, S, D), (B, S)
        if kv != heads:
            k = k.repeat_interleave(heads // kv, dim=1)
            v = v.repeat_interleave(heads // kv, dim=1)

        # the full matrix even when plainly causal: this path has no kernel flag to lean on
        keep = self._keep(past, length, q_pos, k_pos, attention_mask, x.device)
        index = shaw_relative_index(q_pos, k_pos, self.clip)  # (B, T, S) in [0, 2c]
        index = index[:, None].expand(batch, heads, length, total)  # (B, H, T, S)
        rel_scores = torch.matmul(q, self.rel_k.weight.t().to(q.dtype))  # (B, H, T, 2c+1)
        scores = torch.matmul(q, k.transpose(-1, -2)) + rel_scores.gather(-1, index)
        scores = scores / math.sqrt(dim)
        if keep is not None:
            scores = scores.masked_fill(~keep, float("-inf"))
        p = torch.softmax(scores.float(), dim=-1).to(v.dtype)  # (B, H, T, S)
        if self.training and self.dropout:
            p = F.dropout(p, self.dropout)
        per_distance = torch.zeros(
            batch, heads, length, 2 * self.clip + 1, dtype=p.dtype, device=p.device
        )
        per_distance.scatter_add_(-1, index, p)  # attention mass per clipped distance
        y = torch.matmul(p, v) + torch.matmul(
            per_distance, self.rel_v.weight.to(p.dtype)
        )  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(batch, length, heads * dim)
        return self.o_proj(y)

    def extra_repr(self) -> str:
        return super().extra_repr().replace("NoPE", f"Shaw clip={self.clip}")
