"""What a run leaves to resume from and to reuse: checkpoints and final weights.

A checkpoint at step S is two files in the run's folder: ``ckpt-000000S.safetensors``
(the model, the AdamW state ``optim.<i>.{step,exp_avg,exp_avg_sq}``, the torch RNG
state; metadata ``step``) and ``ckpt-000000S.json`` (``step`` and the ``losses`` of
steps 1..S), written after the tensors, so a checkpoint whose JSON exists is complete.
The newest two are kept, so a damaged newest one falls back to the one before it.
Nothing names a file but the folder listing, matched against one pattern: no name
read from a file is ever opened.

Before anything reaches torch a checkpoint must fit the run exactly: every tensor's
name, dtype and shape equal to the model's and optimizer's (an undersized ``exp_avg``
would make fused AdamW write out of bounds), finite values, ``exp_avg_sq >= 0``, the
step an integer below the run's steps, equal to the tensors' own step and to the
number of saved losses, which are finite. A checkpoint that does not fit is removed
and the next older one tried, with one line saying so; none left: the run starts over.

Final weights are ``train.json`` (losses and time) and then ``model.safetensors``,
whose presence marks a trained run; both are checked the same way when reused.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch

from ..checks import is_finite_number, is_int
from . import store
from .errors import BadFile, warn

__all__ = [
    "Restored",
    "adam_layout",
    "apply",
    "latest",
    "load",
    "load_final",
    "remove_checkpoints",
    "save",
    "save_final",
]

KEEP = 2  # checkpoints kept: the newest and the one to fall back to
_NAME = re.compile(r"ckpt-(\d{7})\.(json|safetensors)")
WEIGHTS, TRAIN = "model.safetensors", "train.json"


def _path(folder: str, step: int, ext: str) -> str:
    return os.path.join(folder, f"ckpt-{step:07d}.{ext}")


def adam_layout(optimizer: torch.optim.Optimizer) -> store.Layout:
    """Names, dtypes and shapes of (fused or plain) AdamW's state after its first step."""
    layout: store.Layout = {}
    index = 0
    for group in optimizer.param_groups:
        if group["fused"]:
            step_dtype = torch.float32
        else:
            step_dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
        for p in group["params"]:
            layout[f"optim.{index}.step"] = (step_dtype, ())
            for key in ("exp_avg", "exp_avg_sq", *(("max_exp_avg_sq",) if group["amsgrad"] else ())):
                layout[f"optim.{index}.{key}"] = (p.dtype, tuple(p.shape))
            index += 1
    return layout


def _layout(model, optimizer) -> store.Layout:
    layout = {f"model.{k}": (v.dtype, tuple(v.shape)) for k, v in store.model_tensors(model).items()}
    layout.update(adam_layout(optimizer))
    rng = torch.get_rng_state()
    layout["rng.torch"] = (rng.dtype, tuple(rng.shape))
    return layout


@dataclass(frozen=True)
class Restored:
    """A checked checkpoint, not yet applied."""

    step: int
    losses: list[float]
    tensors: dict[str, torch.Tensor]


def save(folder: str, step: int, model, optimizer, losses: list[float]) -> None:
    """Checkpoint at ``step``; older checkpoints beyond the newest :data:`KEEP` are removed."""
    tensors = {f"model.{k}": v for k, v in store.model_tensors(model).items()}
    for index, entry in optimizer.state_dict()["state"].items():
        for key, value in entry.items():
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"optimizer state {index}.{key} is {type(value).__name__}, expected a tensor")
            tensors[f"optim.{index}.{key}"] = value
    tensors["rng.torch"] = torch.get_rng_state()
    store.save_tensors(_path(folder, step, "safetensors"), tensors, {"format": "pt", "step": str(step)})
    store.write_json(_path(folder, step, "json"), {"step": step, "losses": losses})
    keep = set(_steps(folder)[:KEEP])
    _remove(folder, lambda step: step not in keep)


def _steps(folder: str) -> list[int]:
    """Steps of the complete checkpoints in ``folder``, newest first."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    steps = {int(m.group(1)) for m in map(_NAME.fullmatch, names) if m and m.group(2) == "json"}
    return sorted(steps, reverse=True)


def _losses(path: str, losses, count: int) -> list[float]:
    if not isinstance(losses, list) or len(losses) != count:
        n = len(losses) if isinstance(losses, list) else type(losses).__name__
        raise BadFile(path, f"holds {n} losses, expected {count}")
    for value in losses:
        if not is_finite_number(value):
            raise BadFile(path, f"holds a loss that is not a finite number ({value!r})")
    return [float(v) for v in losses]


def load(folder: str, step: int, model, optimizer, steps: int) -> Restored:
    """The checkpoint at ``step``, checked against the run (BadFile if it does not fit)."""
    meta_path, tensor_path = _path(folder, step, "json"), _path(folder, step, "safetensors")
    meta = store.read_json(meta_path)
    if not isinstance(meta, dict) or set(meta) != {"step", "losses"}:
        raise BadFile(meta_path, "is not a checkpoint record (expected the keys step and losses)")
    if not is_int(meta["step"]) or meta["step"] != step:
        raise BadFile(meta_path, f"names step {meta['step']!r}, but its file name says {step}")
    if not 1 <= step < steps:
        raise BadFile(meta_path, f"step {step} is outside this run's steps 1..{steps - 1}")
    losses = _losses(meta_path, meta["losses"], step)
    try:
        tensors, metadata = store.read_tensors(tensor_path, _layout(model, optimizer))
    except FileNotFoundError:
        raise BadFile(tensor_path, "is missing") from None
    if metadata.get("step") != str(step):
        raise BadFile(tensor_path, f"was written at step {metadata.get('step')!r}, not {step}")
    for name, t in tensors.items():
        if name.startswith("optim.") and name.endswith(".step") and float(t) != step:
            raise BadFile(tensor_path, f"{name} is {float(t)}, not the checkpoint's step {step}")
        if name.endswith(".exp_avg_sq") and bool((t < 0).any()):
            raise BadFile(tensor_path, f"{name} holds negative values")
    return Restored(step, losses, tensors)


def latest(folder: str, model, optimizer, steps: int) -> Restored | None:
    """The newest checkpoint in ``folder`` that fits the run, or None.

    Each one refused is removed, with one line saying what is used instead.
    """
    refused = []
    found = None
    for step in _steps(folder):
        try:
            found = load(folder, step, model, optimizer, steps)
            break
        except BadFile as bad:
            refused.append((step, bad))
    for step, bad in refused:
        then = f"resuming from step {found.step}" if found else "training this run from the start"
        warn(f"checkpoint refused: {bad}; {then}")
        _remove(folder, lambda s, step=step: s == step)
    return found


def apply(restored: Restored, model, optimizer) -> None:
    """Load a checked checkpoint into model, optimizer and torch's RNG."""
    tensors = restored.tensors
    store.load_model_tensors(model, {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    # the run's own hyperparameters, never ones read back (the lr is set every step)
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])


def _remove(folder: str, which) -> None:
    """Remove the checkpoints whose step ``which`` accepts: each one's JSON (what makes it
    complete) before its tensors, so a kill in between never leaves a complete-looking
    half; and the pointer file of older lab versions."""
    names = sorted(os.listdir(folder), key=lambda n: not n.endswith(".json"))
    for name in names:
        match = _NAME.fullmatch(name)
        if match and which(int(match.group(1))):
            store.remove(os.path.join(folder, name))
    store.remove(os.path.join(folder, "checkpoint.json"))


def remove_checkpoints(folder: str) -> None:
    """Remove every checkpoint (the run is trained)."""
    _remove(folder, lambda step: True)


# -- final weights -------------------------------------------------------------------


def save_final(folder: str, model, losses: list[float], info: dict) -> None:
    """``train.json``, then ``model.safetensors`` (the mark of a trained run), then the
    checkpoints are removed: a kill at any point leaves a state the next run resumes."""
    store.write_json(os.path.join(folder, TRAIN), {"steps": len(losses), **info, "final_loss": losses[-1], "losses": losses})
    store.save_tensors(os.path.join(folder, WEIGHTS), store.model_tensors(model), {"format": "pt", "steps": str(len(losses))})
    remove_checkpoints(folder)


def check_final(folder: str, model, steps: int) -> dict[str, torch.Tensor] | None:
    """The trained weights in ``folder`` if they are there and fit; None when absent.

    BadFile when present but wrong (weights or their ``train.json``).
    """
    weights, train_path = os.path.join(folder, WEIGHTS), os.path.join(folder, TRAIN)
    if not os.path.lexists(weights):
        return None
    record = store.read_json(train_path)
    if not isinstance(record, dict) or record.get("steps") != steps or not is_int(record.get("steps")):
        raise BadFile(train_path, f"does not record a training of {steps} steps")
    _losses(train_path, record.get("losses"), steps)
    layout = {k: (v.dtype, tuple(v.shape)) for k, v in store.model_tensors(model).items()}
    try:
        tensors, metadata = store.read_tensors(weights, layout)
    except FileNotFoundError:
        return None
    if metadata.get("steps", str(steps)) != str(steps):
        raise BadFile(weights, f"was trained {metadata.get('steps')!r} steps, not {steps}")
    return tensors


def load_final(folder: str, model, steps: int) -> bool:
    """Load the trained weights in ``folder`` into ``model``; False when there are none
    that fit (refused ones are removed, with one line saying so)."""
    try:
        tensors = check_final(folder, model, steps)
    except BadFile as bad:
        warn(f"trained weights refused: {bad}; training this run again")
        discard_final(folder)
        return False
    if tensors is None:
        return False
    store.load_model_tensors(model, tensors)
    return True


def discard_final(folder: str) -> None:
    for name in (WEIGHTS, TRAIN):
        store.remove(os.path.join(folder, name))
