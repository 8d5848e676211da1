"""The checkpoint an extend run works on: model, tokenizer, original length, identity.

A checkpoint is a local transformers folder that :func:`ropelab.hf.load_pretrained`
reads (Llama, Mistral, Qwen2, Phi-3, Llama 4 text; safetensors weights) and that holds
a tokenizer (``tokenizer.json`` or the like; :func:`ropelab.hf.byte_tokenizer` for the
lab's byte-level models). Its *original length* ``L0`` is the length it was trained at:
the original length of the scheme it ships with, else ``max_position_embeddings``
(``--original-length`` overrides both).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from ..checks import is_int
from ..config import RopeConfig
from ..hf.checkpoint import CheckpointError, read_config
from . import store

__all__ = ["Source", "open_checkpoint"]

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


@dataclass
class Source:
    folder: str
    config: dict  # config.json
    model: object  # ropelab.torch.Transformer
    tokenizer: object
    bos: int | None  # the beginning-of-sequence id windows start with (None: none)
    rope: RopeConfig  # the checkpoint's own schedule
    original: int  # L0
    fingerprint: str  # changes when config.json or a weights file changes

    @property
    def base(self) -> RopeConfig:
        """The checkpoint's schedule without its own scheme (what the schemes scale)."""
        return replace(self.rope, scaling=None)

    def encode(self, text: str):
        import torch

        ids = self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        return torch.tensor(ids, dtype=torch.long)



def _bos(folder: str, tokenizer, config: dict, vocab: int) -> int | None:
    """The beginning-of-sequence token put before every window: the tokenizer's, else
    config.json's; CheckpointError naming where it came from when the model has no
    such token id (an integer below vocab_size)."""
    if tokenizer.bos_token_id is not None:
        bos, where = tokenizer.bos_token_id, "its tokenizer's bos_token_id"
    else:
        bos, where = config.get("bos_token_id"), "config.json's bos_token_id"
    if bos is None:
        return None
    if not is_int(bos) or not 0 <= bos < vocab:
        raise CheckpointError(f"{folder}: {where} is {bos!r}, not a token id of the model "
                              f"(an integer in [0, {vocab}))")
    return bos


def _fingerprint(folder: str, config: dict) -> str:
    files = sorted(n for n in os.listdir(folder) if n.endswith(".safetensors") or n.endswith(".json"))
    stats = [(n, os.path.getsize(os.path.join(folder, n)), os.path.getmtime(os.path.join(folder, n))) for n in files]
    return store.digest({"config": config, "files": stats})


def open_checkpoint(folder: str, *, original_length: int | None = None, dtype=None, device="cpu") -> Source:
    """Open ``folder`` for an extend run.

    Raises:
        FileNotFoundError / NotADirectoryError / ValueError: not a checkpoint folder ropelab
            reads, no tokenizer in it, or no RoPE layer in the model (named).
        ropelab.hf.CheckpointError: a file of it holds what it should not (the weights,
            config.json, or a tokenizer that does not load), named.
    """
    from transformers import AutoTokenizer

    from ..hf import load_pretrained

    config = read_config(folder)
    if not any(os.path.isfile(os.path.join(folder, name)) for name in _TOKENIZER_FILES):
        raise ValueError(
            f"{folder!r} holds no tokenizer ({', '.join(_TOKENIZER_FILES)}); ropelab extend reads text "
            "through the checkpoint's tokenizer (the lab writes one with --export)"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as err:  # transformers and tokenizers raise many kinds for a damaged file
        present = [name for name in _TOKENIZER_FILES if os.path.isfile(os.path.join(folder, name))]
        raise CheckpointError(f"{folder}: its tokenizer ({', '.join(present)}) does not load: "
                              f"{' '.join(str(err).split()) or type(err).__name__}") from None
    model = load_pretrained(folder, dtype=dtype, device=device)
    if "rope" not in model.config.layers:
        raise ValueError(f"{folder!r}: the model has no RoPE layers; there is nothing to extend")
    rope = model.config.rope
    if original_length is None:
        original_length = getattr(rope.scaling, "original_max_position", None) or config.get("max_position_embeddings")
        if not original_length:
            raise ValueError(f"{folder!r}: config.json gives no max_position_embeddings; pass --original-length")
    bos = _bos(folder, tokenizer, config, model.config.vocab_size)
    return Source(folder, config, model, tokenizer, bos, rope, int(original_length), _fingerprint(folder, config))
