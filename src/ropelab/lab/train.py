"""Training loop of the lab: AdamW, warmup + cosine schedule, checkpoints, DDP.

A NaN or infinite loss stops training at once (:class:`~ropelab.lab.errors.NonFiniteLoss`):
nothing past it is worth a step or a checkpoint.

Multi-process training (``torchrun``; gloo on CPU, NCCL on CUDA) gives each rank an
equal slice of the same global batch. Each rank's loss is its slice's summed token
loss divided by the global token count, times the world size, so DDP's gradient
average equals the gradient of the global batch's mean loss: one process and N
processes take the same steps (up to float summation order).

Shapes: B batch, T time, V vocabulary.
"""

from __future__ import annotations

import datetime
import math
import os
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import checkpoint
from .errors import BadFile, LabError, NonFiniteLoss
from .settings import DDP_TIMEOUT_MINUTES
from .tasks import Batch, generator_for

__all__ = ["DistContext", "leave_worker", "lr_at", "masked_loss_sum", "setup_distributed", "train"]


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank, world size, device."""

    rank: int = 0
    world: int = 1
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def broadcast_int(self, value: int) -> int:
        """Rank 0's ``value`` on every rank (what rank 0 decided about shared files)."""
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=self.device)
        torch.distributed.broadcast(t, 0)
        return int(t.item())


def setup_distributed(device: str = "auto", timeout_minutes: float = DDP_TIMEOUT_MINUTES) -> DistContext:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1).

    A collective that waits longer than ``timeout_minutes`` for another process (one
    stopped, or gone) fails instead of blocking. Under torchrun each process also ends
    when the launcher is gone (:mod:`ropelab.lab.lifeline`).
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(0, 1, device)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    if "TORCHELASTIC_RUN_ID" in os.environ:  # started by torchrun: its agent is the parent
        from .lifeline import watch_parent

        watch_parent(os.getppid())
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(
            "nccl" if device.startswith("cuda") else "gloo", timeout=datetime.timedelta(minutes=timeout_minutes)
        )
    return DistContext(rank, world, device)


def leave_worker(status: int = 0) -> None:
    """End a DDP worker process with ``status``, skipping interpreter finalization.

    Once a process has built a ``DistributedDataParallel``, torch keeps its gloo group
    referenced from C++ past ``destroy_process_group``, so gloo's threads still run while
    the interpreter finalizes; now and then that exit aborts in ``std::terminate``
    (SIGABRT, "terminate called without an active exception"; 1 run in 10 on a loaded
    2-core CPU, and once in CI; pytorch/pytorch#190489). Call it only when every
    result is saved, the ranks have met at a barrier and the group is destroyed.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def lr_at(step: int, steps: int, lr: float) -> float:
    """Linear warmup over the first 5% of steps, cosine decay to 10% of ``lr``."""
    warmup = max(1, steps // 20)
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def masked_loss_sum(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Summed cross-entropy (nats) over the scored targets. logits (B, T, V)."""
    losses = F.cross_entropy(logits.flatten(0, 1).float(), batch.targets.flatten(), reduction="none")
    return (losses * batch.mask.flatten()).sum()


def _after_step(step: int) -> None:
    """Called after every optimizer step; tests replace it to simulate a kill."""


def _resume(folder: str, model, optimizer, steps: int, ctx: DistContext) -> checkpoint.Restored | None:
    """The checkpoint to resume from: rank 0 picks it (refusing what does not fit), the
    other ranks read that same one."""
    if ctx.is_main:
        restored = checkpoint.latest(folder, model, optimizer, steps)
    step = ctx.broadcast_int(restored.step if ctx.is_main and restored else 0)
    if not ctx.is_main:
        restored = None
        if step:
            try:
                restored = checkpoint.load(folder, step, model, optimizer, steps)
            except BadFile as bad:
                raise LabError(f"DDP rank {ctx.rank}: checkpoint rank 0 resumes from does not fit: {bad}") from None
    if restored is not None:
        checkpoint.apply(restored, model, optimizer)
    return restored


def train(
    model: torch.nn.Module,
    task,
    *,
    length: int,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    stream: str,
    folder: str,
    ctx: DistContext = DistContext(),
    checkpoint_every: int = 100,
    progress: bool = True,
    desc: str = "train",
    position: int = 0,
) -> list[float]:
    """Train ``model`` for ``steps`` steps on ``task`` batches of ``length`` tokens.

    Resumes from the checkpoint in ``folder`` if there is one. Batch ``s`` is drawn from
    ``generator_for(seed, stream, s)``, so a resumed run sees the batches an
    uninterrupted one would. Returns the global-batch loss of every step; raises
    NonFiniteLoss at the first NaN or infinite one.
    """
    if batch_size % ctx.world:
        raise ValueError(f"--batch-size {batch_size} is not divisible by the {ctx.world} processes")
    model.to(ctx.device)
    model.train()
    # the fused (one kernel) AdamW: ~5% of a tiny model's step on one CPU core
    fused = torch.device(ctx.device).type in ("cpu", "cuda")
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01, fused=fused or None
    )
    restored = _resume(folder, model, optimizer, steps, ctx)
    start, losses = (0, []) if restored is None else (restored.step, list(restored.losses))
    net = model
    if ctx.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[torch.device(ctx.device).index] if ctx.device.startswith("cuda") else None
        )
    share = batch_size // ctx.world
    bar = None
    if progress and ctx.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=start, desc=desc, leave=False, dynamic_ncols=True, position=position)
    for step in range(start, steps):
        batch = task.train_batch(batch_size, length, generator_for(seed, stream, step))
        count = batch.mask.sum().clamp(min=1)  # scored tokens in the global batch
        mine = batch.rows(ctx.rank * share, (ctx.rank + 1) * share).to(ctx.device)
        loss_sum = masked_loss_sum(net(mine.inputs), mine)
        # DDP averages gradients over ranks; * world makes that the global mean's gradient
        (loss_sum * (ctx.world / count.to(loss_sum.device))).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, lr)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        total = loss_sum.detach()
        if ctx.world > 1:
            torch.distributed.all_reduce(total)
        losses.append(float(total) / float(count))
        if not math.isfinite(losses[-1]):  # every rank sees the same reduced loss
            if bar is not None:
                bar.close()
            raise NonFiniteLoss(step + 1, losses[-1])
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
        done = step + 1
        if done % checkpoint_every == 0 and done < steps:
            if ctx.is_main:
                checkpoint.save(folder, done, model, optimizer, losses)
            ctx.barrier()
        _after_step(done)
    if bar is not None:
        bar.close()
    return losses
