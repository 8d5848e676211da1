"""Plain float64 NumPy scaled dot-product attention: the library's reference attention.

Vaswani et al. 2017, "Attention Is All You Need" (arXiv:1706.03762), eq. 1:
``softmax(q k^T * scale) v`` with ``scale = 1 / sqrt(D)`` by default.

Shapes: q ``(..., H, Tq, D)``, k ``(..., K, Tk, D)``, v ``(..., K, Tk, Dv)``, result
``(..., H, Tq, Dv)``. ``K`` (kv heads) is ``H`` for multi-head attention; when it
divides ``H`` (grouped-query attention, Ainslie et al. 2023, arXiv:2305.13245), query
head ``h`` reads kv head ``h // (H // K)``, as Hugging Face's ``repeat_kv`` does.

Causal masking is aligned to the end: with ``Tq <= Tk`` the queries are the last ``Tq``
positions of the keys' sequence, so query ``i`` sees keys ``j <= i + Tk - Tq`` (the
convention of a KV cache, where new tokens follow the cached ones).

Everything is computed in float64 and written for clarity, not speed; the
exercises (:mod:`ropelab.exercises`) and the tests of every front end compare against it.
"""

from __future__ import annotations

import numpy as np

from .checks import check_bool, check_float, check_int

__all__ = ["attention", "causal_mask"]


def causal_mask(tq: int, tk: int) -> np.ndarray:
    """Boolean ``(Tq, Tk)`` mask, True where query ``i`` may see key ``j <= i + Tk - Tq``."""
    tq = check_int("tq", tq, minimum=0)
    tk = check_int("tk", tk, minimum=0)
    i = np.arange(tq)[:, None]
    j = np.arange(tk)[None, :]
    return j <= i + (tk - tq)


def _as_float64(name: str, a) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise TypeError(f"{name} must be a real-valued array, got dtype {arr.dtype}")
    if arr.ndim < 3:
        raise ValueError(f"{name} must be shaped (..., heads, T, D), got shape {arr.shape}")
    return arr.astype(np.float64)


def attention(q, k, v, *, causal: bool = True, mask=None, scale: float | None = None) -> np.ndarray:
    """Scaled dot-product attention in float64.

    Args:
        q: ``(..., H, Tq, D)`` queries.
        k: ``(..., K, Tk, D)`` keys, ``K`` dividing ``H``.
        v: ``(..., K, Tk, Dv)`` values.
        causal: mask keys after each query, aligned to the end (see the module docstring).
        mask: optional extra mask broadcastable to ``(..., H, Tq, Tk)``: boolean (True =
            may attend) or real (added to the scores, e.g. ``-inf`` to hide).
        scale: factor on the scores; ``1 / sqrt(D)`` by default.

    Returns:
        ``(..., H, Tq, Dv)`` float64. A query that sees no key at all gets zeros.
    """
    q = _as_float64("q", q)
    k = _as_float64("k", k)
    v = _as_float64("v", v)
    causal = check_bool("causal", causal)
    heads, tq, d = q.shape[-3:]
    kv_heads, tk, dk = k.shape[-3:]
    if dk != d:
        raise ValueError(f"q and k must share the head dim D, got q {q.shape} and k {k.shape}")
    if v.shape[-3:-1] != (kv_heads, tk):
        raise ValueError(
            f"v must be shaped (..., K={kv_heads}, Tk={tk}, Dv) like k, got v {v.shape} and k {k.shape}"
        )
    if kv_heads < 1 or heads % kv_heads:
        raise ValueError(
            f"the number of kv heads ({kv_heads}) must divide the number of query heads ({heads})"
        )
    if kv_heads != heads:
        # (..., K, Tk, D) -> (..., H, Tk, D): each kv head serves H/K consecutive query heads
        k = np.repeat(k, heads // kv_heads, axis=-3)
        v = np.repeat(v, heads // kv_heads, axis=-3)
    scale = 1.0 / np.sqrt(d) if scale is None else check_float("scale", scale)

    scores = np.einsum("...qd,...kd->...qk", q, k) * float(scale)  # (..., H, Tq, Tk)
    visible = np.ones(scores.shape[-2:], dtype=bool)
    if causal:
        visible = causal_mask(tq, tk)
    if mask is not None:
        mask = np.asarray(mask)
        try:
            ok = np.broadcast_shapes(mask.shape, scores.shape) == scores.shape
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(
                f"mask of shape {mask.shape} does not broadcast to the scores' shape {scores.shape}"
            )
        if mask.dtype == bool:
            visible = visible & mask
        elif np.issubdtype(mask.dtype, np.floating) or np.issubdtype(mask.dtype, np.integer):
            scores = scores + mask.astype(np.float64)
        else:
            raise TypeError(f"mask must be boolean or real, got dtype {mask.dtype}")
    # a real mask hides a key by adding -inf to its score
    visible = np.broadcast_to(visible, scores.shape) & ~np.isneginf(scores)
    scores = np.where(visible, scores, -np.inf)
    # subtract each row's max over visible keys: exp never overflows
    row_max = np.max(scores, axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    weights = np.where(visible, np.exp(scores - row_max), 0.0)
    total = np.sum(weights, axis=-1, keepdims=True)
    weights = weights / np.where(total > 0, total, 1.0)
    return np.einsum("...qk,...kd->...qd", weights, v)
