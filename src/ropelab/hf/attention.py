"""transformers attention modules -> :class:`ropelab.torch.Attention` (weights and
positional behaviour); one converter per class in :data:`SUPPORTED`."""

from __future__ import annotations

from .._optional import require
from ..config import RopeConfig
from .compat import rope_parameters

__all__ = ["SUPPORTED", "attention_from_hf"]


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
    from ..torch import Attention

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
    from ..torch import MRoPE

    config = module.config
    # transformers' default when the config names no sections (Qwen2-VL's 128-wide heads)
    section = rope_parameters(config).get("mrope_section", [16, 24, 24])
    rope = MRoPE(RopeConfig.from_hf(config), tuple(section))
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
