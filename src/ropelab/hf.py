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

from ._optional import require
from .config import RopeConfig

__all__ = ["MODELS", "SUPPORTED", "attention_from_hf", "transformer_from_hf"]


def _copy_linear(dst, weight, bias=None):
    torch = require("torch", feature="ropelab.hf")
    with torch.no_grad():
        dst.weight.copy_(weight)
        if bias is not None:
            dst.bias.copy_(bias)


def _linear_like(src):
    """A fresh nn.Linear with src's shape and bias presence (for o_proj without bias)."""
    torch = require("torch", feature="ropelab.hf")
    return torch.nn.Linear(src.in_features, src.out_features, bias=src.bias is not None)


def _linear_of(weight, bias=None):
    """A fresh nn.Linear holding copies of ``weight`` (out, in) and ``bias`` (a block of a
    fused projection)."""
    torch = require("torch", feature="ropelab.hf")
    lin = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    _copy_linear(lin, weight, bias)
    return lin


def _new_attention(config, *, heads, kv_heads, head_dim, rope, bias, **options):
    from .torch import Attention

    return Attention(
        config.hidden_size,
        heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        rope=rope,
        bias=bias,
        **options,
    )


def _finish(attn, module, q, k, v, o):
    """Copy q/k/v/o projections (nn.Linear) into attn; o may lack a bias (Qwen2)."""
    for name, src in (("q_proj", q), ("k_proj", k), ("v_proj", v)):
        _copy_linear(getattr(attn, name), src.weight, src.bias)
    if (o.bias is None) != (attn.o_proj.bias is None):
        attn.o_proj = _linear_like(o)
    _copy_linear(attn.o_proj, o.weight, o.bias)
    return attn.to(device=o.weight.device, dtype=o.weight.dtype)


def _llama_like(module):
    """LlamaAttention, MistralAttention, Qwen2Attention: half layout, GQA, optional window."""
    config = module.config
    heads = config.num_attention_heads
    kv = config.num_key_value_heads or heads
    window = getattr(module, "sliding_window", None)  # Qwen2 sets it per layer type
    if window is None and type(module).__name__.startswith("Mistral"):
        window = getattr(config, "sliding_window", None)
    attn = _new_attention(
        config,
        heads=heads,
        kv_heads=kv,
        head_dim=module.head_dim,
        rope=RopeConfig.from_hf(config),
        bias=module.q_proj.bias is not None,
        window=window,
    )
    return _finish(attn, module, module.q_proj, module.k_proj, module.v_proj, module.o_proj)


def _llama4(module):
    """Llama4TextAttention: interleaved RoPE with chunking and qk norm, or NoPE with
    temperature tuning, per layer (``config.no_rope_layers``)."""
    config = module.config
    use_rope = bool(module.use_rope)
    chunk = None
    if use_rope:
        layer_types = getattr(config, "layer_types", None)
        chunked = layer_types is None or layer_types[module.layer_idx] == "chunked_attention"
        chunk = getattr(config, "attention_chunk_size", None) if chunked else None
    qk_norm = hasattr(module, "qk_norm")
    tuning = None
    if getattr(config, "attn_temperature_tuning", False) and not use_rope:
        tuning = (float(config.attn_scale), float(config.floor_scale))
    attn = _new_attention(
        config,
        heads=config.num_attention_heads,
        kv_heads=config.num_key_value_heads,
        head_dim=module.head_dim,
        rope=RopeConfig.from_hf(config) if use_rope else None,
        bias=module.q_proj.bias is not None,
        chunk_size=chunk,
        qk_norm=qk_norm,
        qk_norm_eps=module.qk_norm.eps if qk_norm else 1e-6,
        temperature_tuning=tuning,
    )
    return _finish(attn, module, module.q_proj, module.k_proj, module.v_proj, module.o_proj)


def _gptj(module):
    """GPTJAttention: interleaved partial rotary (``rotary_dim``), out_proj, no biases."""
    config = module.config
    attn = _new_attention(
        config,
        heads=module.num_attention_heads,
        kv_heads=module.num_attention_heads,
        head_dim=module.head_dim,
        rope=RopeConfig.from_hf(config),
        bias=module.q_proj.bias is not None,
    )
    return _finish(attn, module, module.q_proj, module.k_proj, module.v_proj, module.out_proj)


def _gpt_neox(module):
    """GPTNeoXAttention: half-layout partial rotary (``rotary_pct``), fused qkv, dense.

    The fused projection's output is laid out per head as ``[q_h | k_h | v_h]``
    (``view(B, T, H, 3 * D)`` then ``chunk(3)``), so rows are split head by head.
    """
    config = module.config
    heads = config.num_attention_heads
    dim = module.head_size
    fused = module.query_key_value
    has_bias = fused.bias is not None
    attn = _new_attention(
        config,
        heads=heads,
        kv_heads=heads,
        head_dim=dim,
        rope=RopeConfig.from_hf(config),
        bias=has_bias,
    )
    w = fused.weight.detach().view(heads, 3, dim, -1)  # (H, q/k/v, D, d_model)
    b = fused.bias.detach().view(heads, 3, dim) if has_bias else None
    q, k, v = (_linear_of(w[:, i].reshape(heads * dim, -1), None if b is None else b[:, i].reshape(-1))
               for i in range(3))
    return _finish(attn, module, q, k, v, module.dense)


def _phi3(module):
    """Phi3Attention: fused ``qkv_proj`` (q rows, then k, then v), half layout with partial
    rotary, LongRoPE in the Phi-3 long-context checkpoints, optional sliding window."""
    config = module.config
    heads = config.num_attention_heads
    kv = config.num_key_value_heads or heads
    dim = module.head_dim
    attn = _new_attention(
        config,
        heads=heads,
        kv_heads=kv,
        head_dim=dim,
        rope=RopeConfig.from_hf(config),
        bias=False,
        window=getattr(config, "sliding_window", None),
    )
    q, k, v = (_linear_of(rows) for rows in module.qkv_proj.weight.detach().split([heads * dim, kv * dim, kv * dim]))
    return _finish(attn, module, q, k, v, module.o_proj)


def _qwen2_vl(module):
    """Qwen2VLAttention (Qwen2-VL's text decoder): M-RoPE over (time, height, width)
    position ids, half layout, q/k/v bias, optional sliding window."""
    from .torch import MRoPE

    config = module.config
    # transformers' default when the config names no sections (Qwen2-VL's 128-wide heads)
    section = config.rope_parameters.get("mrope_section", [16, 24, 24])
    rope = MRoPE(RopeConfig.from_hf(config), tuple(section), max_positions=config.max_position_embeddings)
    attn = _new_attention(
        config,
        heads=config.num_attention_heads,
        kv_heads=config.num_key_value_heads or config.num_attention_heads,
        head_dim=module.head_dim,
        rope=rope,
        bias=module.q_proj.bias is not None,
        window=getattr(module, "sliding_window", None),
    )
    return _finish(attn, module, module.q_proj, module.k_proj, module.v_proj, module.o_proj)


#: transformers class name -> converter
SUPPORTED = {
    "LlamaAttention": _llama_like,
    "MistralAttention": _llama_like,
    "Qwen2Attention": _llama_like,
    "Llama4TextAttention": _llama4,
    "GPTJAttention": _gptj,
    "GPTNeoXAttention": _gpt_neox,
    "Qwen2VLAttention": _qwen2_vl,
    "Phi3Attention": _phi3,
}


def attention_from_hf(module):
    """A :class:`ropelab.torch.Attention` equal to a transformers attention module.

    Args:
        module: an instance of one of :data:`SUPPORTED` (or a subclass, such as
            ``GPTJFlashAttention2``), with its ``config`` attribute.

    Returns:
        An Attention on the module's device and dtype, holding copies of its weights.
        Call it as ``attn(x, positions, cache, attention_mask)`` with HF-style position
        ids and 1/0 padding mask.

    Raises:
        TypeError: the module's class (and none of its bases) is supported.
    """
    for cls in type(module).__mro__:
        convert = SUPPORTED.get(cls.__name__)
        if convert is not None:
            if getattr(module, "config", None) is None:
                raise TypeError(f"{type(module).__name__} has no config attribute to read")
            return convert(module)
    raise TypeError(
        f"attention_from_hf does not support {type(module).__module__}.{type(module).__qualname__}; "
        f"supported classes: {sorted(SUPPORTED)}"
    )


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
    from .torch import Transformer, TransformerConfig

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
            max_positions=first_rope.rope.max_positions if first_rope else 2048,
            norm_eps=float(config.rms_norm_eps),
            tie_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
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
