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

Requires torch (``pip install 'ropelab[torch]'``); transformers itself is not
imported: the module is recognised by its class name.
"""

from __future__ import annotations

from .attention import SUPPORTED, attention_from_hf
from .model import MODELS, transformer_from_hf

__all__ = ["MODELS", "SUPPORTED", "attention_from_hf", "transformer_from_hf"]
