"""The papers' figures about RoPE, recomputed: ``ropelab figures --out DIR``.

1. RoFormer's long-term decay (Su et al. 2021, arXiv:2104.09864, sec. 3.4.3, Fig. 2):
   the relative upper bound ``(1 / (d/2)) * sum_{j=1}^{d/2} |S_j(m)|`` with
   ``S_j(m) = sum_{k<j} exp(i m theta_k)``, against the relative distance m.
2. Position Interpolation (Chen et al. 2023, arXiv:2306.15595, Fig. 2 and Thm. 2.1):
   a score function ``a(s) = Re sum_j h_j exp(i s theta_j)`` fitted to random values on
   ``[0, L)`` stays small there and explodes beyond L, while between integer positions
   it stays within Theorem 2.1's bound ``d max|h_j| (s - s1)(s2 - s) / (8 ln c)``; the
   extrapolation bound of their eq. 8, ``2 max|h_j| B(s)``, is ~600x larger.
3. Base of RoPE bounds context length (Men et al. 2024, arXiv:2405.14591): the smallest
   base for which ``B(m) = sum_i cos(m theta_i) >= 0`` for every ``m <= L``, with
   released models' base and context beside it, each checked on its own frequencies.

Each computation is a plain function returning its numbers (tested), the plots are
drawn from them with matplotlib's Agg backend, and the numbers are printed on the
figures and to stdout. Frequencies and angles come from :class:`ropelab.RopeConfig`
and :func:`ropelab.rope_tables`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import asdict, dataclass, replace

import numpy as np

from .checks import check_float, check_int
from .config import RopeConfig
from .tables import rope_tables

__all__ = [
    "BaseBound",
    "DecayCurve",
    "InterpolationBound",
    "ModelMark",
    "add_arguments",
    "base_bound",
    "first_negative",
    "min_base_for_length",
    "model_marks",
    "pi_bounds",
    "real_models",
    "roformer_decay",
    "run",
]


# ---------------------------------------------------------------------------------------
# 1. RoFormer's long-term decay
# ---------------------------------------------------------------------------------------


def _config(head_dim, theta) -> RopeConfig:
    """The full-width RoPE of the figures, its arguments checked under their own names."""
    head_dim = check_int("head_dim", head_dim, minimum=2)
    if head_dim % 2:
        raise ValueError(f"head_dim must be even (the figures rotate whole heads), got {head_dim}")
    return RopeConfig(head_dim, theta=check_float("theta", theta, above=1.0))


@dataclass
class DecayCurve:
    head_dim: int
    theta: float
    distances: np.ndarray  # (N,)
    bound: np.ndarray  # (N,): (1/(d/2)) sum_j |S_j(m)|


def roformer_decay(
    head_dim: int = 128, theta: float = 10000.0, max_distance: int = 256
) -> DecayCurve:
    """RoFormer's relative upper bound at distances ``0 .. max_distance`` (sec. 3.4.3)."""
    check_int("max_distance", max_distance, minimum=1)
    config = _config(head_dim, theta)
    m = np.arange(max_distance + 1)
    cos, sin = rope_tables(config, m)  # (N, d/2): e^{i m theta_k} = cos + i sin
    partial = np.cumsum(cos, axis=-1) + 1j * np.cumsum(sin, axis=-1)  # S_1 .. S_{d/2}
    return DecayCurve(head_dim, float(theta), m, np.abs(partial).mean(axis=-1))


# ---------------------------------------------------------------------------------------
# 2. Position Interpolation: interpolation vs extrapolation
# ---------------------------------------------------------------------------------------


@dataclass
class InterpolationBound:
    head_dim: int
    theta: float
    length: int  # L: the "trained" range [0, L)
    h: np.ndarray  # (d/2,) complex coefficients of the fitted score
    max_abs_trained: float  # max |a(s)| over integers in [0, L)
    max_abs_extrapolated: float  # max |a(s)| over integers in [L, 2L)
    max_interpolation_error: float  # max |a(s) - a_linear(s)| over s in [0, L) (step 1/8)
    interpolation_bound: float  # Thm. 2.1 at the midpoint: d max|h| / (32 ln c)
    min_extrapolation_bound: float  # min over s in [0, 2L) of 2 max|h| B(s) (eq. 8)
    min_b_over_d: float  # min over s of B(s) / d (Appendix B: >= 1)


def _score(h: np.ndarray, config: RopeConfig, s: np.ndarray) -> np.ndarray:
    """a(s) = Re sum_j h_j e^{i s theta_j} at real s."""
    cos, sin = rope_tables(config, s)
    return cos @ h.real - sin @ h.imag


def pi_bounds(
    head_dim: int = 128,
    theta: float = 10000.0,
    length: int = 2048,
    seed: int = 0,
    rcond: float = 1e-7,
) -> InterpolationBound:
    """Chen et al.'s Fig. 2 experiment and the two bounds of their sec. 2.3.

    A score ``a(s)`` with the ``d/2`` RoPE frequencies is least-squares fitted to
    standard normal values at ``s = 0 .. L-1`` (their Appendix C.1), then evaluated
    beyond L (extrapolation) and at eighths between integers (interpolation).

    The fit is ill-conditioned (condition number ~1e17 for d=128, L=2048): singular
    values below ``rcond`` times the largest are cut, about what the float32 solve of
    their code resolves, which reproduces their "beyond 8000". With no cut (float64)
    the coefficients, and the extrapolated scores, grow to ~1e9 instead.
    """
    check_int("length", length, minimum=2)
    config = _config(head_dim, theta)
    rng = np.random.default_rng(seed)
    s = np.arange(length)
    y = rng.standard_normal(length)
    cos, sin = rope_tables(config, s)
    # a(s) = sum_j beta_j cos(s theta_j) + alpha_j sin(s theta_j) = Re sum h_j e^{i s theta_j}
    # with h_j = beta_j - i alpha_j
    coef, *_ = np.linalg.lstsq(np.concatenate([cos, sin], axis=1), y, rcond=rcond)
    pairs = config.num_pairs
    h = coef[:pairs] - 1j * coef[pairs:]
    trained = _score(h, config, s)
    extrapolated = _score(h, config, np.arange(length, 2 * length))
    fine = np.arange(8 * (length - 1) + 1) / 8.0  # s in [0, L-1], step 1/8
    a_fine = _score(h, config, fine)
    lower = np.floor(fine).astype(np.int64)
    upper = np.minimum(lower + 1, length - 1)
    frac = fine - lower
    linear = (1 - frac) * trained[lower] + frac * trained[upper]
    h_max = float(np.abs(h).max())
    c = float(theta)
    # B(s) = sum_k |A_{k+1}(s)|, A_k(s) = sum_{j<k} e^{i s theta_j}
    cos2, sin2 = rope_tables(config, np.arange(2 * length))
    b = np.abs(np.cumsum(cos2, axis=-1) + 1j * np.cumsum(sin2, axis=-1)).sum(axis=-1)
    return InterpolationBound(
        head_dim=head_dim,
        theta=c,
        length=length,
        h=h,
        max_abs_trained=float(np.abs(trained).max()),
        max_abs_extrapolated=float(np.abs(extrapolated).max()),
        max_interpolation_error=float(np.abs(a_fine - linear).max()),
        interpolation_bound=head_dim * h_max / (32.0 * math.log(c)),
        min_extrapolation_bound=float(2.0 * h_max * b.min()),
        min_b_over_d=float(b.min() / head_dim),
    )


# ---------------------------------------------------------------------------------------
# 3. Base of RoPE bounds context length
# ---------------------------------------------------------------------------------------


def _min_cos_sum(head_dim: int, base: float, length: int, block: int = 8192) -> float:
    """min over m in [0, length] of B(m) = sum_i cos(m theta_i); stops at the first negative.

    The search calls this hundreds of times per length, so it forms ``m * theta_i``
    directly in float64 (accurate to ~1e-10 rad for m below 2**24) and skips the sines
    that :func:`ropelab.rope_tables` would also compute.
    """
    inv_freq = RopeConfig(head_dim, theta=base).inv_freq()
    low = math.inf
    for first in range(0, length + 1, block):
        m = np.arange(first, min(first + block, length + 1), dtype=np.float64)
        low = min(low, float(np.cos(np.outer(m, inv_freq)).sum(axis=-1).min()))
        if low < 0:
            break
    return low


def min_base_for_length(
    head_dim: int, length: int, *, start: float = 2.0, step: float = 1.005, rtol: float = 1e-4
) -> float:
    """The smallest base with ``B(m) = sum_i cos(m theta_i) >= 0`` for all ``m <= length``.

    Men et al.'s lower bound. Bases that pass are not one interval: just above the
    smallest one some fail again, so the search walks up from ``start`` in ratio steps of
    ``step`` (narrower than the passing islands) to the first base that passes, then
    bisects in log space to ``rtol`` between it and the last base that failed. Islands
    narrower than ``step`` can be missed: for d=128 and L=4096 the bases around 2.696e4
    pass in an island 0.05% wide, below the 2.86e4 that the default step finds.
    """
    check_int("length", length, minimum=1)
    check_float("start", start, above=1.0)
    check_float("step", step, above=1.0, maximum=2.0)
    fail = None
    base = float(start)
    while _min_cos_sum(head_dim, base, length) < 0:
        fail, base = base, base * step
        if base > 1e15:
            raise ValueError(f"no base up to 1e15 keeps B(m) >= 0 for length {length}")
    if fail is None:
        return base
    ok = base
    while ok / fail - 1 > rtol:
        mid = math.sqrt(ok * fail)
        if _min_cos_sum(head_dim, mid, length) >= 0:
            ok = mid
        else:
            fail = mid
    return ok


@dataclass
class BaseBound:
    head_dim: int
    lengths: list[int]
    bases: list[float]


def base_bound(
    head_dim: int = 128, lengths=(1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)
) -> BaseBound:
    """The smallest base per context length; each search starts from the previous answer."""
    lengths = sorted(int(n) for n in lengths)
    bases, start = [], 2.0
    for n in lengths:
        # every base that passes for n passes for any shorter length, so the smallest
        # base for n is at least the previous answer: start the walk there
        found = min_base_for_length(head_dim, n, start=start)
        bases.append(found)
        start = found
    return BaseBound(head_dim, lengths, bases)


def first_negative(config: RopeConfig, length: int, block: int = 8192) -> int | None:
    """The smallest ``m <= length`` with ``B(m) = sum_i cos(m theta_i) < 0`` for the
    frequencies of ``config`` (its scaling included), or None when there is none."""
    length = check_int("length", length, minimum=0)
    inv_freq = config.inv_freq()
    for first in range(0, length + 1, block):
        m = np.arange(first, min(first + block, length + 1), dtype=np.float64)
        negative = np.flatnonzero(np.cos(np.outer(m, inv_freq)).sum(axis=-1) < 0)
        if negative.size:
            return first + int(negative[0])
    return None


@dataclass
class ModelMark:
    """A released model on figure 3: its base and context, and Men et al.'s check on
    its own frequencies (scaling included)."""

    name: str
    base: float
    context: int
    head_dim: int
    scaling: str | None  # the scheme's description; the point is plotted at the raw base
    first_negative: int | None  # smallest m <= context with B(m) < 0; None: B >= 0 throughout


def real_models() -> list[tuple[str, RopeConfig, int]]:
    """``(name, rotary schedule, context length)`` of the models marked on figure 3.

    Bases and scaling come from the presets (their published ``config.json``). Llama 3
    is Llama 3.1's base without its scaling, at 3.1's original length (8192). Mistral
    7B v0.1 was trained on 8192 tokens (its config's 32768 is the position limit of its
    4096-token sliding window); v0.2 and later use base 1e6 and 32768 tokens.
    """
    from .presets import preset, preset_hf_config

    llama31 = preset("llama-3.1-8b")
    return [
        ("Llama 2", preset("llama-2-7b"), preset_hf_config("llama-2-7b")["max_position_embeddings"]),
        ("Mistral 7B v0.1", preset("mistral-7b-v0.1"), 8192),
        ("Llama 3", replace(llama31, scaling=None), llama31.scaling.original_max_position),
        ("Llama 3.1", llama31, preset_hf_config("llama-3.1-8b")["max_position_embeddings"]),
        ("Qwen2.5", preset("qwen2.5-7b"), preset_hf_config("qwen2.5-7b")["max_position_embeddings"]),
        ("Mistral 7B v0.2+", RopeConfig(128, theta=1e6, layout="half"), 32768),
    ]


def model_marks(head_dim: int = 128) -> list[ModelMark]:
    """:func:`real_models` of this head dimension, each with :func:`first_negative`."""
    return [
        ModelMark(
            name,
            config.theta,
            context,
            config.rotary_dim,
            None if config.scaling is None else config.scaling.describe(),
            first_negative(config, context),
        )
        for name, config, context in real_models()
        if config.rotary_dim == head_dim
    ]


# ---------------------------------------------------------------------------------------
# Plots and the command
# ---------------------------------------------------------------------------------------


def _pyplot():
    from ._optional import require

    matplotlib = require("matplotlib", feature="ropelab figures")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _note(ax, lines, *, left=False):
    ax.text(
        0.02 if left else 0.98,
        0.97,
        "\n".join(lines),
        transform=ax.transAxes,
        ha="left" if left else "right",
        va="top",
        fontsize=8,
        family="monospace",
        bbox=dict(boxstyle="round", facecolor="white", alpha=0.85),
    )


def _tokens(n: int) -> str:
    """4096 -> "4K", 131072 -> "128K", 1000 -> "1000"."""
    return f"{n // 1024}K" if n >= 1024 and n % 1024 == 0 else str(n)


def plot_decay(curve: DecayCurve, path: str) -> list[str]:
    plt = _pyplot()
    marks = [m for m in (0, 16, 32, 64, 128, 256, 512, 1024) if m <= curve.distances[-1]]
    lines = [f"m={m:>5}: {curve.bound[m]:7.3f}" for m in marks]
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    ax.plot(
        curve.distances,
        curve.bound,
        lw=1,
        color="C0",
        label=r"$\frac{1}{d/2}\sum_{j=1}^{d/2} |S_j(m)|$,  $S_j(m) = \sum_{k<j} e^{i m \theta_k}$",
    )
    ax.plot(marks, curve.bound[marks], "o", color="C3", ms=4, label="values listed on the right")
    ax.set_xlabel("relative distance m (positions)")
    ax.set_ylabel("relative upper bound")
    ax.set_ylim(0, curve.bound[0] * 1.08)
    ax.set_title(
        f"RoFormer long-term decay of q\u00b7k with distance (d={curve.head_dim}, base={curve.theta:g})",
        fontsize=10,
    )
    ax.legend(loc="lower left", fontsize=8)
    _note(ax, ["bound at distance m"] + lines)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return lines


def plot_pi(result: InterpolationBound, path: str) -> list[str]:
    plt = _pyplot()
    config = RopeConfig(result.head_dim, theta=result.theta)
    L = result.length
    s = np.arange(2 * L)
    a = _score(result.h, config, s)
    ratio = result.min_extrapolation_bound / result.interpolation_bound
    lines = [
        f"max|a| on [0, L):        {result.max_abs_trained:10.3g}",
        f"max|a| on [L, 2L):       {result.max_abs_extrapolated:10.3g}",
        f"max interpolation error: {result.max_interpolation_error:10.3g}",
        f"Thm 2.1 bound d max|h|/(32 ln base): {result.interpolation_bound:.3g}",
        f"eq. 8 bound 2 max|h| min B(s):       {result.min_extrapolation_bound:.3g}",
        f"ratio of the bounds: {ratio:.0f}x",
    ]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))

    ax = axes[0]
    ax.axvspan(0, L, color="C0", alpha=0.07, lw=0)
    ax.plot(s[:L], a[:L], color="C0", lw=0.6,
            label=f"on the fitted range [0, L): max |a| = {result.max_abs_trained:.3g}")
    ax.plot(s[L:], a[L:], color="C3", lw=0.8,
            label=f"beyond it, [L, 2L): max |a| = {result.max_abs_extrapolated:.3g}")
    ax.axvline(L, color="k", ls="--", lw=0.8, label=f"L = {L}, end of the fitted range")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_ylim(top=4 * float(np.abs(a).max()))  # the peak below the frame, not on it
    ax.set_title(f"extrapolation: a score fitted on [0, {L}), evaluated up to {2 * L}", fontsize=10)
    ax.set_xlabel("positional difference s")
    ax.set_ylabel("attention score a(s)  (symmetric log scale)")
    ax.legend(loc="lower left", fontsize=8)

    ax = axes[1]
    lo, hi = min(25, L - 2), min(75, L - 1)
    fine = np.arange(lo * 8, hi * 8 + 1) / 8.0
    whole = np.arange(lo, hi + 1)
    ax.plot(fine, _score(result.h, config, fine), color="C3", lw=0.9, label="a(s) between integer positions")
    ax.plot(whole, a[lo : hi + 1], "o", color="C0", ms=3, label="a(s) at integer positions (the fitted values)")
    top, bottom = float(a[lo : hi + 1].max()), float(a[lo : hi + 1].min())
    ax.set_ylim(bottom - 0.1 * (top - bottom), top + 0.55 * (top - bottom))  # room for the legend
    ax.set_title(f"interpolation: the same score between integer positions (s in [{lo}, {hi}])", fontsize=10)
    ax.set_xlabel("positional difference s")
    ax.set_ylabel("attention score a(s)")
    ax.legend(loc="upper left", fontsize=8)

    fig.suptitle(
        f"Position Interpolation (Chen et al. 2023): d={result.head_dim}, base={result.theta:g}, "
        f"L={L}; " + r"$a(s) = \mathrm{Re}\sum_j h_j e^{i s \theta_j}$" + " fitted to random values"
    )
    fig.text(
        0.5,
        0.015,
        f"Between integer positions a(s) stays within {result.max_interpolation_error:.3g} of the line "
        f"joining its neighbours (largest on [0, L), step 1/8), under Theorem 2.1's bound "
        f"d max|h| / (32 ln base) = {result.interpolation_bound:.3g}.\n"
        f"Extrapolation has only eq. 8's bound 2 max|h| min B(s) = "
        f"{result.min_extrapolation_bound:.3g}: {ratio:.0f}x larger.",
        ha="center",
        va="bottom",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return lines


# where each model's label sits beside its point (offset in points), so none covers a point
_LABEL_OFFSETS = {
    "Llama 2": (8, -26),
    "Mistral 7B v0.1": (8, -8),
    "Llama 3": (-10, 8),
    "Llama 3.1": (-12, -22),
    "Qwen2.5": (-12, 10),
}


def plot_base(result: BaseBound, path: str, marks: list[ModelMark] | None = None) -> list[str]:
    """The smallest base per length, and released models' (context, base) beside it."""
    plt = _pyplot()
    from matplotlib.lines import Line2D

    marks = model_marks(result.head_dim) if marks is None else marks
    lines = [
        f"L={n:>8}: base >= {b:9.3g}" for n, b in zip(result.lengths, result.bases, strict=True)
    ]
    for m in marks:
        verdict = (
            "B(m) >= 0 for every m <= its context"
            if m.first_negative is None
            else f"B(m) < 0 first at m = {m.first_negative}"
        )
        scaled = f" ({m.scaling})" if m.scaling else ""
        lines.append(f"{m.name}: base {m.base:g}, {m.context} tokens{scaled}: {verdict}")

    fig, ax = plt.subplots(figsize=(9, 6.4))
    low = min([*result.bases, *(m.base for m in marks)]) / 3
    high = max([*result.bases, *(m.base for m in marks)]) * 4
    ax.fill_between(result.lengths, low, result.bases, color="C3", alpha=0.08, lw=0)
    ax.loglog(result.lengths, result.bases, "o-", color="C0", ms=4)
    # one point per (context, base): Qwen2.5 and Mistral v0.2 share theirs
    groups: dict[tuple[int, float], list[ModelMark]] = {}
    for m in marks:
        groups.setdefault((m.context, m.base), []).append(m)
    for (context, base), group in groups.items():
        m = group[0]
        fails = m.first_negative is not None
        ax.plot(
            context,
            base,
            "D" if m.scaling else "o",
            ms=8,
            mew=1.6,
            color="C3" if fails else "C2",
            mfc="white" if fails else "C2",
        )
        label = " / ".join(g.name for g in group)
        label += f"\nbase {base:,.0f}, {_tokens(context)}"
        if fails:
            label += f"; B < 0 at m = {m.first_negative}"
        dx, dy = _LABEL_OFFSETS.get(m.name, (8, 8))
        ax.annotate(
            label,
            (context, base),
            xytext=(dx, dy),
            textcoords="offset points",
            ha="left" if dx >= 0 else "right",
            va="center",
            fontsize=7.5,
        )
    ax.set_ylim(low, high)
    ax.set_xlim(result.lengths[0] / 1.6, result.lengths[-1] * 1.6)
    ax.set_xticks(result.lengths, [_tokens(n) for n in result.lengths])
    ax.minorticks_off()
    ax.set_xlabel("context length L (tokens)")
    ax.set_ylabel("RoPE base")
    ax.set_title(
        f"Base of RoPE bounds context length (Men et al. 2024), d={result.head_dim}", fontsize=10
    )
    handles = [
        Line2D([], [], color="C0", marker="o", ms=4,
               label="smallest base with B(m) = sum_i cos(m theta_i) >= 0 for all m <= L"),
        plt.Rectangle((0, 0), 1, 1, color="C3", alpha=0.15,
                      label="below it B(m) < 0 for some m <= L (not every base above passes)"),
    ]
    if marks:
        handles += [
            Line2D([], [], ls="", marker="o", ms=7, color="C2",
                   label="released model: B(m) >= 0 up to its context"),
            Line2D([], [], ls="", marker="o", ms=7, mew=1.6, color="C3", mfc="white",
                   label="released model: B(m) < 0 before its context (first m given)"),
        ]
    for m in marks:
        if m.scaling:
            handles.append(
                Line2D([], [], ls="", marker="D", ms=7, color="0.4", mfc="white",
                       label=f"{m.name}: plotted at its base; checked with its scaled frequencies "
                             f"({m.scaling})")
            )
    # below the axes: above them the legend would cover the curve's top end
    fig.legend(handles=handles, loc="lower center", fontsize=7.5, ncol=1, frameon=False)
    fig.tight_layout(rect=(0, 0.01 + 0.03 * len(handles), 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return lines


def _option(check, **bounds):
    """An argparse type that reads a number and checks it with ``check`` (from
    ropelab.checks), so a bad value is reported against the option's own name."""

    def parse(text: str):
        try:
            value = float(text) if check is check_float else int(text)
        except ValueError:
            kind = "a number" if check is check_float else "an integer"
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        try:
            return check("the value", value, **bounds)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return parse


def _even(text: str) -> int:
    value = _option(check_int, minimum=2, maximum=1 << 16)(text)
    if value % 2:
        raise argparse.ArgumentTypeError(f"the value must be even (pairs of features), got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", default="figures", help="folder for the PNGs and numbers.json (default: figures)"
    )
    parser.add_argument(
        "--head-dim", type=_even, default=128, help="d, the rotary head dimension, even (default 128)"
    )
    parser.add_argument(
        "--theta", type=_option(check_float, above=1.0), default=10000.0,
        help="RoPE base for figures 1 and 2 (> 1)",
    )
    parser.add_argument(
        "--decay-distance", type=_option(check_int, minimum=1), default=256,
        help="largest distance in figure 1",
    )
    parser.add_argument(
        "--pi-length", type=_option(check_int, minimum=2), default=2048,
        help="L, the fitted range in figure 2",
    )
    parser.add_argument(
        "--seed", type=_option(check_int, minimum=0), default=0,
        help="seed of figure 2's random targets",
    )
    parser.add_argument(
        "--pi-rcond", type=_option(check_float, above=0.0, maximum=1.0), default=1e-7,
        help="singular-value cut of figure 2's fit",
    )
    parser.add_argument(
        "--lengths",
        type=_option(check_int, minimum=1, maximum=1 << 24),
        nargs="+",
        default=[1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072],
        help="context lengths of figure 3 (the search costs ~O(L) per base tried)",
    )


def run(args) -> int:
    from .cli import need, output_dir

    need("matplotlib", feature="ropelab figures")  # before the minute of computing
    output_dir(args.out)
    decay = roformer_decay(args.head_dim, args.theta, args.decay_distance)
    pi = pi_bounds(args.head_dim, args.theta, args.pi_length, args.seed, args.pi_rcond)
    base = base_bound(args.head_dim, args.lengths)
    marks = model_marks(args.head_dim)
    sections = [
        (
            "roformer_decay.png",
            "RoFormer long-term decay of the relative upper bound",
            plot_decay(decay, os.path.join(args.out, "roformer_decay.png")),
        ),
        (
            "pi_bounds.png",
            "Position Interpolation: interpolation vs extrapolation",
            plot_pi(pi, os.path.join(args.out, "pi_bounds.png")),
        ),
        (
            "base_bound.png",
            "Smallest RoPE base per context length",
            plot_base(base, os.path.join(args.out, "base_bound.png"), marks),
        ),
    ]
    for name, title, lines in sections:
        print(f"{title}  ->  {os.path.join(args.out, name)}")
        for line in lines:
            print(f"  {line}")
    numbers = {
        "roformer_decay": {
            "head_dim": decay.head_dim,
            "theta": decay.theta,
            "bound": decay.bound.tolist(),
        },
        "pi_bounds": {k: v for k, v in asdict(pi).items() if k != "h"},
        "base_bound": asdict(base),
        "base_bound_models": [asdict(m) for m in marks],
    }
    with open(os.path.join(args.out, "numbers.json"), "w") as f:
        json.dump(numbers, f, indent=1)
    return 0
