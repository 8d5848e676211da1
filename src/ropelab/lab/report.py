"""The lab's outputs: results.json, results.csv, a plot and a terminal table.

A record is one number: ``scheme, task, train_len, eval_len, extension ("none" for
plain), finetune_steps, metric, value, seed, note``. ``value`` is None where a scheme
has no answer at that length (``note`` says why); a NaN or infinity is never written
(the JSON is strict).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections import Counter

from ..checks import is_finite_number
from . import store
from .contenders import CONTENDERS, FAMILIES

__all__ = ["FIELDS", "OUTPUTS", "line_label", "plot", "render_table", "write_results"]

FIELDS = ("scheme", "task", "train_len", "eval_len", "extension", "finetune_steps", "metric", "value", "seed", "note")
OUTPUTS = ("results.json", "results.csv", "results.png")

#: the metrics each task is tabulated and plotted by, the headline first. Copy shows
#: token accuracy too: past the training length exact match is mostly 0 for every
#: scheme, while the share of right tokens still tells the schemes apart.
SHOWN = {"copy": ("exact_match", "token_accuracy"), "recall": ("accuracy", "exact_match"), "lm": ("bits_per_char",)}

#: what the plot calls tasks and metrics
TASK_LABELS = {"copy": "copy", "recall": "associative recall", "lm": "language modelling (bytes)"}
METRIC_LABELS = {
    "exact_match": "exact match (share of strings all right)",
    "token_accuracy": "token accuracy (share of tokens right)",
    "accuracy": "accuracy of the recalled values",
    "bits_per_char": "bits per character (lower is better)",
    "perplexity": "perplexity (lower is better)",
}
BOUNDED = {"exact_match", "token_accuracy", "accuracy"}  # shares: drawn on 0..1

#: line label -> (colour, marker): hues by family (blues and purples rotary, green and
#: red biases, black, orange and brown absolute); RoPE's extensions are lighter or
#: darker blues, dashed
STYLES = {
    "rope": ("#1f5fbf", "o"),
    "rope+linear": ("#74a9e8", "<"),
    "rope+ntk": ("#0b2a66", ">"),
    "rope+yarn": ("#17a2c4", "d"),
    "irope": ("#8a4fd0", "P"),
    "xpos": ("#c05fb0", "X"),
    "p-rope": ("#5d6d8a", "*"),
    "alibi": ("#2a9d3a", "D"),
    "t5": ("#d62728", "v"),
    "nope": ("#222222", "h"),
    "sinusoidal": ("#ff8c1a", "s"),
    "learned": ("#9c5b2e", "^"),
}
_SPARE_COLOURS = ("#7f7f7f", "#bcbd22", "#e377c2", "#8c564b", "#9edae5")
_SPARE_MARKERS = "H8p+x1"


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


def _finite(row: dict) -> dict:
    """The row with a value that is not a finite number made null, the note saying so."""
    value = row["value"]
    if value is None or is_finite_number(value):
        return row
    note = f"measured {value}, not a finite number"
    return {**row, "value": None, "note": f"{row['note']}; {note}" if row["note"] else note}


def write_results(out: str, records: list[dict]) -> None:
    """results.json and results.csv, each written atomically; no NaN or infinity."""
    rows = [_finite({k: r.get(k) for k in FIELDS}) for r in records]
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


def _family(label: str) -> str:
    contender = CONTENDERS.get(label.split("+")[0].split(" ")[0])
    return contender.family if contender else "other"


def _style(label: str, spare: dict) -> tuple[str, str, str]:
    """(colour, marker, line style) of a line: dashed for RoPE with an extension."""
    base = label.split(" ")[0]
    if base in STYLES:
        colour, marker = STYLES[base]
    else:
        n = spare.setdefault(base, len(spare))
        colour, marker = _SPARE_COLOURS[n % len(_SPARE_COLOURS)], _SPARE_MARKERS[n % len(_SPARE_MARKERS)]
    return colour, marker, "--" if "+" in label else "-"


def _fmt(v: float) -> str:
    return f"{v:.3f}"


def panel_note(lines: dict[str, dict[int, float | None]], train_len: int, metric: str) -> str | None:
    """One line for a panel that would show nothing, else None.

    A panel shows nothing when every line is the same constant, or when at least three
    lines lie on one value past the training length and at most one leaves it: the
    lines would be drawn on top of each other.
    """
    name = METRIC_LABELS.get(metric, metric).split(" (")[0]
    known = [v for pts in lines.values() for v in pts.values() if v is not None]
    if not known:
        return f"{name}: no values (see the notes in results.csv)"
    if len(set(known)) == 1:
        return f"{name}: {_fmt(known[0])} for every scheme at every length"
    past = {label: {n: v for n, v in pts.items() if n > train_len and v is not None} for label, pts in lines.items()}
    values = [v for pts in past.values() for v in pts.values()]
    if len(lines) < 3 or not values:
        return None
    base = Counter(values).most_common(1)[0][0]
    apart = {label: pts for label, pts in past.items() if any(v != base for v in pts.values())}
    if len(apart) > 1:
        return None
    at_train = [pts.get(train_len) for pts in lines.values() if pts.get(train_len) is not None]
    if at_train and len(set(at_train)) == 1:
        first = f"{_fmt(at_train[0])} for every scheme at the training length ({train_len})"
    elif at_train:
        first = f"{_fmt(min(at_train))} to {_fmt(max(at_train))} at the training length ({train_len})"
    else:
        first = f"no values at the training length ({train_len})"
    rest = f"past it {_fmt(base)} for every scheme"
    for label, pts in apart.items():
        rest += f" except {label} (" + ", ".join(f"{_fmt(v)} at {n}" for n, v in sorted(pts.items()) if v != base) + ")"
    return f"{name}: {first}; {rest}"


def plot(out: str, records: list[dict], filename: str = "results.png") -> str:
    """Metric against evaluation length: a panel per task and metric, a line per scheme
    and extension, schemes grouped by family in one legend. A metric that would draw
    every line on top of the others is a note under the panels instead."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    panels, notes = [], []
    for task, metric in _panels(records):
        lines = _series(records, task, metric)
        train_len = next(r["train_len"] for r in records if r["task"] == task)
        note = panel_note(lines, train_len, metric)
        if note is None:
            panels.append((task, metric, lines, train_len))
        else:
            notes.append(f"{TASK_LABELS.get(task, task)}, {note}")
    count = max(1, len(panels))
    fig, axes = plt.subplots(1, count, figsize=(5.6 * count + 2.6, 4.6 + 0.25 * len(notes)), squeeze=False)
    handles: dict[str, dict[str, Line2D]] = {}
    spare: dict[str, int] = {}
    for ax, (task, metric, lines, train_len) in zip(axes[0], panels, strict=False):
        lengths = sorted({n for pts in lines.values() for n in pts})
        for label, points in lines.items():
            xs = sorted(points)
            ys = [math.nan if points[x] is None else points[x] for x in xs]
            colour, marker, style = _style(label, spare)
            (line,) = ax.plot(xs, ys, style, color=colour, marker=marker, markersize=5.5, linewidth=1.6,
                              markerfacecolor="white" if style == "--" else colour, label=label)
            handles.setdefault(_family(label), {}).setdefault(label, line)
        ax.axvline(train_len, color="grey", linewidth=1.0, linestyle=":")
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [f"{n}\n{n / train_len:g}x" for n in lengths])
        ax.minorticks_off()
        ax.set_xlabel("evaluation length in tokens (dotted: the training length)")
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        if metric in BOUNDED:
            ax.set_ylim(-0.03, 1.03)
        ax.set_title(f"{TASK_LABELS.get(task, task)}, trained at {train_len} tokens")
        ax.grid(alpha=0.3)
    if not panels:
        axes[0][0].axis("off")
    legend_handles, headers = [], []
    for family in [*FAMILIES, "other"]:
        if family not in handles:
            continue
        header = FAMILIES.get(family, "other")
        headers.append(header)
        legend_handles.append(Line2D([], [], linestyle="none", label=header))
        legend_handles += list(handles[family].values())
    width, height = fig.get_size_inches()
    line = 0.24  # inches per note
    left, right = 0.8 / width, 1 - 2.5 / width
    bottom, top = (0.95 + line * len(notes)) / height, 1 - 0.4 / height
    fig.subplots_adjust(left=left, right=right, bottom=bottom, top=top, wspace=0.28)
    if legend_handles:  # beside the panels, never over the data
        legend = fig.legend(handles=legend_handles, loc="center left", bbox_to_anchor=(right + 0.05 / width, (bottom + top) / 2),
                            fontsize=8.5, frameon=False, handlelength=2.6, borderaxespad=0.0)
        for text in legend.get_texts():
            if text.get_text() in headers:
                text.set_fontweight("bold")
    for i, note in enumerate(notes):
        fig.text(0.1 / width, (0.12 + line * (len(notes) - 1 - i)) / height, note, fontsize=8.5, ha="left", va="bottom")
    buf = io.BytesIO()
    fig.savefig(buf, dpi=120, format="png")
    plt.close(fig)
    path = os.path.join(out, filename)
    store.write_atomic(path, buf.getvalue())
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
