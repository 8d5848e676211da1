"""Files of a lab run: atomic writes, safetensors weights, resumable checkpoints.

Every file is written to a temporary name in its folder and moved into place with
``os.replace``, so a run killed at any moment leaves either the old file or the new
one, never half of one. Tensors go to safetensors (never pickle), the rest to JSON.

A checkpoint is two files named by their step (``ckpt-000200.safetensors`` for the
model, optimizer and RNG tensors, ``ckpt-000200.json`` for the rest) and a pointer
``checkpoint.json`` written last; files of older steps are removed after the pointer
moves, so the pointer always names a complete checkpoint.
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
from typing import Any

import torch
from safetensors.torch import load_file, save_file

__all__ = [
    "load_checkpoint",
    "load_weights",
    "read_json",
    "save_checkpoint",
    "save_weights",
    "write_atomic",
    "write_json",
]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temp(folder: str, suffix: str) -> tuple[int, str]:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=suffix)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are for sharing
    return fd, tmp


def write_atomic(path: str, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = _temp(folder, "-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=1, sort_keys=False) + "\n")


def read_json(path: str, default: Any = None) -> Any:
    if not os.path.exists(path):
        return default
    with open(path) as f:
        return json.load(f)


def _save_tensors(path: str, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = _temp(folder, ".safetensors")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # tied weights (embedding = lm head) are one tensor under two names; keep the first name
    seen, out = set(), {}
    for name, t in model.state_dict().items():
        key = (t.data_ptr(), t.shape, t.dtype)
        if key in seen and t.numel():
            continue
        seen.add(key)
        out[name] = t.detach().cpu().contiguous()
    return out


def save_weights(path: str, model: torch.nn.Module) -> None:
    """The model's weights as safetensors (atomically)."""
    _save_tensors(path, _model_tensors(model), {"format": "pt"})


def load_weights(path: str, model: torch.nn.Module) -> None:
    tensors = load_file(path)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    # a tied weight appears under one name only; its twin is the same parameter
    names = dict(model.named_parameters(remove_duplicate=False))
    kept = {id(names[n]) for n in tensors if n in names}
    missing = [n for n in missing if not (n in names and id(names[n]) in kept)]
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not fit the model (missing {missing}, unexpected {unexpected})")


def save_checkpoint(folder: str, step: int, model, optimizer, state: dict) -> None:
    """Model, optimizer (tensors and settings), torch RNG state and ``state`` at ``step``."""
    tensors = {f"model.{k}": v for k, v in _model_tensors(model).items()}
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in opt["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    tensors["rng.torch"] = torch.get_rng_state()
    tag = f"ckpt-{step:07d}"
    _save_tensors(os.path.join(folder, tag + ".safetensors"), tensors)
    write_json(
        os.path.join(folder, tag + ".json"),
        {"step": step, "param_groups": opt["param_groups"], "optim_scalars": scalars, **state},
    )
    write_json(os.path.join(folder, "checkpoint.json"), {"step": step, "tag": tag})
    for old in glob.glob(os.path.join(folder, "ckpt-*")):
        if not os.path.basename(old).startswith(tag):
            os.unlink(old)


def load_checkpoint(folder: str, model, optimizer) -> dict | None:
    """Restore the latest checkpoint in ``folder`` into model and optimizer; its state dict.

    None when the folder holds no checkpoint.
    """
    pointer = read_json(os.path.join(folder, "checkpoint.json"))
    if pointer is None:
        return None
    tag = pointer["tag"]
    tensors = load_file(os.path.join(folder, tag + ".safetensors"))
    meta = read_json(os.path.join(folder, tag + ".json"))
    model_part = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(model_part, strict=False)
    names = dict(model.named_parameters(remove_duplicate=False))
    kept = {id(names[n]) for n in model_part if n in names}
    if [n for n in missing if not (n in names and id(names[n]) in kept)] or unexpected:
        raise ValueError(f"checkpoint {tag} in {folder} does not fit the model")
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, entry in meta["optim_scalars"].items():
        state.setdefault(int(index), {}).update(entry)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    return meta
