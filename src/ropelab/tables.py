"""Exact cos/sin tables at any position.

NumPy positions get float64 rows, formed as below; torch and jax positions get float32
rows computed on their own device with exact integer-turn arithmetic
(:mod:`ropelab.rows`), traceable by ``torch.compile`` and ``jax.jit``.

A float32 angle ``p * inv_freq`` at p = 1,000,000 is off by up to ~0.03 rad (one
float32 ulp of 1e6 is 0.0625), so float32 tables, as most libraries build them, are
wrong in the second decimal at long context. Here the angle is formed in float64 as an
exact two-term sum ``hi + lo`` (Dekker's error-free product), and the rotation by the
tiny ``lo`` is applied analytically, so the only error left is that of ``inv_freq``
itself and of the final cos/sin: below 1e-6 absolute for every position < 2**31.
"""

from __future__ import annotations

import numpy as np

from ._optional import array_kind
from .checks import check_positions
from .config import RopeConfig
from .rows import check_length_covers, length_from
from .tables_type import RopeTables

__all__ = ["exact_angles", "rope_tables"]

_SPLIT = 134217729.0  # 2**27 + 1, Veltkamp's splitter for float64


def _split(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = _SPLIT * a
    hi = t - (t - a)
    return hi, a - hi


def exact_angles(positions: np.ndarray, inv_freq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``positions[..., None] * inv_freq`` as an unevaluated float64 sum ``hi + lo``.

    ``hi`` is the rounded product and ``lo`` its exact rounding error (Dekker 1971), so
    ``hi + lo`` equals the real product of the two float64 inputs.
    """
    p = np.asarray(positions, dtype=np.float64)[..., None]
    f = np.asarray(inv_freq, dtype=np.float64)
    hi = p * f
    p_hi, p_lo = _split(p)
    f_hi, f_lo = _split(f)
    lo = ((p_hi * f_hi - hi) + p_hi * f_lo + p_lo * f_hi) + p_lo * f_lo
    return hi, lo


def rope_tables(
    config: RopeConfig, positions, *, seq_len: int | None = None
) -> RopeTables:
    """cos and sin of ``positions * inv_freq``, shape ``positions.shape + (R/2,)``, as a
    :class:`~ropelab.RopeTables` carrying ``config.layout`` and ``config.head_dim`` (it
    unpacks as ``cos, sin``; ``apply_rope(x, tables)`` needs no layout).

    Args:
        config: the rotary schedule.
        positions: token positions, any shape, e.g. ``(T,)`` for one sequence, ``(B, T)``
            for per-row offsets, a KV-cache step or packed sequences. NumPy (or a list):
            integers or reals, rows in float64. A torch tensor or jax array of integers:
            float32 rows on the positions' device, computed there (no host round trip;
            traceable by ``torch.compile(fullgraph=True, dynamic=True)`` and ``jax.jit``).
        seq_len: the current length for length-dependent schemes (dynamic NTK,
            LongRoPE), at least ``max(positions) + 1``. Defaults to ``max(positions) +
            1``, as transformers does; traced or accelerator positions need it given
            (except under torch.compile, where it is read when the code runs), and so
            do positions that are all negative.

    Both tables are multiplied by ``config.attention_factor`` (YaRN's and LongRoPE's
    temperature), the way Hugging Face applies it. Accuracy against the true cos and sin
    of ``p * inv_freq`` (inv_freq the float64 value the scheme defines): 1e-15 in NumPy,
    3e-7 for torch and jax, at every integer ``|p| < 2**31`` (times the attention
    factor); negative positions are rotations by negative angles. NumPy integers beyond
    2**53 in magnitude (float64 cannot hold them) and torch/jax ones beyond 2**33 are
    refused (ValueError; on an accelerator or under a trace they are not read back).
    """
    if not isinstance(config, RopeConfig):
        raise TypeError(f"config must be a RopeConfig, got {type(config).__name__}")
    if not isinstance(positions, (np.ndarray, list, tuple, int, float, np.generic)):
        kind = array_kind(positions)
        if kind != "numpy":
            from .rows import rope_rows

            cos, sin = rope_rows(config, positions, kind, seq_len=seq_len)
            return RopeTables(cos, sin, config.layout, head_dim=config.head_dim)
    pos = check_positions("positions", positions)
    if config.dynamic and pos.size:
        largest = int(np.max(pos))
        if seq_len is None:
            seq_len = length_from(largest, config)
        else:
            check_length_covers(seq_len, largest, config)
    hi, lo = exact_angles(pos, config.inv_freq(seq_len))
    cos_hi, sin_hi = np.cos(hi), np.sin(hi)
    # rotate by the residual lo (|lo| <= half an ulp of hi): cos(lo) = 1 - lo^2/2 to 1e-30
    cos_lo = 1.0 - 0.5 * lo * lo
    cos = cos_hi * cos_lo - sin_hi * lo
    sin = sin_hi * cos_lo + cos_hi * lo
    factor = config.attention_factor
    if factor != 1.0:
        cos *= factor
        sin *= factor
    return RopeTables(cos, sin, config.layout, head_dim=config.head_dim)
