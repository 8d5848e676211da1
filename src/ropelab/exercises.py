"""Classic RoPE exercises, with their usual signatures, as thin calls into ropelab.

- NoPE / iRoPE attention in NumPy: ``apply_rope(x, positions)``, ``irope_attention``,
  ``iRoPETransformer``. This ``apply_rope`` is not :func:`ropelab.apply_rope`: it takes
  positions (half layout, default frequencies), where the library's takes cos/sin tables.
- A bidirectional RoPE transformer block in NumPy: ``rope_transformer_block``.
- Flax NNX RoPE multi-head attention: ``mha_rope``.
- Interleaved RoPE of one ``(T, d)`` sequence: ``rope_apply``.

Shapes: B batch (N in the block's signature), T time, H heads, D head dim. The numpy
exercises compute in float64. ``mha_rope`` needs the ``jax`` extra and imports it only
when called.
"""

from __future__ import annotations

import numpy as np

from . import reference
from .checks import check_float, check_int
from .config import RopeConfig
from .rotary import apply_rope as _apply_rope
from .tables import rope_tables

__all__ = [
    "apply_rope",
    "iRoPETransformer",
    "irope_attention",
    "mha_rope",
    "rope_apply",
    "rope_transformer_block",
]


def _integer(name: str, value, *, minimum: int = 1) -> int:
    """``value`` as an int; floats are accepted when whole (callers of these signatures
    pass 4.0 for 4)."""
    return check_int(name, value, minimum=minimum, whole_floats=True)


def _array(name: str, value, ndim: int | None = None) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise TypeError(f"{name} must be a real-valued array, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    return arr.astype(np.float64)


# --- NoPE / iRoPE attention (numpy) -------------------------------------------------------


def apply_rope(x: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """RoPE by positions in the half layout, ``(x[i], x[i + D/2])`` pairs, float64.

    Not :func:`ropelab.apply_rope` (which takes cos/sin tables): the exercise's form.
    Frequencies ``10000 ** (-i / (D/2))``, i.e. ``RopeConfig(D)``'s default schedule.

    Args:
        x: ``(B, H, T, D)`` (any ``(..., T, D)``), D even.
        positions: ``(T,)`` token positions.

    Returns:
        ``x``'s shape, float64.
    """
    x = _array("x", x)
    if x.ndim < 2:
        raise ValueError(f"x must be shaped (batch, num_heads, seq_len, d_k), got shape {x.shape}")
    d_k = x.shape[-1]
    if d_k % 2:
        raise ValueError(f"RoPE needs an even head dim d_k, got d_k={d_k}")
    positions = np.asarray(positions)
    if positions.shape != (x.shape[-2],):
        raise ValueError(
            f"positions must be shaped (seq_len,) = ({x.shape[-2]},) to match x {x.shape}, "
            f"got {positions.shape}"
        )
    cos, sin = rope_tables(RopeConfig(d_k, layout="half"), positions)  # (T, D/2)
    return _apply_rope(x, cos, sin, layout="half")


def irope_attention(
    Q: np.ndarray,
    K: np.ndarray,
    V: np.ndarray,
    positions: np.ndarray,
    use_rope: bool = True,
    causal: bool = True,
) -> np.ndarray:
    """Attention with RoPE on Q and K (a RoPE layer) or none (a NoPE layer).

    Args:
        Q, K: ``(B, H, T, D)``; V: ``(B, H, T, Dv)``.
        positions: ``(T,)``, used when ``use_rope``.
        use_rope: rotate Q and K (:func:`apply_rope`) before the scores.
        causal: each query sees itself and earlier keys only.

    Returns:
        ``(B, H, T, Dv)`` float64.
    """
    Q = _array("Q", Q, 4)
    K = _array("K", K, 4)
    V = _array("V", V, 4)
    if K.shape != Q.shape or V.shape[:-1] != Q.shape[:-1]:
        raise ValueError(
            f"Q and K must share one shape (B, H, T, D) and V must be (B, H, T, Dv), "
            f"got Q {Q.shape}, K {K.shape}, V {V.shape}"
        )
    if use_rope:
        Q = apply_rope(Q, positions)
        K = apply_rope(K, positions)
    return reference.attention(Q, K, V, causal=bool(causal))


class iRoPETransformer:
    """A stack whose layers in ``rope_layers`` use RoPE and the rest NoPE.

    Llama 4's iRoPE (interleaved RoPE) is such a pattern; :attr:`pattern` gives it as
    data, ``("rope" | "nope", ...)``, one entry per layer.
    """

    def __init__(self, num_layers: int, rope_layers: set[int]):
        self.num_layers = _integer("num_layers", num_layers)
        try:
            layers = set(rope_layers)
        except TypeError:
            raise TypeError(f"rope_layers must be a set of layer indices, got {rope_layers!r}") from None
        # whole floats are taken as indices here too, as for num_layers (4.0 for 4)
        self.rope_layers = {
            check_int("an entry of rope_layers", idx, minimum=0, maximum=self.num_layers - 1, whole_floats=True)
            for idx in layers
        }

    @property
    def pattern(self) -> tuple[str, ...]:
        """Per-layer positional scheme: ``"rope"`` for layers in rope_layers, else ``"nope"``."""
        return tuple("rope" if i in self.rope_layers else "nope" for i in range(self.num_layers))

    def forward_layer(self, Q, K, V, positions, layer_idx):
        """Causal attention of layer ``layer_idx``: RoPE there if it is a RoPE layer."""
        index = check_int("layer_idx", layer_idx, minimum=0, maximum=self.num_layers - 1, whole_floats=True)
        use_rope = index in self.rope_layers
        return irope_attention(Q, K, V, positions, use_rope=use_rope, causal=True)


# --- a RoPE transformer block (numpy) ------------------------------------------------------


def rope_transformer_block(x, w_q, w_k, w_v, w_o, num_heads, freqs_cos, freqs_sin):
    """One bidirectional attention block with interleaved RoPE, residual, layer norm.

    ``LayerNorm(x + concat_h(softmax(rot(x W_q) rot(x W_k)^T / sqrt(D)) x W_v) W_o)``,
    with ``rot`` pairing ``(q[2k], q[2k+1])`` (RoFormer, Su et al. 2021) by the given
    tables, and a layer norm over the last axis, eps 1e-5, without scale or shift.

    Args:
        x: ``(N, T, d_model)``.
        w_q, w_k, w_v, w_o: ``(d_model, d_model)``, applied as ``x @ w``.
        num_heads: H, dividing d_model; ``D = d_model / H`` even.
        freqs_cos, freqs_sin: ``(T, D/2)`` tables.

    Returns:
        ``(N, T, d_model)`` float64 numpy array.
    """
    x = _array("x", x, 3)
    n, t, d_model = x.shape
    weights = {}
    for name, w in (("w_q", w_q), ("w_k", w_k), ("w_v", w_v), ("w_o", w_o)):
        w = _array(name, w, 2)
        if w.shape != (d_model, d_model):
            raise ValueError(f"{name} must be (d_model, d_model) = {(d_model, d_model)}, got {w.shape}")
        weights[name] = w
    heads = _integer("num_heads", num_heads)
    if d_model % heads:
        raise ValueError(f"d_model={d_model} is not divisible by num_heads={heads}")
    d_head = d_model // heads
    if d_head % 2:
        raise ValueError(f"RoPE needs an even head dim, got d_model / num_heads = {d_head}")
    cos = _array("freqs_cos", freqs_cos)
    sin = _array("freqs_sin", freqs_sin)
    for name, table in (("freqs_cos", cos), ("freqs_sin", sin)):
        if table.shape != (t, d_head // 2):
            raise ValueError(f"{name} must be (T, d_head/2) = {(t, d_head // 2)}, got {table.shape}")

    def heads_of(w):  # (N, T, d_model) -> (N, H, T, D)
        return (x @ w).reshape(n, t, heads, d_head).transpose(0, 2, 1, 3)

    q = _apply_rope(heads_of(weights["w_q"]), cos, sin, layout="interleaved")
    k = _apply_rope(heads_of(weights["w_k"]), cos, sin, layout="interleaved")
    v = heads_of(weights["w_v"])  # values carry content: not rotated
    out = reference.attention(q, k, v, causal=False)  # (N, H, T, D)
    out = out.transpose(0, 2, 1, 3).reshape(n, t, d_model)  # (N, T, d_model)
    y = out @ weights["w_o"] + x
    mean = y.mean(axis=-1, keepdims=True)
    var = y.var(axis=-1, keepdims=True)
    return (y - mean) / np.sqrt(var + 1e-5)


# --- Flax NNX RoPE multi-head attention ------------------------------------------------------


def mha_rope(seed, x, num_heads, d_model, base):
    """RoPE multi-head attention in Flax NNX: :class:`ropelab.nnx.RopeMHA` built with
    ``nnx.Rngs(int(seed))``, applied to x.

    Args:
        seed: integer (floats with a whole value accepted) seeding the projections.
        x: ``(T, d_model)``.
        num_heads, d_model: integers, possibly passed as floats; ``d_model / num_heads`` even.
        base: the RoPE base (float).

    Returns:
        The ``(T, d_model)`` output, flattened to ``(T * d_model,)`` numpy float32.
    """
    seed = _integer("seed", seed, minimum=-(2**63))
    heads = _integer("num_heads", num_heads)
    width = _integer("d_model", d_model)
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != width:
        raise ValueError(f"x must be 2-D (T, d_model={width}), got shape {x.shape}")
    check_float("base", base, above=1.0)
    from flax import nnx

    from .nnx import RopeMHA

    model = RopeMHA(width, heads, base=float(base), rngs=nnx.Rngs(seed))
    # one compiled program instead of a dispatch (and a compile) per eager op
    out = nnx.jit(lambda m, a: m(a))(model, np.asarray(x, dtype=np.float32))
    return np.asarray(out).reshape(-1)


def rope_apply(seed, x, base):
    """Interleaved RoPE of a ``(T, d)`` array at positions ``0..T-1``, flattened.

    ``seed`` is unused (the signature has it, like :func:`mha_rope`'s). Frequencies
    follow ``theta_i = base ** (-2i / d)``: with d=4 the second pair turns by
    ``10000 ** (-2/4) = 1e-2`` rad per position (a worked example often quoted with this
    exercise says 1e-4; the formula is followed), so
    ``rope_apply(0, [[0,0,0,0],[1,0,0,1]], 1e4)`` ends ``-sin(0.01), cos(0.01)``.
    """
    x = _array("x", x, 2)
    base = check_float("base", base, above=1.0)
    T, d = x.shape
    if d % 2:
        raise ValueError(f"RoPE needs an even feature dimension d, got d={d}")
    config = RopeConfig(d, theta=base, layout="interleaved")
    cos, sin = rope_tables(config, np.arange(T))
    return _apply_rope(x, cos, sin, layout="interleaved").reshape(-1)
