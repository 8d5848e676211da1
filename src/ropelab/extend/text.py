"""Held-out text as tokens, its two splits, and bits per token over sliding windows.

The text files are read as UTF-8, joined by newlines and tokenized once. The token
stream is cut in two: the first ``search_fraction`` is the *search split* (LongRoPE's
factor search scores candidates there), the rest the *evaluation split* (every reported
number: bits per token, and the passkey's filler). The two never overlap.

Bits per token at length ``L`` with stride ``S`` (sliding windows; Press et al. 2022,
arXiv:2108.12409, and the YaRN paper's evaluation, Peng et al. 2023): window ``k``
reads ``L`` positions and scores only its last ``S`` targets, so every scored token is
scored once, with ``L - S`` to ``L - 1`` tokens of context before it in its window. The
scored tokens are the same span of the split at every length (it starts after the
longest length's first context), so lengths compare the same text. A window is
``[BOS] + tokens`` when the tokenizer has a beginning-of-sequence token (the first
target is then read after BOS alone), else the tokens themselves.

Shapes: N windows, L window length, V vocabulary.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .dist import SINGLE, Dist

__all__ = ["Split", "Windows", "bits_per_token", "read_text", "score_start", "sliding_windows", "split_stream"]


def read_text(paths: list[str]) -> str:
    """The files' text joined by newlines; ValueError naming a file that is not UTF-8 text."""
    parts = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                parts.append(f.read())
        except UnicodeDecodeError as err:
            raise ValueError(f"--text file {path!r} is not UTF-8 text ({err.reason} at byte {err.start})") from None
        if not parts[-1]:
            raise ValueError(f"--text file {path!r} is empty")
    return "\n".join(parts)


@dataclass(frozen=True)
class Split:
    """The two splits of the token stream (1-D long tensors)."""

    search: torch.Tensor
    evaluation: torch.Tensor


def split_stream(tokens: torch.Tensor, search_fraction: float) -> Split:
    cut = int(len(tokens) * search_fraction)
    return Split(tokens[:cut], tokens[cut:])


@dataclass(frozen=True)
class Windows:
    """``inputs`` and ``targets`` (N, L) long; ``scored`` (N, L) bool."""

    inputs: torch.Tensor
    targets: torch.Tensor
    scored: torch.Tensor

    @property
    def tokens(self) -> int:
        return int(self.scored.sum())


def score_start(lengths, stride_fraction: float, bos: int | None) -> int:
    """Where the scored span begins: after the first window's context at every length."""
    return max(length - stride(length, stride_fraction) for length in lengths) + (0 if bos is not None else 1)


def stride(length: int, fraction: float) -> int:
    """The stride of windows of ``length`` (at least 1 token)."""
    return max(1, int(round(length * fraction)))


def sliding_windows(stream: torch.Tensor, *, length: int, stride_tokens: int, start: int, count: int,
                    bos: int | None) -> Windows:
    """Windows of ``length`` positions scoring ``stream[start : start + count]`` once.

    Window ``k`` has targets ``stream[a : a + length]`` with ``a = start + k * stride -
    (length - stride)`` and scores those at or past ``start + k * stride`` (its last
    ``stride``, fewer in the last window). ``start`` must leave room for the first
    window's context (:func:`score_start`).
    """
    first = start - (length - stride_tokens)
    if first < (0 if bos is not None else 1):
        raise ValueError(f"the scored span starts at {start}, too early for windows of {length} with stride {stride_tokens}")
    if start + count > len(stream):
        raise ValueError(f"scoring {count} tokens from {start} needs {start + count} tokens; the split has {len(stream)}")
    n = math.ceil(count / stride_tokens)
    offsets = first + stride_tokens * torch.arange(n)  # (N,) first target of each window
    cols = torch.arange(length)
    targets = stream[offsets[:, None] + cols[None, :]]  # (N, L)
    if bos is not None:
        inputs = torch.cat([torch.full((n, 1), bos, dtype=stream.dtype), targets[:, :-1]], dim=1)
    else:
        inputs = stream[offsets[:, None] + cols[None, :] - 1]
    index = offsets[:, None] + cols[None, :]  # (N, L) stream index of each target
    lo = (start + stride_tokens * torch.arange(n))[:, None]
    scored = (index >= lo) & (index < start + count)
    return Windows(inputs, targets, scored)


@torch.inference_mode()
def bits_per_token(model, windows: Windows, *, batch_size: int, dist: Dist = SINGLE, device="cpu") -> tuple[float, int]:
    """Mean bits per scored token over the windows, and the count; the windows are
    shared out across ranks and their sums added (every rank gets the totals)."""
    mine = list(dist.mine(len(windows.inputs)))
    nats = 0.0
    for i in range(0, len(mine), batch_size):
        rows = torch.tensor(mine[i : i + batch_size])
        inputs = windows.inputs[rows].to(device)
        targets = windows.targets[rows].to(device)
        scored = windows.scored[rows].to(device)
        logits = model(inputs)  # (B, L, V)
        losses = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none")
        nats += float(losses.double()[scored.flatten()].sum())
    total, count = dist.sum([nats, float(windows.scored[mine].sum()) if mine else 0.0])
    if count == 0:
        raise ValueError("no tokens were scored")
    return total / count / math.log(2), int(count)


def check_paths(paths) -> list[str]:
    """The --text paths, each an existing file (ValueError naming the first that is not)."""
    if not paths:
        raise ValueError("--text needs at least one file")
    for path in paths:
        if not os.path.exists(path):
            raise ValueError(f"--text path {path!r} does not exist")
        if os.path.isdir(path):
            raise ValueError(f"--text path {path!r} is a directory; pass text files")
    return list(paths)
