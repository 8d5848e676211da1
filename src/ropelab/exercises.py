"""The seed exercises, with their exact signatures, as thin calls into ropelab.

Seed 004: ``rope_apply``.
"""

from __future__ import annotations

import numpy as np

from .config import RopeConfig
from .rotary import apply_rope
from .tables import rope_tables

__all__ = ["rope_apply"]


def rope_apply(seed, x, base):
    """Seed 004: interleaved RoPE of a ``(T, d)`` array at positions ``0..T-1``, flattened.

    ``seed`` is unused (the seed's interface passes it). Frequencies follow the seed's
    formula ``theta_i = base ** (-2i / d)``. Note: the seed's worked example writes the
    second pair's angle at position 1 as 1e-4 rad, but its own formula with d=4, i=1
    gives ``10000 ** (-2/4) = 1e-2`` rad; this follows the formula, so
    ``rope_apply(0, [[0,0,0,0],[1,0,0,1]], 1e4)`` ends ``-sin(0.01), cos(0.01)``.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D (T, d), got shape {x.shape}")
    T, d = x.shape
    if d % 2:
        raise ValueError(f"RoPE needs an even feature dimension d, got d={d}")
    config = RopeConfig(d, theta=float(base), layout="interleaved")
    cos, sin = rope_tables(config, np.arange(T))
    return apply_rope(x, cos, sin, layout="interleaved").reshape(-1)
