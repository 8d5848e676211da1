"""Positional encodings other than plain RoPE, at the array level (numpy, like rotary.py).

Absolute (sinusoidal), relative (Shaw clipping, T5 buckets, ALiBi slopes) and the RoPE
variants (xPos scales, 2-D axial tables, M-RoPE tables; p-RoPE's frequencies are a
scaling scheme, :class:`ropelab.scaling.PRoPE`, re-exported here). Everything here is
float64 numpy; the front ends cache these tables and do not re-derive them.

Shapes: T time, H heads, R rotary dim (R/2 pairs); positions ``(..., T)``; relative
positions are always *key minus query* (T5's convention); outputs documented per function.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from .checks import check_bool, check_float, check_int, check_positions, show
from .config import RopeConfig
from .scaling import PRoPE  # p-RoPE is a scaling scheme; users also find it here
from .tables_type import RopeTables

__all__ = [
    "PRoPE",
    "alibi_slopes",
    "axial_axis_config",
    "axial_rope_tables",
    "mrope_axis_of_pair",
    "mrope_tables",
    "shaw_relative_index",
    "sinusoidal",
    "t5_relative_buckets",
    "xpos_scales",
]


def _check_even(name: str, value) -> int:
    value = check_int(name, value, minimum=2)
    if value % 2:
        raise ValueError(f"{name} must be even, got {value}")
    return value


def sinusoidal(positions, d_model: int, *, base: float = 10000.0) -> np.ndarray:
    """Vaswani et al. 2017 (arXiv:1706.03762, sec. 3.5), float64 ``positions.shape + (d_model,)``.

    ``PE[p, 2i] = sin(p / base ** (2i / d_model))``, ``PE[p, 2i+1] = cos(...)``: sin on
    even features, cos on odd ones.
    """
    d_model = _check_even("d_model", d_model)
    base = check_float("base", base, above=0.0)
    positions = check_positions("positions", positions)
    from .tables import exact_angles

    inv_freq = 1.0 / base ** (np.arange(0, d_model, 2, dtype=np.float64) / d_model)
    hi, lo = exact_angles(np.asarray(positions, dtype=np.float64), inv_freq)
    out = np.empty(hi.shape[:-1] + (d_model,), dtype=np.float64)
    out[..., 0::2] = np.sin(hi) + np.cos(hi) * lo
    out[..., 1::2] = np.cos(hi) - np.sin(hi) * lo
    return out


# ---------------------------------------------------------------------------------------
# Relative positions: ALiBi, T5, Shaw
# ---------------------------------------------------------------------------------------


def alibi_slopes(num_heads: int) -> np.ndarray:
    """ALiBi's per-head slopes (Press et al. 2022, arXiv:2108.12409), float64 ``(H,)``.

    For a power of two ``n`` the slopes are the geometric sequence ``2**(-8/n * h)``,
    h = 1..n. For other head counts, as the paper's code and BLOOM do: the slopes of the
    largest power of two ``n < H``, then every other slope of ``2n`` (the odd ones) for
    the remaining ``H - n`` heads.
    """
    num_heads = check_int("num_heads", num_heads, minimum=1)
    closest = 2 ** math.floor(math.log2(num_heads))

    def geometric(n: int) -> np.ndarray:
        return 2.0 ** (-8.0 / n * np.arange(1, n + 1, dtype=np.float64))

    slopes = geometric(closest)
    if closest != num_heads:
        extra = geometric(2 * closest)[0::2][: num_heads - closest]
        slopes = np.concatenate([slopes, extra])
    return slopes


def t5_relative_buckets(
    relative_position, *, bidirectional: bool = True, num_buckets: int = 32, max_distance: int = 128
) -> np.ndarray:
    """T5's relative-position buckets (Raffel et al. 2020, Mesh TensorFlow), int64.

    Args:
        relative_position: integer array, *key position minus query position* (negative
            for keys in the past), any shape.
        bidirectional: encoder-style (keys on both sides get separate halves of the
            buckets) or decoder-style (future keys share bucket 0 with distance 0).
        num_buckets: buckets in all (>= 2; >= 4 when bidirectional, so each side has
            an exact bucket and a log bucket).
        max_distance: distances at and beyond this share the last bucket.

    Returns: buckets in ``[0, num_buckets)``, same shape as ``relative_position``. Half of
    a side's buckets hold exact distances, the other half log-spaced ones up to
    ``max_distance``. The log is taken in float32, as T5 (and transformers) take it, so
    the buckets match theirs exactly at the boundaries.
    """
    bidirectional = check_bool("bidirectional", bidirectional)
    num_buckets = check_int("num_buckets", num_buckets, minimum=2)
    max_distance = check_int("max_distance", max_distance, minimum=1)
    rel = np.asarray(relative_position)
    if rel.dtype == bool or not np.issubdtype(rel.dtype, np.integer):
        raise TypeError(f"relative_position must be integers, got dtype {rel.dtype}")
    rel = rel.astype(np.int64)
    buckets = np.zeros(rel.shape, dtype=np.int64)
    if bidirectional:
        if num_buckets < 4:
            raise ValueError(f"bidirectional T5 buckets need num_buckets >= 4, got {num_buckets}")
        num_buckets //= 2
        buckets += (rel > 0).astype(np.int64) * num_buckets
        distance = np.abs(rel)
    else:
        distance = -np.minimum(rel, 0)
    max_exact = num_buckets // 2
    if max_distance <= max_exact:
        raise ValueError(
            f"max_distance must exceed the {max_exact} exact buckets per side, got {max_distance}"
        )
    is_small = distance < max_exact
    with np.errstate(divide="ignore"):  # log(0) only where is_small discards it
        scaled = (
            np.log(distance.astype(np.float32) / np.float32(max_exact))
            / np.float32(math.log(max_distance / max_exact))
            * np.float32(num_buckets - max_exact)
        )
    large = max_exact + np.where(is_small, 0, scaled).astype(np.int64)
    large = np.minimum(large, num_buckets - 1)
    return buckets + np.where(is_small, distance, large)


def _signed_positions(name: str, positions):
    """Integer positions (numpy, a list, or a torch tensor) as int64, so that differences
    of unsigned ones do not wrap; TypeError for anything but integers."""
    if isinstance(positions, (list, tuple)):
        positions = np.asarray(positions)
    if isinstance(positions, np.ndarray):
        if positions.dtype.kind not in "iu":
            raise TypeError(f"{name} must be integers, got dtype {positions.dtype}")
        return positions.astype(np.int64, copy=False)
    dtype = getattr(positions, "dtype", None)
    if not hasattr(dtype, "is_floating_point"):  # not a torch tensor either
        raise TypeError(f"{name} must be a numpy array, a list or a torch tensor of integers, got {show(positions)}")
    if dtype.is_floating_point or dtype.is_complex or str(dtype) == "torch.bool":
        raise TypeError(f"{name} must be an integer tensor, got dtype {dtype}")
    return positions.long()


def shaw_relative_index(q_pos, k_pos, clip: int):
    """Shaw et al. 2018 (arXiv:1803.02155): index of the learned vector for each (query, key).

    ``clip(k_pos - q_pos, -clip, clip) + clip``, in ``[0, 2 * clip]``, shape
    ``q_pos.shape + k_pos.shape[-1:]`` (positions ``(..., Tq)`` and ``(..., Tk)`` with the
    same leading dims). Works on numpy arrays and torch tensors alike (integers in,
    integers out), so the torch front end indexes its tables with this same function.
    """
    clip = check_int("clip", clip, minimum=1)
    q_pos, k_pos = _signed_positions("q_pos", q_pos), _signed_positions("k_pos", k_pos)
    rel = k_pos[..., None, :] - q_pos[..., :, None]
    if isinstance(rel, np.ndarray):
        return np.clip(rel, -clip, clip) + clip
    return rel.clamp(-clip, clip) + clip


# ---------------------------------------------------------------------------------------
# RoPE variants: xPos, axial 2-D, M-RoPE
# ---------------------------------------------------------------------------------------


def xpos_scales(
    positions, rotary_dim: int, *, scale_base: float = 512.0, gamma: float = 0.4
) -> np.ndarray:
    """xPos's per-pair scale ``zeta_i ** (n / scale_base)`` (Sun et al. 2022, arXiv:2212.10554).

    ``zeta_i = (2i / R + gamma) / (1 + gamma)`` for pair i. Queries are multiplied by the
    scale at their position and keys divided by it, so the score between positions m
    and n carries ``zeta_i ** ((m - n) / scale_base)``: a decay (zeta < 1) that depends
    only on the distance. float64, shape ``positions.shape + (R/2,)``.

    The scales grow or shrink exponentially with the position (zeta_0 = 0.29 with the
    defaults: a factor of 10 every ~940 positions), so the float32 front end centres
    positions before calling this (any shift cancels in the scores).
    """
    rotary_dim = _check_even("rotary_dim", rotary_dim)
    scale_base = check_float("scale_base", scale_base, above=0.0)
    gamma = check_float("gamma", gamma, above=0.0)
    zeta = (np.arange(0, rotary_dim, 2, dtype=np.float64) / rotary_dim + gamma) / (1.0 + gamma)
    pos = np.asarray(check_positions("positions", positions), dtype=np.float64)[..., None]
    return zeta ** (pos / scale_base)


def axial_axis_config(config: RopeConfig) -> RopeConfig:
    """The schedule of one axis of 2-D axial RoPE: ``config`` at rotary dimension R/2."""
    if not isinstance(config, RopeConfig):
        raise TypeError(f"config must be a RopeConfig, got {type(config).__name__}")
    if config.rotary_dim % 4:
        raise ValueError(
            f"axial 2-D RoPE splits the pairs between rows and columns, so rotary_dim must be "
            f"divisible by 4, got {config.rotary_dim}"
        )
    half = config.rotary_dim // 2
    return dataclasses.replace(config, head_dim=half, rotary_dim=half)


def axial_rope_tables(config: RopeConfig, rows: int, cols: int) -> RopeTables:
    """2-D axial RoPE for a grid of image patches, float64 ``(rows * cols, R/2)`` each,
    carrying ``config``'s layout and head width (:class:`ropelab.RopeTables`).

    The pairs are split in two halves: the first R/4 pairs turn with the patch's row,
    the last R/4 with its column, each half with the frequencies of a RoPE of dimension
    R/2 (ViT axial RoPE, Heo et al. 2024, arXiv:2403.13298; the layout Qwen2-VL's vision
    tower uses). Patches are numbered row-major: patch ``r * cols + c`` is at (r, c).
    Needs R divisible by 4.
    """
    rows = check_int("rows", rows, minimum=1)
    cols = check_int("cols", cols, minimum=1)
    half = axial_axis_config(config)
    from .tables import rope_tables

    r, c = np.divmod(np.arange(rows * cols), cols)
    cos_r, sin_r = rope_tables(half, r)
    cos_c, sin_c = rope_tables(half, c)
    cos = np.concatenate([cos_r, cos_c], axis=-1)
    sin = np.concatenate([sin_r, sin_c], axis=-1)
    return RopeTables(cos, sin, config.layout, head_dim=config.head_dim)


def mrope_axis_of_pair(mrope_section, num_pairs: int) -> np.ndarray:
    """Which position axis (0 time, 1 height, 2 width) drives each pair, int64 ``(R/2,)``.

    Qwen2-VL (arXiv:2409.12191) splits the R/2 pairs into consecutive sections of sizes
    ``mrope_section`` (e.g. 16, 24, 24 for R = 128); section j turns with axis ``j % 3``.
    """
    if isinstance(mrope_section, (str, bytes)) or not isinstance(mrope_section, (Sequence, np.ndarray)):
        raise TypeError(f"mrope_section must be a list of integers, got {show(mrope_section)}")
    section = tuple(check_int(f"mrope_section[{i}]", s, minimum=0) for i, s in enumerate(mrope_section))
    if not section:
        raise ValueError("mrope_section must be a non-empty list of integers, got an empty one")
    if sum(section) != num_pairs:
        raise ValueError(
            f"mrope_section {section!r} sums to {sum(section)}, but it must sum to "
            f"rotary_dim / 2 = {num_pairs} (one entry per rotary pair)"
        )
    return np.repeat(np.arange(len(section)) % 3, section)


def mrope_tables(config: RopeConfig, positions_thw, mrope_section) -> RopeTables:
    """M-RoPE cos/sin (Qwen2-VL), float64 ``(..., T, R/2)`` each, carrying ``config``'s
    layout and head width (:class:`ropelab.RopeTables`).

    Args:
        config: the rotary schedule (Qwen2-VL uses ``layout="half"``).
        positions_thw: integer positions ``(3, ..., T)``: time, height, width of each
            token (text tokens carry the same position on all three axes).
        mrope_section: pairs per section, summing to R/2 (see :func:`mrope_axis_of_pair`).

    Pair i of the result is the pair-i entry of the RoPE table of its section's axis, as
    transformers' Qwen2-VL builds it.
    """
    if not isinstance(config, RopeConfig):
        raise TypeError(f"config must be a RopeConfig, got {type(config).__name__}")
    pos = np.asarray(positions_thw)
    if pos.ndim < 2 or pos.shape[0] != 3:
        raise ValueError(f"positions_thw must be shaped (3, ..., T), got shape {pos.shape}")
    axis = mrope_axis_of_pair(mrope_section, config.num_pairs)
    from .tables import rope_tables

    cos3, sin3 = rope_tables(config, pos)  # (3, ..., T, R/2)
    index = axis.reshape((1,) * (cos3.ndim - 1) + (-1,))  # (1, ..., 1, R/2): pick the axis per pair
    cos = np.take_along_axis(cos3, index, axis=0)[0]
    sin = np.take_along_axis(sin3, index, axis=0)[0]
    return RopeTables(cos, sin, config.layout, head_dim=config.head_dim)
