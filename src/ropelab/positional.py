"""Positional encodings other than RoPE, at the array level (numpy, like rotary.py).

Shapes: positions ``(..., T)``; outputs documented per function.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["sinusoidal"]


def sinusoidal(positions, d_model: int, *, base: float = 10000.0) -> np.ndarray:
    """Vaswani et al. 2017 (arXiv:1706.03762, sec. 3.5), float64 ``positions.shape + (d_model,)``.

    ``PE[p, 2i] = sin(p / base ** (2i / d_model))``, ``PE[p, 2i+1] = cos(...)``: sin on
    even features, cos on odd ones.
    """
    if isinstance(d_model, bool) or not isinstance(d_model, (int, np.integer)) or d_model < 2 or d_model % 2:
        raise ValueError(f"d_model must be an even integer >= 2, got {d_model!r}")
    if not math.isfinite(base) or base <= 0:
        raise ValueError(f"base must be a finite number > 0, got {base!r}")
    from .tables import exact_angles

    inv_freq = 1.0 / float(base) ** (np.arange(0, d_model, 2, dtype=np.float64) / d_model)
    hi, lo = exact_angles(np.asarray(positions, dtype=np.float64), inv_freq)
    out = np.empty(hi.shape[:-1] + (d_model,), dtype=np.float64)
    out[..., 0::2] = np.sin(hi) + np.cos(hi) * lo
    out[..., 1::2] = np.cos(hi) - np.sin(hi) * lo
    return out
