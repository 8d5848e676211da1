"""The other positional encodings as PyTorch modules.

Each module plugs into :class:`ropelab.torch.Attention` through one option:

- ``rope=``: modules ``forward(q, k, positions) -> (q, k)``: :class:`XPos` (Sun et al.
  2022), :class:`MRoPE` (Qwen2-VL), :class:`AxialRoPE` (2-D patches); p-RoPE is a
  :class:`ropelab.RopeConfig` with ``scaling=PRoPE(p)``, so it needs no module.
- ``score_bias=``: modules ``forward(q_positions, k_positions) -> bias`` added to the
  scores inside the fused SDPA kernel: :class:`ALiBiBias` (Press et al. 2022),
  :class:`T5Bias` (Raffel et al. 2020).
- :class:`LearnedAbsolute` is GPT-2's learned position table, added to token embeddings.

Shaw et al. (2018) need their own score path: :class:`ropelab.torch.ShawAttention`
(``ropelab.torch.shaw``). The transformer layer kinds that use these modules are in
``ropelab.torch.kinds``.

Slopes and buckets come from :mod:`ropelab.positional`, computed in float64 on the
host. The rotary modules (xPos, M-RoPE, axial) keep no table by position: each call
makes the exact cos/sin rows of its positions (:class:`RotaryEmbedding`) and xPos its
scales (from float64), so any position costs the same memory.

Shapes: B batch, H heads, K kv heads, T new tokens, S keys, D head dim, R rotary dim.
    q (B, H, T, D), k (B, K, T, D); positions (B, T) long (M-RoPE: (3, B, T));
    biases (B, H, T, S).
"""

from __future__ import annotations

import numpy as np

from .._optional import require
from ..checks import check_int
from ..config import RopeConfig
from ..positional import (
    alibi_slopes,
    axial_axis_config,
    mrope_axis_of_pair,
    t5_relative_buckets,
    xpos_scales,
)

torch = require("torch", feature="ropelab.torch.positional")
nn = torch.nn
F = torch.nn.functional

from . import rope_op  # noqa: E402
from .checks import check_integer_tensor, is_concrete  # noqa: E402
from .rotary import RotaryEmbedding  # noqa: E402

__all__ = [
    "ALiBiBias",
    "AxialRoPE",
    "LearnedAbsolute",
    "MRoPE",
    "T5Bias",
    "XPos",
    "default_mrope_section",
]


def _check_int(name: str, value, minimum: int = 1) -> int:
    return check_int(name, value, minimum=minimum)


def _compiling() -> bool:
    return torch.compiler.is_compiling()


def _check_positions(q_pos, k_pos):
    for name, p in (("q_positions", q_pos), ("k_positions", k_pos)):
        check_integer_tensor(name, p, expected="an integer tensor shaped (B, T)")
        if p.dim() != 2:
            raise ValueError(f"{name} must be shaped (B, T), got shape {tuple(p.shape)}")
    if q_pos.shape[0] != k_pos.shape[0] and 1 not in (q_pos.shape[0], k_pos.shape[0]):
        raise ValueError(
            f"q_positions {tuple(q_pos.shape)} and k_positions {tuple(k_pos.shape)} must have "
            "the same batch B (or one of them 1, shared by every row)"
        )


# ---------------------------------------------------------------------------------------
# Absolute
# ---------------------------------------------------------------------------------------


class LearnedAbsolute(nn.Module):
    """Learned absolute positions (GPT-2; Vaswani et al. 2017, Table 3 row E).

    ``forward(positions)``: integer positions of any shape -> ``positions.shape +
    (d_model,)``, to add to the token embeddings. Positions at or past
    ``max_positions`` have no row: they raise ValueError (outside torch.compile).
    """

    def __init__(self, max_positions: int, d_model: int):
        super().__init__()
        self.max_positions = _check_int("max_positions", max_positions)
        self.embedding = nn.Embedding(self.max_positions, _check_int("d_model", d_model))

    def forward(self, positions):
        """Integer positions of any shape -> their rows, ``positions.shape + (d_model,)``."""
        check_table_positions(positions, self.max_positions)
        return self.embedding(positions)


def check_table_positions(positions, max_positions: int) -> None:
    """Integer ``positions`` that all have a row in a learned table of ``max_positions``
    rows; ValueError naming the first one outside ``0..max_positions - 1`` (outside
    torch.compile, where the values are read)."""
    check_integer_tensor("positions", positions)
    if not _compiling() and positions.numel():
        low, high = (int(v) for v in torch.aminmax(positions.long()))
        if low < 0 or high >= max_positions:
            bad = high if high >= max_positions else low
            raise ValueError(
                f"position {bad} is outside the learned table of max_positions="
                f"{max_positions} (positions 0..{max_positions - 1}); a learned "
                "absolute embedding cannot extrapolate"
            )


# ---------------------------------------------------------------------------------------
# Score biases (kept inside SDPA)
# ---------------------------------------------------------------------------------------


class ALiBiBias(nn.Module):
    """ALiBi (Press et al. 2022, arXiv:2108.12409): ``-slope_h * |i - j|`` on the scores.

    ``forward(q_positions (B, T), k_positions (B, S)) -> (B, H, T, S)`` float32. For
    causal attention ``|i - j| = i - j`` on every visible key; the absolute value also
    gives the symmetric form for bidirectional layers. BLOOM adds ``slope * j`` instead,
    which differs from this by a constant per query row, so the softmax is the same.
    """

    def __init__(self, num_heads: int):
        super().__init__()
        slopes = torch.from_numpy(alibi_slopes(num_heads)).float()
        self.register_buffer("slopes", slopes, persistent=False)  # (H,)

    def forward(self, q_positions, k_positions):
        """``-slope_h * |i - j|``: positions ``(B, T)`` and ``(B, S)`` -> ``(B, H, T, S)`` float32.

        ``q_positions`` are the queries' positions, ``k_positions`` the keys' (cached
        and new); the bias is added to the scores before the softmax.
        """
        _check_positions(q_positions, k_positions)
        distance = (q_positions[:, :, None] - k_positions[:, None, :]).abs().float()  # (B, T, S)
        return -self.slopes[None, :, None, None] * distance[:, None]


class T5Bias(nn.Module):
    """T5's learned bias per head and relative-position bucket (Raffel et al. 2020).

    The buckets are :func:`ropelab.positional.t5_relative_buckets` of ``key - query``,
    tabulated once for distances up to ``max_distance`` (all farther ones share the
    last bucket). ``relative_attention_bias`` is an ``nn.Embedding(num_buckets, H)``
    named as in transformers' T5, so its weight loads as is.

    ``forward(q_positions (B, T), k_positions (B, S)) -> (B, H, T, S)``.
    """

    def __init__(
        self,
        num_heads: int,
        *,
        bidirectional: bool = False,
        num_buckets: int = 32,
        max_distance: int = 128,
    ):
        super().__init__()
        self.num_heads = _check_int("num_heads", num_heads)
        self.max_distance = _check_int("max_distance", max_distance)
        rel = np.arange(-self.max_distance, self.max_distance + 1)
        buckets = t5_relative_buckets(
            rel, bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance
        )
        self.register_buffer("buckets", torch.from_numpy(buckets), persistent=False)  # (2M+1,)
        self.relative_attention_bias = nn.Embedding(num_buckets, self.num_heads)
        self.bidirectional = bool(bidirectional)

    def forward(self, q_positions, k_positions):
        """The learned bias of each head's bucket of ``key - query``: ``(B, H, T, S)``.

        ``q_positions`` ``(B, T)`` are the queries' positions, ``k_positions``
        ``(B, S)`` the keys' (cached and new); the bias is added to the scores.
        """
        _check_positions(q_positions, k_positions)
        m = self.max_distance
        rel = (k_positions[:, None, :] - q_positions[:, :, None]).clamp(-m, m) + m  # (B, T, S)
        bias = self.relative_attention_bias(self.buckets[rel])  # (B, T, S, H)
        return bias.permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, bidirectional={self.bidirectional}, max_distance={self.max_distance}"


# ---------------------------------------------------------------------------------------
# Rotary variants (the rope= interface)
# ---------------------------------------------------------------------------------------


def _per_feature(pairs, layout: str):
    """(..., R/2) per-pair values -> (..., R) per feature, in the layout's pairing."""
    if layout == "interleaved":
        return pairs.repeat_interleave(2, dim=-1)
    return torch.cat([pairs, pairs], dim=-1)


class XPos(nn.Module):
    """xPos (Sun et al. 2022, arXiv:2212.10554): RoPE plus a per-pair decay.

    Queries are rotated and multiplied by ``zeta_i ** ((n - center) / scale_base)``,
    keys rotated and divided by it (:func:`ropelab.positional.xpos_scales`), so scores
    carry ``zeta_i ** ((m - n) / scale_base)``: they depend on the distance only and
    decay with it. ``center`` cancels in every score; it keeps the scales in range: both
    a scale and its inverse are normal numbers of the output dtype (float32 at most) for
    ``|position - center|`` up to :meth:`max_distance` (~35,700 with the defaults in
    float32 and bfloat16, ~3,960 in float16). Positions farther from ``center`` raise
    ValueError where their values are readable (CPU tensors outside ``torch.compile``);
    elsewhere they are not read, and such scales overflow.

    ``forward(q, k, positions=None) -> (q, k)``: q ``(B, H, T, D)``, k ``(B, K, T, D)``
    (both are needed: queries are multiplied by the scale, keys divided by it),
    positions ``(T,)`` or ``(B, T)`` (default ``arange(T)``).
    """

    def __init__(
        self,
        config: RopeConfig,
        *,
        scale_base: float = 512.0,
        gamma: float = 0.4,
        center: int = 0,
    ):
        super().__init__()
        if not isinstance(config, RopeConfig):
            raise TypeError(f"config must be a ropelab.RopeConfig, got {type(config).__name__}")
        xpos_scales(np.zeros(1), config.rotary_dim, scale_base=scale_base, gamma=gamma)  # validates
        self.config = config
        self.scale_base, self.gamma = float(scale_base), float(gamma)
        self.center = check_int("center", center)
        self.rotary = RotaryEmbedding(config)
        # log zeta_i / scale_base (float64): xpos_scales(n) = exp((n - center) * this)
        self._log_zeta = np.log(xpos_scales(np.ones(1), config.rotary_dim, scale_base=scale_base,
                                            gamma=gamma)[0])

    def max_distance(self, dtype=torch.float32) -> int:
        """The largest ``|position - center|`` whose scale and inverse scale are both
        normal numbers of ``dtype`` (and of float32, which the scales are made in)."""
        finfos = [torch.finfo(torch.float32)] + ([torch.finfo(dtype)] if dtype.is_floating_point else [])
        room = min(min(np.log(f.max), -np.log(f.tiny)) for f in finfos)  # |log scale| allowed
        return int(room / np.abs(self._log_zeta).max())

    def _check_range(self, positions, dtype) -> None:
        """ValueError for positions too far from ``center`` for ``dtype`` (read only
        where that costs no device sync or trace)."""
        if not is_concrete(positions) or not positions.numel():
            return
        low, high = (int(v) for v in torch.aminmax(positions.long()))
        worst = low if self.center - low > high - self.center else high
        limit = self.max_distance(dtype)
        if abs(worst - self.center) > limit:
            middle = (low + high) // 2
            raise ValueError(
                f"XPos position {worst} is {abs(worst - self.center)} from center={self.center}, "
                f"but the scales zeta ** ((n - center) / scale_base) stay within {dtype}'s range "
                f"only for positions in [{self.center - limit}, {self.center + limit}]; build the "
                f"module with center= near the positions used (center={middle} here)"
            )

    def _scales(self, positions):
        """(scale, 1 / scale) float32 rows for these positions, both from float64 (neither
        is a rounded reciprocal of the other), made per call like the rotary rows."""
        log_zeta = torch.from_numpy(self._log_zeta).to(positions.device)
        exponent = (positions.to(torch.float64) - self.center)[..., None] * log_zeta  # (., T, R/2)
        return exponent.exp().to(torch.float32), (-exponent).exp().to(torch.float32)

    def forward(self, q, k, positions=None):
        """Rotate and scale: q ``(B, H, T, D)``, k ``(B, K, T, D)`` -> (q, k), same shapes.

        ``positions`` ``(T,)`` or ``(B, T)`` integers (default ``arange(T)``): queries
        are multiplied by ``zeta ** ((n - center) / scale_base)``, keys divided by it,
        after RoPE at these positions; features past ``rotary_dim`` pass unchanged.
        Positions farther than :meth:`max_distance` from ``center`` raise ValueError
        (where their values are readable).
        """
        if k is None:
            raise TypeError(
                "XPos needs k as well as q: queries are multiplied by the scale and keys "
                "divided by it, so neither means anything alone"
            )
        length = q.shape[-2]
        if positions is None:
            positions = torch.arange(length, device=q.device)
        q, k = self.rotary(q, k, positions)
        self._check_range(positions, torch.promote_types(q.dtype, k.dtype))
        s, inv = self._scales(positions.to(q.device))  # (T or B, T, R/2)
        if s.dim() == 3:
            s, inv = s.unsqueeze(1), inv.unsqueeze(1)  # (B, 1, T, R/2)
        r, layout = self.config.rotary_dim, self.config.layout
        s, inv = _per_feature(s, layout), _per_feature(inv, layout)
        return _scale_rotary(q, s, r), _scale_rotary(k, inv, r)

    def extra_repr(self) -> str:
        return f"scale_base={self.scale_base:g}, gamma={self.gamma:g}, center={self.center}"


def _scale_rotary(x, scale, rotary_dim: int):
    """x with its first R features multiplied by ``scale``, in float32 at least."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    head = x[..., :rotary_dim].to(dtype) * scale
    if rotary_dim == x.shape[-1]:
        return head.to(x.dtype)
    return torch.cat([head.to(x.dtype), x[..., rotary_dim:]], dim=-1)


def default_mrope_section(num_pairs: int) -> tuple[int, int, int]:
    """Qwen2-VL's proportions (16, 24, 24 of 64 pairs): 3/8 each to height and width."""
    _check_int("num_pairs", num_pairs, 3)
    hw = 3 * num_pairs // 8
    return (num_pairs - 2 * hw, hw, hw)


class MRoPE(nn.Module):
    """Multimodal RoPE (Qwen2-VL, arXiv:2409.12191): pairs split between t, h, w positions.

    Pair i turns with the position on axis ``mrope_axis_of_pair(mrope_section)[i]``
    (time, height or width); see :func:`ropelab.positional.mrope_tables`.

    ``forward(q, k, positions=None) -> (q, k)``: positions ``(3, B, T)`` (time, height,
    width of each token), or ``(T,)`` / ``(B, T)`` for text only, where all three axes
    are equal and M-RoPE is plain RoPE.
    """

    #: :class:`Attention` hands this module ``(3, B, T)`` positions whole
    position_axes = 3

    def __init__(self, config: RopeConfig, mrope_section=None):
        super().__init__()
        if not isinstance(config, RopeConfig):
            raise TypeError(f"config must be a ropelab.RopeConfig, got {type(config).__name__}")
        section = (
            default_mrope_section(config.num_pairs)
            if mrope_section is None
            else tuple(mrope_section)
        )
        axis = mrope_axis_of_pair(section, config.num_pairs)
        self.config, self.mrope_section = config, section
        self.rotary = RotaryEmbedding(config)
        self.register_buffer("axis", torch.from_numpy(axis), persistent=False)  # (R/2,)

    def forward(self, q, k, positions=None):
        """Rotate q ``(B, H, T, D)`` and k ``(B, K, T, D)`` by three position axes.

        ``positions`` ``(3, B, T)`` (time, height, width of each token, as Qwen2-VL's
        ``position_ids``); ``(T,)``, ``(B, T)`` or None (``arange(T)``) for text, where
        M-RoPE is plain RoPE. Returns (q, k) in their shapes and dtypes.
        """
        if positions is None or positions.dim() in (1, 2):
            return self.rotary(q, k, positions)
        if positions.dim() != 3 or positions.shape[0] != 3:
            raise ValueError(
                f"M-RoPE positions must be shaped (3, B, T), (B, T) or (T,), got {tuple(positions.shape)}"
            )
        _, batch, length = positions.shape
        cos3, sin3 = self.rotary.tables_for(positions.reshape(3 * batch, length))  # (3B, T, R/2)
        index = self.axis.view(1, 1, 1, -1).expand(1, batch, length, -1)
        cos = cos3.view(3, batch, length, -1).gather(0, index)[0].unsqueeze(1)  # (B, 1, T, R/2)
        sin = sin3.view(3, batch, length, -1).gather(0, index)[0].unsqueeze(1)
        layout = self.config.layout
        return rope_op.rotate_qk(q, k, cos, sin, layout)

    def extra_repr(self) -> str:
        return f"mrope_section={self.mrope_section}"


class AxialRoPE(nn.Module):
    """2-D axial RoPE for image patches in the ``rope=`` interface.

    A patch's position p is its row-major index on a grid ``cols`` wide: row
    ``p // cols``, column ``p % cols``. The first R/4 pairs turn with the row, the last
    R/4 with the column, each with the frequencies of a RoPE of dimension R/2
    (:func:`ropelab.positional.axial_rope_tables`), so scores depend on the 2-D offset.

    ``forward(q, k, positions=None) -> (q, k)``; positions ``(T,)`` or ``(B, T)``.
    """

    def __init__(self, config: RopeConfig, cols: int):
        super().__init__()
        self.config, self.cols = config, _check_int("cols", cols)
        self.axis = RotaryEmbedding(axial_axis_config(config))  # one axis' rows

    def forward(self, q, k, positions=None):
        """Rotate q ``(B, H, T, D)`` and k ``(B, K, T, D)`` by each patch's row and column.

        ``positions`` ``(T,)`` or ``(B, T)`` row-major patch indices on a grid ``cols``
        wide (default ``arange(T)``). Returns (q, k) in their shapes and dtypes.
        """
        if positions is None:
            positions = torch.arange(q.shape[-2], device=q.device)
        row, col = positions // self.cols, positions % self.cols
        cos_r, sin_r = self.axis.tables_for(row)
        cos_c, sin_c = self.axis.tables_for(col)
        cos, sin = (
            torch.cat([cos_r, cos_c], dim=-1),
            torch.cat([sin_r, sin_c], dim=-1),
        )  # (., T, R/2)
        if cos.dim() == 3:
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (B, 1, T, R/2)
        layout = self.config.layout
        return rope_op.rotate_qk(q, k, cos, sin, layout)

    def extra_repr(self) -> str:
        return f"cols={self.cols}"
