"""Test helpers shared by every folder of the suite: float64 references written
independently of ropelab, and the decode-equals-full check.

Shapes: B batch, T time, H heads, D head dim, R rotary dim.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np

#: folders left out because their framework is missing, one line each (the summary prints them)
SKIPPED_FOLDERS: list[str] = []


def skip_folder_without(folder: str, *modules: str) -> list[str]:
    """``collect_ignore_glob`` for a folder's conftest: every file of the folder when one
    of ``modules`` is not installed (noted once in the summary), nothing otherwise."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if not missing:
        return []
    SKIPPED_FOLDERS.append(f"tests/{folder}: {', '.join(missing)} not installed")
    return ["*.py"]


def reference_inv_freq(theta: float, rotary_dim: int) -> np.ndarray:
    """``theta ** (-2i / R)`` in float64, one pair at a time (no shared code with ropelab)."""
    return np.array([theta ** (-2.0 * i / rotary_dim) for i in range(rotary_dim // 2)])


def reference_rope(x, positions, inv_freq, *, layout: str, scale: float = 1.0) -> np.ndarray:
    """Rotate ``x`` (..., T, D) pair by pair in float64 with plain loops.

    ``positions`` broadcasts to x.shape[:-1]; ``inv_freq`` is (R/2,); features past R
    pass through. ``scale`` multiplies cos and sin (Hugging Face's attention factor).
    """
    x = np.asarray(x, dtype=np.float64)
    out = x.copy()
    pos = np.broadcast_to(np.asarray(positions, dtype=np.float64), x.shape[:-1])
    half = len(inv_freq)
    rotary_dim = 2 * half
    for idx in np.ndindex(*x.shape[:-1]):
        p = pos[idx]
        for i in range(half):
            ia, ib = (2 * i, 2 * i + 1) if layout == "interleaved" else (i, i + half)
            phi = p * inv_freq[i]
            c, s = scale * math.cos(phi), scale * math.sin(phi)
            a, b = x[idx + (ia,)], x[idx + (ib,)]
            out[idx + (ia,)] = a * c - b * s
            out[idx + (ib,)] = a * s + b * c
    assert rotary_dim <= x.shape[-1]
    return out


def assert_decode_equals_full(attn, x, mask):
    """A prompt of 5 tokens, then 1, 3, 1 and 2 at a time through a KVCache, equals one
    full forward of ``attn`` on x ``(B, 12, d_model)`` with padding ``mask`` ``(B, 12)``."""
    import torch

    from ropelab.torch import KVCache

    full = attn(x, attention_mask=mask)
    cache = KVCache(x.shape[0], attn.num_kv_heads, 16, attn.head_dim)
    steps = [attn(x[:, :5], cache=cache, attention_mask=mask[:, :5])]
    for start, stop in ((5, 6), (6, 9), (9, 10), (10, 12)):
        steps.append(attn(x[:, start:stop], cache=cache, attention_mask=mask[:, :stop]))
    rows = mask.bool()
    torch.testing.assert_close(torch.cat(steps, 1)[rows], full[rows], rtol=1e-5, atol=1e-5)


def assert_maskless_decode_equals_full(attn, x, mask):
    """A left-padded prompt of 5 tokens with its mask, then 1, 3, 1 and 2 tokens at a
    time through a KVCache with no mask, equals one full forward of ``attn`` on x
    ``(B, 12, d_model)`` with ``mask`` ``(B, 12)``, whose slots past the prompt are ones:
    the cache keeps the prompt's padding hidden and continues each row's positions."""
    import torch

    from ropelab.torch import KVCache

    assert bool(mask[:, 5:].all()), "the slots after the prompt must be tokens"
    full = attn(x, attention_mask=mask)
    cache = KVCache(x.shape[0], attn.num_kv_heads, 16, attn.head_dim)
    steps = [attn(x[:, :5], cache=cache, attention_mask=mask[:, :5])]
    for start, stop in ((5, 6), (6, 9), (9, 10), (10, 12)):
        steps.append(attn(x[:, start:stop], cache=cache))
    rows = mask.bool()
    torch.testing.assert_close(torch.cat(steps, 1)[rows], full[rows], rtol=1e-5, atol=1e-5)
