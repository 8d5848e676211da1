"""Hugging Face transformers interop: attention modules and whole models in.

``attention_from_hf(module)`` reads a transformers attention module and its config
and returns a :class:`ropelab.torch.Attention` with the same weights and the same
positional behaviour (rotary schedule, layout, partial rotary, chunking, qk norm,
temperature tuning, sliding window). Supported: ``LlamaAttention``,
``MistralAttention``, ``Qwen2Attention``, ``Llama4TextAttention``, ``GPTJAttention``,
``GPTNeoXAttention``, ``Qwen2VLAttention`` (M-RoPE; pass its 3-axis position ids),
``Phi3Attention`` (LongRoPE) and their subclasses.

``transformer_from_hf(model)`` does the same for a whole Llama-family causal language
model (``LlamaForCausalLM``, ``MistralForCausalLM``, ``Qwen2ForCausalLM``,
``Phi3ForCausalLM`` and ``Llama4ForCausalLM`` with dense layers: iRoPE's RoPE and NoPE
layers): a
:class:`ropelab.torch.Transformer` with the same logits, on which the ropelab side can
then be changed (``model.set_rope(...)`` for a context-extension scheme).

``save_pretrained(model, folder)`` writes a ropelab Transformer as a checkpoint folder
(Llama, or Llama 4 text for iRoPE stacks) that ``AutoModelForCausalLM.from_pretrained``
opens with the same logits; ``load_pretrained(folder)`` reads a local checkpoint folder
back (checking its files); ``byte_tokenizer()`` is the lab's byte vocabulary as a
transformers tokenizer.

The converters require torch (``pip install 'ropelab[torch]'``) and do not import
transformers: a module is recognised by its class name. Loading and the tokenizer need
transformers (``pip install 'ropelab[hf]'``); checkpoints need safetensors.
"""

from __future__ import annotations

from .attention import SUPPORTED, attention_from_hf
from .checkpoint import CheckpointError, load_pretrained, save_pretrained
from .model import MODELS, transformer_from_hf
from .tokenizer import byte_tokenizer

__all__ = [
    "MODELS",
    "SUPPORTED",
    "CheckpointError",
    "attention_from_hf",
    "byte_tokenizer",
    "load_pretrained",
    "save_pretrained",
    "transformer_from_hf",
]
