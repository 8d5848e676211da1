"""transformers causal LMs -> :class:`ropelab.torch.Transformer` with the same logits."""

from __future__ import annotations

from .._optional import require
from ..config import RopeConfig
from .attention import attention_from_hf

__all__ = ["MODELS", "transformer_from_hf"]


#: transformers causal-LM classes :func:`transformer_from_hf` reads (the Llama layout:
#: pre-norm RMSNorm blocks, SwiGLU MLP ``gate_proj``/``up_proj``/``down_proj``); Llama 4
#: with dense feed-forward layers only (its iRoPE: RoPE and NoPE layers)
MODELS = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Phi3ForCausalLM", "Llama4ForCausalLM")


def _feed_forward(layer, index):
    """The gate, up and down weights of a decoder layer's SwiGLU MLP (``mlp``, Llama 4's
    ``feed_forward``; Phi-3 fuses gate and up in ``gate_up_proj``, gate first)."""
    if getattr(layer, "is_moe_layer", False):
        raise ValueError(
            f"layer {index} is a mixture-of-experts layer: ropelab's Transformer has dense MLPs "
            f"only (a Llama 4 config with moe_layers=[] converts)"
        )
    mlp = layer.mlp if hasattr(layer, "mlp") else layer.feed_forward
    if hasattr(mlp, "gate_up_proj"):
        gate, up = mlp.gate_up_proj.weight.chunk(2, dim=0)
        return gate, up, mlp.down_proj.weight
    return mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight


def transformer_from_hf(model):
    """A :class:`ropelab.torch.Transformer` equal to a transformers causal LM.

    Args:
        model: an instance of one of :data:`MODELS` (or a subclass), e.g. from
            ``AutoModelForCausalLM.from_pretrained``.

    Returns:
        A Transformer in eval mode on the model's device and dtype, holding copies of
        its weights (both models are in memory while it is built). Each layer is a
        "rope" or (Llama 4's NoPE layers) "nope" layer whose attention is
        :func:`attention_from_hf` of the HF layer's; the RoPE layers share one rotary
        table. Its logits equal the HF model's for the same ``input_ids`` and positions.
        One difference of defaults: given an ``attention_mask`` and no positions,
        ropelab counts positions along the mask (left padding starts at 0, as
        ``generate`` does), while the HF forward counts them from the first slot unless
        ``position_ids`` are passed.

    Raises:
        TypeError: the model's class is not one of :data:`MODELS`.
        ValueError: the checkpoint uses something the Transformer does not have (an
            activation other than SiLU, MLP biases, mixture-of-experts layers, MLPs of
            different widths).
    """
    torch = require("torch", feature="ropelab.hf")
    from ..torch import Transformer, TransformerConfig

    if not any(cls.__name__ in MODELS for cls in type(model).__mro__):
        raise TypeError(
            f"transformer_from_hf does not support {type(model).__module__}.{type(model).__qualname__}; "
            f"supported classes: {list(MODELS)}"
        )
    config = model.config
    act = getattr(config, "hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"hidden_act={act!r}: ropelab's SwiGLU MLP uses silu")
    if getattr(config, "mlp_bias", False):
        raise ValueError("mlp_bias=True: ropelab's MLP has no biases")
    layers = model.model.layers
    mlps = [_feed_forward(layer, i) for i, layer in enumerate(layers)]
    widths = sorted({gate.shape[0] for gate, _, _ in mlps})
    if len(widths) > 1:
        raise ValueError(f"MLP widths {widths} differ between layers: ropelab's Transformer has one")
    attns = [attention_from_hf(layer.self_attn) for layer in layers]
    rope_layers = [attn for attn in attns if attn.rope is not None]
    nope_layers = [attn for attn in attns if attn.rope is None]
    for attn in rope_layers[1:]:  # one schedule for all: one table, not one per layer
        attn.rope = rope_layers[0].rope
    first_rope = rope_layers[0] if rope_layers else None
    heads = config.num_attention_heads
    ours = Transformer(
        TransformerConfig(
            config.vocab_size,
            d_model=config.hidden_size,
            num_heads=heads,
            num_kv_heads=config.num_key_value_heads or heads,
            head_dim=attns[0].head_dim,
            layers=tuple("nope" if attn.rope is None else "rope" for attn in attns),
            rope=RopeConfig.from_hf(config),
            # no table depends on it (the rotary rows are made per call): the context the
            # checkpoint names, written back by save_pretrained
            max_positions=int(getattr(config, "max_position_embeddings", None) or 2048),
            norm_eps=float(config.rms_norm_eps),
            # what the model does, not what its config says: transformers keeps a
            # checkpoint's own lm_head.weight even under tie_word_embeddings=true
            tie_embeddings=model.lm_head.weight is model.model.embed_tokens.weight,
            mlp="swiglu",
            mlp_hidden=widths[0],
            # as the first converted layer of each kind has them (the config describes the model)
            chunk_size=first_rope.chunk_size if first_rope else None,
            qk_norm=bool(first_rope and first_rope.qk_norm),
            temperature_tuning=nope_layers[0].temperature_tuning if nope_layers else None,
        )
    )
    weight = model.model.embed_tokens.weight
    with torch.no_grad():
        for block, layer, attn, mlp in zip(ours.blocks, layers, attns, mlps, strict=True):
            block.attn = attn
            block.attn_norm.weight.copy_(layer.input_layernorm.weight)
            block.mlp_norm.weight.copy_(layer.post_attention_layernorm.weight)
            for dst, src in zip((block.mlp.gate, block.mlp.up, block.mlp.down), mlp, strict=True):
                dst.weight.copy_(src)
        ours.embed.weight.copy_(weight)
        ours.norm.weight.copy_(model.model.norm.weight)
        if not ours.config.tie_embeddings:
            ours.lm_head.weight.copy_(model.lm_head.weight)
    return ours.to(device=weight.device, dtype=weight.dtype).eval()
