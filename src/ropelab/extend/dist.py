"""Where this process sits when ``ropelab extend`` runs under ``torchrun``.

Evaluation work (text windows, passkey prompts) is split by index across the ranks
(item ``i`` on rank ``i % world``); each rank sums its items' numbers in float64 and one
all-reduce adds the ranks' sums, so every rank holds the same totals, equal to one
process's up to the order of float64 additions. The reductions go over gloo, whatever
device the model is on (they are a few numbers).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

__all__ = ["SINGLE", "Dist", "setup", "teardown"]


@dataclass(frozen=True)
class Dist:
    """Rank and world size; ``world == 1`` is a plain single process."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mine(self, count: int) -> range:
        """The indices of ``count`` items this rank works on."""
        return range(self.rank, count, self.world)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over the ranks (float64)."""
        if self.world == 1:
            return [float(v) for v in values]
        t = torch.tensor(values, dtype=torch.float64)
        torch.distributed.all_reduce(t)
        return t.tolist()

    def share(self, obj):
        """Rank 0's ``obj`` on every rank (what it read from disk, say)."""
        if self.world == 1:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


#: one process, no process group
SINGLE = Dist()


def setup() -> Dist:
    """Join torchrun's process group (gloo) when ``WORLD_SIZE`` > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo")
    return Dist(torch.distributed.get_rank(), world)


def teardown(dist: Dist) -> None:
    """Leave the process group once every rank is done."""
    if dist.world > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
