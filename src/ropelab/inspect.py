"""``ropelab inspect PRESET|config.json``: a RoPE schedule in words, numbers and a plot.

Prints, per rotary pair: its frequency (rad/token), wavelength (tokens), the rotations it
completes within the original context, the unscaled frequency, and how the scaling
scheme changed it (the ratio scaled / unscaled and a word: kept, interpolated,
blended); above the table, the model, layout, dims, base, scheme and attention factor.
With ``--out DIR`` it also writes a PNG there comparing scaled and unscaled wavelengths
(matplotlib, imported on use); without ``--out`` it writes no file.

Uses rich for the table when it is installed, plain text otherwise. Exit codes: 0 on
success, 2 for an unknown preset, an unreadable file, an invalid config, an unwritable
``--out`` or a missing matplotlib (with ``--out``), all found before any output.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._optional import available, require
from .checks import MAX_POSITION
from .cli import CommandError, need, output_dir
from .config import RopeConfig, read_config_json
from .presets import PRESETS, preset_hf_config
from .scaling import default_inv_freq

__all__ = ["Schedule", "add_arguments", "load", "plot_schedule", "run", "schedule"]

# a ratio this close to 1 (or to 1 / factor) counts as exactly kept (or interpolated)
_TOL = 1e-9


class InspectError(CommandError, ValueError):
    """A preset or config file that cannot be inspected (reported with exit code 2)."""


@dataclass(frozen=True)
class Schedule:
    """One head's schedule, per pair (arrays of shape (R/2,)), with what the header shows."""

    name: str
    model_type: str
    config: RopeConfig
    seq_len: int | None
    context: int | None  # the original (pre-extension) context, if the config says
    inv_freq: np.ndarray  # scaled, rad/token
    unscaled: np.ndarray  # theta ** (-2i / R), rad/token
    change: tuple[str, ...]  # kept / interpolated / blended / raised

    @property
    def ratio(self) -> np.ndarray:
        return self.inv_freq / self.unscaled

    @property
    def wavelength(self) -> np.ndarray:
        return 2 * math.pi / self.inv_freq

    @property
    def rotations(self) -> np.ndarray | None:
        return None if self.context is None else self.context * self.inv_freq / (2 * math.pi)

    def header(self) -> list[tuple[str, str]]:
        cfg = self.config
        scheme = cfg.scaling.describe() if cfg.scaling is not None else "none (plain RoPE)"
        lines = [
            (
                "model",
                f"{self.name}" + (f" (model_type {self.model_type})" if self.model_type else ""),
            ),
            ("layout", cfg.layout),
            ("head_dim", str(cfg.head_dim)),
            ("rotary_dim", f"{cfg.rotary_dim} ({cfg.num_pairs} pairs)"),
            ("theta", f"{cfg.theta:g}"),
            ("scheme", scheme),
            ("attention factor", f"{cfg.attention_factor:.6g} (on cos and sin)"),
            ("original context", "unknown" if self.context is None else f"{self.context} tokens"),
        ]
        if cfg.dynamic:
            lines.append(
                ("seq_len", f"{self.seq_len} (the schedule depends on it; set with --seq-len)")
            )
        return lines


def load(spec: str) -> tuple[str, dict]:
    """(display name, config.json dict) of a preset name or a config.json path (or its folder)."""
    if spec in PRESETS:
        return spec, preset_hf_config(spec)
    path = Path(spec)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise InspectError(
            f"{spec!r} is neither a preset nor a config.json file; presets: {', '.join(sorted(PRESETS))}"
        )
    try:
        data = read_config_json(path)
    except OSError as err:
        raise InspectError(f"cannot read {str(path)!r}: {err.strerror or err}") from None
    except ValueError as err:
        raise InspectError(str(err)) from None
    name = path.parent.name if path.stem == "config" and path.parent.name else path.stem
    return name or str(path), data


def _text_part(data: dict) -> dict:
    if (
        "text_config" in data
        and "hidden_size" not in data
        and isinstance(data["text_config"], dict)
    ):
        return data["text_config"]
    return data


def _length(value) -> int | None:
    """A length from the config.json if it is one (from_hf has checked the keys it reads)."""
    ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_POSITION
    return value if ok else None


def _context(cfg: RopeConfig, data: dict) -> int | None:
    original = getattr(cfg.scaling, "original_max_position", None)
    if original is not None:
        return int(original)
    data = _text_part(data)
    params = data.get("rope_parameters") or data.get("rope_scaling") or {}
    for value in (
        data.get("original_max_position_embeddings"),
        params.get("original_max_position_embeddings") if isinstance(params, dict) else None,
        data.get("max_position_embeddings"),
        data.get("n_positions"),
    ):
        if _length(value):
            return _length(value)
    return None


def _default_seq_len(cfg: RopeConfig) -> int | None:
    """The length shown for length-dependent schemes when --seq-len is not given: the one
    the scheme's factor is meant for, else the first past its base regime."""
    if not cfg.dynamic:
        return None
    scheme = cfg.scaling
    extended = scheme.extended_length
    if extended is not None:
        return extended
    base = scheme.regime(None)
    return None if base.last is None else base.last + 1


def _changes(ratio: np.ndarray) -> tuple[str, ...]:
    full = float(ratio.min())  # the strongest interpolation the scheme applies
    words = []
    for r in ratio:
        if abs(r - 1) <= _TOL:
            words.append("kept")
        elif r > 1:
            words.append("raised")
        elif abs(r - full) <= _TOL * full:
            words.append("interpolated")
        else:
            words.append("blended")
    return tuple(words)


def schedule(spec: str, *, seq_len: int | None = None) -> Schedule:
    """Load ``spec`` (a preset name or config.json path) and compute its per-pair schedule."""
    name, data = load(spec)
    try:
        cfg = RopeConfig.from_hf(data)
    except (ValueError, TypeError, KeyError) as err:
        raise InspectError(f"{name}: not a usable RoPE config: {err}") from None
    context = _context(cfg, data)
    if seq_len is None:
        seq_len = _default_seq_len(cfg)
    inv_freq = cfg.inv_freq(seq_len)
    unscaled = default_inv_freq(cfg.theta, cfg.rotary_dim)
    model_type = str(_text_part(data).get("model_type", data.get("model_type", "")))
    return Schedule(
        name, model_type, cfg, seq_len, context, inv_freq, unscaled, _changes(inv_freq / unscaled)
    )


_COLUMNS = (
    "pair",
    "freq (rad/tok)",
    "wavelength (tok)",
    "rotations in ctx",
    "unscaled freq",
    "ratio",
    "change",
)


def _rows(s: Schedule) -> list[tuple[str, ...]]:
    rotations = s.rotations
    rows = []
    for i in range(len(s.inv_freq)):
        rows.append(
            (
                str(i),
                f"{s.inv_freq[i]:.4e}",
                f"{s.wavelength[i]:.4g}",
                "-" if rotations is None else f"{rotations[i]:.4g}",
                f"{s.unscaled[i]:.4e}",
                f"{s.ratio[i]:.4f}",
                s.change[i],
            )
        )
    return rows


def format_plain(s: Schedule) -> str:
    """The header and table as plain text."""
    head = s.header()
    width = max(len(k) for k, _ in head)
    lines = [f"{k:<{width}} : {v}" for k, v in head]
    rows = _rows(s)
    widths = [max(len(c), *(len(r[j]) for r in rows)) for j, c in enumerate(_COLUMNS)]
    lines.append("")

    def line(values):  # numbers right-aligned, the change word left-aligned
        return "  ".join(
            v.ljust(w) if j == len(widths) - 1 else v.rjust(w)
            for j, (v, w) in enumerate(zip(values, widths, strict=True))
        )

    lines.append(line(_COLUMNS).rstrip())
    lines.append("  ".join("-" * w for w in widths))
    lines += [line(r).rstrip() for r in rows]
    return "\n".join(lines)


def _print_rich(s: Schedule) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stdout, width=max(110, Console(file=sys.stdout).width))
    for key, value in s.header():
        console.print(f"[bold]{key}[/bold]: {value}", highlight=False)
    table = Table(show_lines=False, header_style="bold")
    for column in _COLUMNS:
        table.add_column(column, justify="left" if column == "change" else "right")
    styles = {"kept": "green", "interpolated": "red", "blended": "yellow", "raised": "magenta"}
    for row in _rows(s):
        table.add_row(*row[:-1], f"[{styles[row[-1]]}]{row[-1]}[/]")
    console.print(table)


def plot_schedule(s: Schedule, out_dir: str | Path) -> Path:
    """Write a PNG of scaled vs unscaled wavelength per pair; return its path.

    Raises ImportError naming ``ropelab[plot]`` when matplotlib is missing.
    """
    require("matplotlib", feature="ropelab inspect's plot")
    import matplotlib

    matplotlib.use("Agg")  # no display needed; the figure goes to a file
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", s.name).strip("_") or "config"
    path = out_dir / f"inspect-{safe}.png"
    pairs = np.arange(len(s.inv_freq))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True, height_ratios=(3, 1.3))
    top.semilogy(pairs, 2 * np.pi / s.unscaled, "o-", ms=3, color="0.55", label="unscaled")
    top.semilogy(pairs, s.wavelength, "o-", ms=3, color="C0", label="scaled")
    if s.context is not None:
        top.axhline(
            s.context, color="C3", ls="--", lw=1, label=f"original context ({s.context} tokens)"
        )
    if s.seq_len is not None and s.seq_len != s.context:
        top.axhline(s.seq_len, color="C2", ls=":", lw=1, label=f"seq_len ({s.seq_len})")
    top.set_ylabel("wavelength (tokens)")
    top.legend(loc="upper left", fontsize=8)
    scheme = s.config.scaling.describe() if s.config.scaling is not None else "plain RoPE"
    top.set_title(f"{s.name}: {scheme}", fontsize=9)
    bottom.plot(pairs, s.ratio, "o-", ms=3, color="C0")
    bottom.axhline(1.0, color="0.55", lw=0.8)
    bottom.set_ylabel("scaled / unscaled\nfrequency")
    bottom.set_xlabel(
        f"pair index i (of {len(pairs)}; theta={s.config.theta:g}, layout {s.config.layout})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config",
        metavar="PRESET|config.json",
        help=f"a preset name ({', '.join(sorted(PRESETS))}) or a config.json path",
    )
    parser.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="write the plot (inspect-NAME.png) to this folder (default: print only, no file)",
    )
    parser.add_argument(
        "--seq-len",
        type=_positive_int,
        default=None,
        help="current length for length-dependent schemes (dynamic NTK, LongRoPE)",
    )
    parser.add_argument(
        "--no-plot", action="store_true", help="print the table only, even with --out"
    )
    parser.add_argument(
        "--plain", action="store_true", help="plain text even when rich is installed"
    )


def run(args: argparse.Namespace) -> int:
    plot = args.out is not None and not args.no_plot
    if plot:  # what the plot needs is checked before anything is printed
        need("matplotlib", feature="ropelab inspect's plot (or leave out --out)")
        output_dir(args.out)
    s = schedule(args.config, seq_len=args.seq_len)
    if available("rich") and not args.plain:
        _print_rich(s)
    else:
        print(format_plain(s))
    if not plot:
        return 0
    try:
        path = plot_schedule(s, args.out)
    except OSError as err:
        raise CommandError(f"cannot write the plot to --out {args.out!r}: {err}") from None
    print(f"plot: {path}")
    return 0
