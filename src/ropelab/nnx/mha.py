"""RopeMHA: bidirectional multi-head attention with interleaved RoPE, in Flax NNX.

RoFormer (Su et al. 2021, arXiv:2104.09864). Shapes: B batch, T time, H heads, D head dim.

The four ``nnx.Linear`` projections are created in the order ``q_proj``, ``k_proj``,
``v_proj``, ``out_proj`` with Flax's defaults (bias on), exactly as the exercise's sketch
(:func:`ropelab.exercises.mha_rope`) does, so the same ``nnx.Rngs`` draw the same
weights. Frequencies come from ``RopeConfig(D, theta=base)`` (``theta_i = base ** (-2i /
D)``, the exercise's formula) and the rotation from :func:`ropelab.apply_rope` with the
interleaved layout (adjacent pairs ``(x[2i], x[2i+1])``).
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from ..checks import check_int
from ..config import RopeConfig
from ..rotary import apply_rope
from .attention import attend, position_tables

__all__ = ["RopeMHA"]


class RopeMHA(nnx.Module):
    """Multi-head self-attention with RoPE on q and k (not v), no mask (the NNX RoPE MHA exercise).

    Args:
        d_model: model width; divisible by ``num_heads``.
        num_heads: H; ``D = d_model // num_heads`` must be even.
        base: the RoPE base (theta), a plain float attribute.
        rngs: ``nnx.Rngs`` for the four projections.

    Call: ``x`` ``(T, d_model)`` or ``(B, T, d_model)`` at positions ``0..T-1``;
    returns the same shape.
    """

    def __init__(self, d_model: int, num_heads: int, *, base: float = 10000.0, rngs: nnx.Rngs):
        d_model = check_int("d_model", d_model, minimum=1)
        num_heads = check_int("num_heads", num_heads, minimum=1)
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        head_dim = d_model // num_heads
        if head_dim % 2:
            raise ValueError(
                f"RoPE needs an even head dim, got d_model // num_heads = {d_model} // {num_heads} = {head_dim}"
            )
        RopeConfig(head_dim, theta=base)  # validates base before any weight is drawn
        self.d_model = d_model
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.base = float(base)
        self.q_proj = nnx.Linear(d_model, d_model, rngs=rngs)
        self.k_proj = nnx.Linear(d_model, d_model, rngs=rngs)
        self.v_proj = nnx.Linear(d_model, d_model, rngs=rngs)
        self.out_proj = nnx.Linear(d_model, d_model, rngs=rngs)

    @property
    def rope(self) -> RopeConfig:
        """The rotary schedule: ``RopeConfig(D, theta=base)``, interleaved."""
        return RopeConfig(self.head_dim, theta=self.base, layout="interleaved")

    def _rotated(self, x):
        """x ``(T, d_model)`` or ``(B, T, d_model)`` -> q, k (rotated), v as ``(B, T, H, D)``."""
        x = jnp.asarray(x)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3 or x.shape[-1] != self.d_model:
            raise ValueError(
                f"x must be shaped (T, d_model={self.d_model}) or (B, T, d_model), got {tuple(x.shape)}"
            )
        B, T, _ = x.shape
        H, D = self.num_heads, self.head_dim
        q = self.q_proj(x).reshape(B, T, H, D)  # (B, T, H, D)
        k = self.k_proj(x).reshape(B, T, H, D)
        v = self.v_proj(x).reshape(B, T, H, D)
        cos, sin = position_tables(self.rope, T)  # (T, D/2) float64, cached
        cos, sin = cos[:, None, :], sin[:, None, :]  # (T, 1, D/2): broadcast over heads
        q = apply_rope(q, cos, sin, layout="interleaved")
        k = apply_rope(k, cos, sin, layout="interleaved")  # v is not rotated
        return q, k, v

    def scores(self, x):
        """The attention logits ``q_i . k_j / sqrt(D)`` after RoPE: ``(B, H, T, T)`` (or ``(H, T, T)``).

        RoPE makes ``scores[..., i, j]`` depend on the positions only through ``i - j``.
        """
        q, k, _ = self._rotated(x)
        out = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(jnp.asarray(self.head_dim, q.dtype))
        return out[0] if jnp.ndim(x) == 2 else out

    def __call__(self, x):
        """Bidirectional attention at positions ``0..T-1``: x ``(T, d_model)`` or
        ``(B, T, d_model)`` -> the same shape (no mask, no cache)."""
        q, k, v = self._rotated(x)
        B, T, H, D = q.shape
        out = attend(q, k, v, causal=False).reshape(B, T, H * D)  # (B, T, H*D)
        out = self.out_proj(out)
        return out[0] if jnp.ndim(x) == 2 else out
