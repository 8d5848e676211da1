"""The lab's outputs: results.json, results.csv, a plot and a terminal table.

A record is one number: ``scheme, task, train_len, eval_len, extension ("none" for
plain), finetune_steps, metric, value, seed, note``. ``value`` is None where a scheme
has no answer at that length (``note`` says why).
"""

from __future__ import annotations

import csv
import io
import math
import os

from . import store

__all__ = ["FIELDS", "line_label", "render_table", "write_results", "plot"]

FIELDS = ("scheme", "task", "train_len", "eval_len", "extension", "finetune_steps", "metric", "value", "seed", "note")

#: the metrics each task is tabulated and plotted by, the headline first. Copy shows
#: token accuracy too: past the training length exact match is mostly 0 for every
#: scheme, while the share of right tokens still tells the schemes apart.
SHOWN = {"copy": ("exact_match", "token_accuracy"), "recall": ("accuracy", "exact_match"), "lm": ("bits_per_char",)}


def _panels(records: list[dict]) -> list[tuple[str, str]]:
    """(task, metric) of each table and plot panel, in record order."""
    out = []
    for task in dict.fromkeys(r["task"] for r in records):
        present = {r["metric"] for r in records if r["task"] == task}
        out += [(task, m) for m in SHOWN.get(task, sorted(present)) if m in present]
    return out


def line_label(record: dict) -> str:
    """``rope``, ``rope+yarn``, ``rope+linear ft200`` (one line of the plot and table)."""
    label = record["scheme"]
    if record["extension"] != "none":
        label += "+" + record["extension"]
    if record.get("finetune_steps"):
        label += f" ft{record['finetune_steps']}"
    return label


def write_results(out: str, records: list[dict]) -> None:
    """results.json and results.csv, each written atomically."""
    rows = [{k: r.get(k) for k in FIELDS} for r in records]
    store.write_json(os.path.join(out, "results.json"), rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    store.write_atomic(os.path.join(out, "results.csv"), buf.getvalue())


def _series(records: list[dict], task: str, metric: str) -> dict[str, dict[int, float | None]]:
    lines: dict[str, dict[int, float | None]] = {}
    for r in records:
        if r["task"] == task and r["metric"] == metric:
            lines.setdefault(line_label(r), {})[r["eval_len"]] = r["value"]
    return lines


def plot(out: str, records: list[dict], filename: str = "results.png") -> str:
    """Metric against evaluation length, a panel per task and metric, a line per scheme/extension."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = _panels(records)
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(6.5 * max(1, len(panels)), 4.8), squeeze=False)
    for ax, (task, metric) in zip(axes[0], panels, strict=False):
        train_len = next(r["train_len"] for r in records if r["task"] == task)
        colors = plt.get_cmap("tab20").colors
        markers = "os^vD<>p*hX"
        for i, (label, points) in enumerate(_series(records, task, metric).items()):
            xs = sorted(points)
            ys = [math.nan if points[x] is None else points[x] for x in xs]
            style = "--" if "+" in label else "-"  # dashed: RoPE with an extension
            ax.plot(xs, ys, style, color=colors[i % len(colors)], marker=markers[i % len(markers)],
                    markersize=4, label=label)
        ax.axvline(train_len, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("evaluation length (tokens); dotted: training length")
        ax.set_ylabel(metric)
        ax.set_title(f"{task} (trained at {train_len})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = os.path.join(out, filename)
    tmp = os.path.join(out, ".tmp-" + filename)
    fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def render_table(records: list[dict]) -> str:
    """One table per task and metric: a row per scheme/extension, a column per evaluation length."""
    out = []
    for task, metric in _panels(records):
        lines = _series(records, task, metric)
        lengths = sorted({n for points in lines.values() for n in points})
        width = max([len(k) for k in lines] + [8])
        out.append(f"{task}: {metric} by evaluation length")
        out.append(" " * width + "".join(f"{n:>9}" for n in lengths))
        for label, points in lines.items():
            cells = []
            for n in lengths:
                v = points.get(n, "")
                cells.append(f"{'-':>9}" if v is None else f"{'':>9}" if v == "" else f"{v:>9.3f}")
            out.append(f"{label:<{width}}" + "".join(cells))
        out.append("")
    return "\n".join(out)
