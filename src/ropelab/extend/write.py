"""``--write FOLDER2``: the checkpoint again, with a scheme in its config, checked.

Every file of the checkpoint is copied; config.json gets the scheme in transformers' own
form (:meth:`ropelab.RopeConfig.to_hf`: ``rope_parameters`` for transformers 5.x,
``rope_scaling`` for 4.x) and ``max_position_embeddings`` set to the new length (a dynamic
NTK scheme keeps the original length there: transformers' dynamic type grows past it).
The folder is assembled under a temporary name and moved into place. Then transformers
opens it and its logits on a held-out window of the new length are compared with
ropelab's for the same scheme.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import torch

from ..config import RopeConfig
from ..hf.checkpoint import write_config
from ..hf.compat import dtype_key, rope_form
from . import store
from .settings import WRITE_MARKER

__all__ = ["write_extended"]

# keys of the old RoPE settings, replaced as a whole
_ROPE_KEYS = ("rope_scaling", "rope_parameters", "rope_theta", "partial_rotary_factor", "ropelab_scaling", "rope_interleave")


def extended_config(config: dict, rope: RopeConfig, length: int) -> dict:
    """``config`` with ``rope`` and ``max_position_embeddings = length``."""
    new = {k: v for k, v in config.items() if k not in _ROPE_KEYS}
    new["max_position_embeddings"] = length
    keys = rope.to_hf(form=rope_form())
    implied = RopeConfig.from_hf({**new, **{k: v for k, v in keys.items() if k != "rope_interleave"}}).layout
    if implied == rope.layout:
        keys.pop("rope_interleave", None)  # the model type says it already
    original = getattr(rope.scaling, "original_max_position", None)
    if "original_max_position_embeddings" in config and original is not None:
        new["original_max_position_embeddings"] = original  # Phi-3 reads it at the top level first
    new.update(keys)
    read = RopeConfig.from_hf(new)
    if read != rope:
        raise AssertionError(f"the written config reads back as {read!r}, not {rope!r}")
    return new


def write_extended(source, rope: RopeConfig, scheme: str, length: int, folder: str, window: torch.Tensor,
                   *, device="cpu") -> dict:
    """Write ``source``'s checkpoint with ``rope`` to ``folder``; what was written and the
    largest logit difference between transformers and ropelab on ``window`` (1, L)."""
    import transformers

    config = extended_config(source.config, rope, length)
    target = os.path.abspath(folder)
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp-" + os.path.basename(target) + "-")
    try:
        for name in os.listdir(source.folder):
            src = os.path.join(source.folder, name)
            if name in ("config.json", WRITE_MARKER):
                continue
            if os.path.isdir(src):
                shutil.copytree(src, os.path.join(tmp, name))
            else:
                shutil.copy2(src, os.path.join(tmp, name))
        write_config(tmp, config)
        about = {"source": os.path.abspath(source.folder), "scheme": scheme, "length": length,
                 "rope": rope.to_hf(form=rope_form())}
        store.write_json(os.path.join(tmp, WRITE_MARKER), about)
        if os.path.exists(target):
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    try:
        dtype = source.model.embed.weight.dtype
        hf = transformers.AutoModelForCausalLM.from_pretrained(target, local_files_only=True, **{dtype_key(): dtype})
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()
    hf = hf.to(device).eval()
    model = source.model
    model.set_rope(rope)
    try:
        with torch.inference_mode():
            ours = model(window.to(device)).float()
            theirs = hf(window.to(device)).logits.float()
    finally:
        model.set_rope(source.rope)
    params = config.get("rope_parameters") or config.get("rope_scaling") or {}
    return {
        "folder": folder,
        "scheme": scheme,
        "length": length,
        "max_position_embeddings": config["max_position_embeddings"],
        "rope_type": params.get("rope_type", "default"),
        "logits_max_abs_diff": float((ours - theirs).abs().max()),
        "logits_max_abs": float(ours.abs().max()),
    }
