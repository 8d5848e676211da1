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
   base for which ``B(m) = sum_i cos(m theta_i) >= 0`` for every ``m <= L``.

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
from dataclasses import asdict, dataclass

import numpy as np

from .checks import check_float, check_int
from .config import RopeConfig
from .tables import rope_tables

__all__ = [
    "BaseBound",
    "DecayCurve",
    "InterpolationBound",
    "add_arguments",
    "base_bound",
    "min_base_for_length",
    "pi_bounds",
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
    head_dim: int = 128, lengths=(1024, 2048, 4096, 8192, 16384, 32768, 65536)
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


def plot_decay(curve: DecayCurve, path: str) -> list[str]:
    plt = _pyplot()
    marks = [m for m in (0, 16, 32, 64, 128, 256, 512, 1024) if m <= curve.distances[-1]]
    lines = [f"m={m:>5}: {curve.bound[m]:7.3f}" for m in marks]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(curve.distances, curve.bound, lw=1)
    ax.set_xlabel("relative distance m")
    ax.set_ylabel("relative upper bound  (1/(d/2)) sum_j |S_j|")
    ax.set_title(f"RoFormer long-term decay (d={curve.head_dim}, base={curve.theta:g})")
    _note(ax, lines)
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
    fine = np.arange(25 * 8, 75 * 8 + 1) / 8.0
    lines = [
        f"max|a| on [0, L):        {result.max_abs_trained:10.3g}",
        f"max|a| on [L, 2L):       {result.max_abs_extrapolated:10.3g}",
        f"max interpolation error: {result.max_interpolation_error:10.3g}",
        f"Thm 2.1 bound d max|h|/(32 ln c): {result.interpolation_bound:.3g}",
        f"eq. 8 bound 2 max|h| min B(s):    {result.min_extrapolation_bound:.3g}",
        f"ratio of the bounds: {result.min_extrapolation_bound / result.interpolation_bound:.0f}x",
    ]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    axes[0].plot(s, a, "r", lw=0.6)
    axes[0].axvline(L, color="k", ls="--", lw=0.6)
    axes[0].set_yscale("symlog")
    axes[0].set_title(f"extrapolation: fitted on [0, {L}), evaluated to {2 * L}")
    axes[0].set_xlabel("positional difference s")
    axes[0].set_ylabel("attention score a(s)")
    _note(axes[0], lines[:2])
    axes[1].plot(fine, _score(result.h, config, fine), "r", lw=0.8)
    for i in range(25, 76):
        axes[1].axvline(i, color="k", ls="--", lw=0.3)
    axes[1].set_title("interpolation: between integer positions")
    axes[1].set_xlabel("positional difference s")
    _note(axes[1], lines[2:])
    fig.suptitle(f"Position Interpolation bounds (d={result.head_dim}, c={result.theta:g})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return lines


def plot_base(result: BaseBound, path: str) -> list[str]:
    plt = _pyplot()
    lines = [
        f"L={n:>8}: base >= {b:9.3g}" for n, b in zip(result.lengths, result.bases, strict=True)
    ]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.loglog(result.lengths, result.bases, "o-")
    ax.set_xlabel("context length L")
    ax.set_ylabel("smallest base with sum_i cos(m theta_i) >= 0, m <= L")
    ax.set_title(f"Base of RoPE bounds context length (d={result.head_dim})")
    _note(ax, lines, left=True)
    fig.tight_layout()
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
        default=[1024, 2048, 4096, 8192, 16384, 32768, 65536],
        help="context lengths of figure 3 (the search costs ~O(L) per base tried)",
    )


def run(args) -> int:
    from .cli import need, output_dir

    need("matplotlib", feature="ropelab figures")  # before the minute of computing
    output_dir(args.out)
    decay = roformer_decay(args.head_dim, args.theta, args.decay_distance)
    pi = pi_bounds(args.head_dim, args.theta, args.pi_length, args.seed, args.pi_rcond)
    base = base_bound(args.head_dim, args.lengths)
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
            plot_base(base, os.path.join(args.out, "base_bound.png")),
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
    }
    with open(os.path.join(args.out, "numbers.json"), "w") as f:
        json.dump(numbers, f, indent=1)
    return 0
