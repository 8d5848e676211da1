"""PyTorch front end: rotary module, attention, KV cache and a pattern-built transformer.

Importing this package imports torch (``pip install 'ropelab[torch]'``).
"""

from .attention import Attention, eager_attention
from .cache import Cache, KVCache, positions_from_mask
from .kinds import LAYER_KINDS, register_layer_kind
from .linear_attention import (
    LinearAttention,
    LinearAttentionState,
    linear_attention,
    linear_attention_step,
)
from .positional import ALiBiBias, AxialRoPE, LearnedAbsolute, MRoPE, T5Bias, XPos
from .rotary import RotaryEmbedding
from .shaw import ShawAttention
from .transformer import PATTERNS, Transformer, TransformerConfig, pattern

__all__ = [
    "LAYER_KINDS",
    "ALiBiBias",
    "AxialRoPE",
    "LearnedAbsolute",
    "LinearAttention",
    "LinearAttentionState",
    "MRoPE",
    "ShawAttention",
    "T5Bias",
    "XPos",
    "linear_attention",
    "linear_attention_step",
    "PATTERNS",
    "Attention",
    "Cache",
    "KVCache",
    "RotaryEmbedding",
    "Transformer",
    "TransformerConfig",
    "eager_attention",
    "pattern",
    "positions_from_mask",
    "register_layer_kind",
]
