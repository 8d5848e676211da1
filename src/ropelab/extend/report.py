"""The outputs of an extend run: terminal tables, results.json, results.csv, plots.

A record is one scheme at one length: ``scheme, length, factor, bits_per_token, tokens,
passkey_depths, passkey_accuracy`` (one per depth), ``passkey_mean``, ``note``; None
(JSON null) where there is no number (a passkey prompt longer than the length).
results.png draws bits per token and mean passkey accuracy against length, a line per
scheme; passkey.png the passkey accuracy as a length x depth grid per scheme.
"""

from __future__ import annotations

import csv
import io
import os

from . import store

__all__ = ["render_tables", "write_plots", "write_results"]


def _by_scheme(records):
    lengths = sorted({r["length"] for r in records})
    schemes = list(dict.fromkeys(r["scheme"] for r in records))
    table = {(r["scheme"], r["length"]): r for r in records}
    return lengths, schemes, table


def _grid(title: str, records, value) -> str:
    lengths, schemes, table = _by_scheme(records)
    width = max(9, *(len(s) + 2 for s in schemes))
    lines = [title, " " * width + "".join(f"{n:>9}" for n in lengths)]
    for s in schemes:
        cells = []
        for n in lengths:
            v = value(table[(s, n)]) if (s, n) in table else None
            cells.append(f"{'-':>9}" if v is None else f"{v:9.3f}")
        lines.append(f"{s:<{width}}" + "".join(cells))
    return "\n".join(lines)


def render_tables(results: dict) -> str:
    """Bits per token and passkey accuracy, a row per scheme and a column per length."""
    records = results["records"]
    depths = results["passkey"]["depths"]
    parts = [
        _grid(f"bits per token (lower is better; {results['eval_tokens']} held-out tokens per length)",
              records, lambda r: r["bits_per_token"]),
        _grid(f"passkey accuracy (mean over depths {', '.join(f'{d:g}' for d in depths)}; "
              f"{results['passkey']['trials']} trials each)", records, lambda r: r["passkey_mean"]),
    ]
    search = results.get("longrope")
    if search:
        lines = [f"LongRoPE factors ({search['source']}, for {search['length']} tokens): "
                 + " ".join(f"{v:g}" for v in search["factors"])]
        if search.get("initial"):
            values = ", ".join(f"{k} {v['value']:.4f}" for k, v in search["initial"].items())
            lines.append(f"  search objective (bits per token, search split): best {search['value']:.4f} "
                         f"after {search['evaluations']} evaluations; initial {values}")
        parts.append("\n".join(lines))
    write = results.get("write")
    if write:
        parts.append(f"wrote {write['folder']}: {write['scheme']} for {write['length']} tokens "
                     f"(rope_type {write['rope_type']}); transformers' logits differ from ropelab's by at most "
                     f"{write['logits_max_abs_diff']:.2e} (logits up to {write['logits_max_abs']:.3g})")
    return "\n\n".join(parts)


CSV_FIELDS = ("scheme", "length", "factor", "metric", "depth", "value")


def write_results(out: str, results: dict) -> None:
    """results.json (everything) and results.csv (one number a row), atomically; both
    are made before either is written."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for r in results["records"]:
        base = (r["scheme"], r["length"], r["factor"])
        writer.writerow((*base, "bits_per_token", "", r["bits_per_token"]))
        for depth, acc in zip(r["passkey_depths"], r["passkey_accuracy"] or [None] * len(r["passkey_depths"]), strict=True):
            writer.writerow((*base, "passkey_accuracy", depth, "" if acc is None else acc))
    store.write_json(os.path.join(out, "results.json"), results)
    store.write_text(os.path.join(out, "results.csv"), buf.getvalue())


def passkey_flat(records) -> float | None:
    """The one mean passkey accuracy of every (scheme, length) when they are all equal
    (0 for a model that retrieves nothing); None when they differ or there are none."""
    values = {r["passkey_mean"] for r in records if r.get("passkey_mean") is not None}
    return values.pop() if len(values) == 1 else None


def write_plots(out: str, results: dict) -> list[str]:
    """results.png and passkey.png; the paths written (none without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    records = results["records"]
    lengths, schemes, table = _by_scheme(records)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    flat = passkey_flat(records)
    for s in schemes:
        for ax, key in zip(axes, ("bits_per_token", "passkey_mean"), strict=True):
            points = [(n, table[(s, n)][key]) for n in lengths if (s, n) in table and table[(s, n)][key] is not None]
            if points and not (key == "passkey_mean" and flat is not None):
                ax.plot(*zip(*points, strict=True), marker="o", label=s)
    if flat is not None:  # lines on top of each other say less than a sentence
        axes[1].text(0.5, 0.5, f"passkey accuracy {flat:.3f}\nfor every scheme at every length",
                     transform=axes[1].transAxes, ha="center", va="center", fontsize=11)
    for ax, label in zip(axes, ("bits per token (held-out text)", "passkey accuracy (mean over depths)"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [str(n) for n in lengths])
        ax.axvline(results["original_length"], color="gray", lw=0.8, ls="--")
        ax.set_xlabel("length (tokens); dashed: original length")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].set_ylim(-0.02, 1.02)
    if flat is not None:
        axes[1].set_xlim(axes[0].get_xlim())  # no line to scale the axis by
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    paths = [os.path.join(out, "results.png"), os.path.join(out, "passkey.png")]
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)
    depths = results["passkey"]["depths"]
    cols = min(4, len(schemes))
    rows = -(-len(schemes) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, s in zip(axes.flat, schemes, strict=False):
        grid = [[(table[(s, n)]["passkey_accuracy"] or [float("nan")] * len(depths))[d]
                 if (s, n) in table else float("nan") for n in lengths] for d in range(len(depths))]
        ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto", origin="lower")
        ax.set_title(s, fontsize=9)
        ax.set_xticks(range(len(lengths)), [str(n) for n in lengths], fontsize=7)
        ax.set_yticks(range(len(depths)), [f"{d:g}" for d in depths], fontsize=7)
        ax.set_xlabel("length", fontsize=7)
        ax.set_ylabel("depth", fontsize=7)
    for ax in list(axes.flat)[len(schemes):]:
        ax.axis("off")
    fig.suptitle("passkey accuracy by length and depth (yellow 1, purple 0)", fontsize=10)
    fig.tight_layout()
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)
    return paths
