"""Evaluation of a trained model at one length: the task's metrics on fixed examples.

Examples come from ``generator_for(seed, "eval", task, length)``: every scheme and
extension is scored on the same strings or windows.

Shapes: B batch, T time (the evaluation length), V vocabulary.
"""

from __future__ import annotations

import torch

from .tasks import generator_for
from .train import masked_loss_sum

__all__ = ["evaluate"]


@torch.no_grad()
def evaluate(model: torch.nn.Module, task, length: int, *, seed: int, num_examples: int, batch_size: int, device: str = "cpu") -> dict[str, float]:
    """The task's metrics (e.g. ``{"exact_match": ..., "token_accuracy": ...}``) at ``length``."""
    model.eval()
    g = generator_for(seed, "eval", task.name, length)
    # long windows cost T^2 memory in attention; keep about batch_size * 256 tokens per call
    rows = max(1, min(batch_size, batch_size * 256 // max(length, 1)))
    sums: dict[str, float] = {}
    for batch in task.eval_batches(length, num_examples, rows, g):
        batch = batch.to(device)
        logits = model(batch.inputs)  # (B, T, V)
        part = task.score_batch(logits, batch, masked_loss_sum(logits, batch))
        for key, value in part.items():
            sums[key] = sums.get(key, 0) + value
    model.train()
    return task.metrics(sums)
