"""Parity with Hugging Face transformers attention modules (random weights, float32).

Each HF module is called directly, as its model calls it: position embeddings from the
model's own rotary class and the additive mask from ``transformers.masking_utils``
(eager attention). Errors are measured relative to the output scale.
"""

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from transformers.masking_utils import (  # noqa: E402
    create_causal_mask,
    create_chunked_causal_mask,
    create_sliding_window_causal_mask,
)

from ropelab import RopeConfig  # noqa: E402
from ropelab.hf import attention_from_hf  # noqa: E402
from ropelab.hf.compat import attention_forward, causal_mask  # noqa: E402
from ropelab.torch import Attention, KVCache, positions_from_mask  # noqa: E402

TOL = 2e-5


def _eager(config):
    config._attn_implementation = "eager"
    return config


def _inputs(b=2, t=40, d=64, pad=(0, 7), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, d, generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    for row, n in enumerate(pad):
        mask[row, :n] = 0
    return x, mask, positions_from_mask(mask)


def _randomize(module, seed=1):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.3)
    return module.eval()


def _assert_close(ours, ref, mask):
    rows = mask.bool()  # padded query rows are garbage in both
    err = (ours[rows] - ref[rows]).abs().max() / ref[rows].abs().max()
    assert err <= TOL, f"max error {float(err):.3g} relative to the output scale"


def _mask(config, x, mask, pos, make=create_causal_mask):
    return causal_mask(make, config=config, inputs_embeds=x, attention_mask=mask, position_ids=pos)


LLAMA_SCALINGS = {
    "llama3": {
        "rope_type": "llama3",
        "rope_theta": 50000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16,
    },
    "yarn": {
        "rope_type": "yarn",
        "rope_theta": 10000.0,
        "factor": 4.0,
        "original_max_position_embeddings": 16,
    },
    "default": {"rope_type": "default", "rope_theta": 10000.0},
}


@pytest.mark.parametrize("name", sorted(LLAMA_SCALINGS))
@pytest.mark.parametrize("kv_heads", [2, 4])
def test_llama(name, kv_heads):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaAttention, LlamaRotaryEmbedding

    config = _eager(
        LlamaConfig(
            hidden_size=64,
            num_attention_heads=4,
            num_key_value_heads=kv_heads,
            max_position_embeddings=64,
            rope_parameters=dict(LLAMA_SCALINGS[name]),
        )
    )
    hf = _randomize(LlamaAttention(config, 0))
    x, mask, pos = _inputs()
    with torch.no_grad():
        ref, _ = hf(x, LlamaRotaryEmbedding(config)(x, pos), _mask(config, x, mask, pos))
        converted = attention_from_hf(hf)
        # the same weights by load_state_dict into an Attention built by hand
        loaded = Attention(64, 4, num_kv_heads=kv_heads, rope=RopeConfig.from_hf(config))
        loaded.load_state_dict(hf.state_dict())
        for ours in (converted, loaded):
            _assert_close(ours(x, attention_mask=mask), ref, mask)
            # an unpadded row with explicit positions and no mask (the is_causal path)
            _assert_close(ours(x[:1], pos[:1]), ref[:1], mask[:1])


def test_llama4_rope_layer_chunked_qk_norm():
    from transformers import Llama4TextConfig
    from transformers.models.llama4.modeling_llama4 import (
        Llama4TextAttention,
        Llama4TextRotaryEmbedding,
    )

    config = _eager(
        Llama4TextConfig(
            hidden_size=64,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            num_hidden_layers=2,
            no_rope_layers=[1, 0],
            attention_chunk_size=8,
            intermediate_size=32,
            intermediate_size_mlp=32,
            use_qk_norm=True,
            max_position_embeddings=64,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
        )
    )
    hf = _randomize(Llama4TextAttention(config, 0))
    assert hf.use_rope and hasattr(hf, "qk_norm")
    x, mask, pos = _inputs(t=30, pad=(0, 5))
    with torch.no_grad():
        hf_mask = _mask(config, x, mask, pos, create_chunked_causal_mask)
        ref, _ = hf(x, Llama4TextRotaryEmbedding(config)(x, pos), hf_mask)
        ours = attention_from_hf(hf)
        assert (ours.chunk_size, ours.qk_norm, ours.rope.config.layout) == (8, True, "interleaved")
        _assert_close(ours(x, attention_mask=mask), ref, mask)
        # each option matters at this size: dropping one moves the output
        ours.chunk_size = None
        assert (ours(x, attention_mask=mask) - ref)[mask.bool()].abs().max() > 1e-3
        ours.chunk_size, ours.qk_norm = 8, False
        assert (ours(x, attention_mask=mask) - ref)[mask.bool()].abs().max() > 1e-3


def test_llama4_nope_layer_temperature_tuning():
    from transformers import Llama4TextConfig
    from transformers.models.llama4.modeling_llama4 import Llama4TextAttention

    config = _eager(
        Llama4TextConfig(
            hidden_size=64,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            num_hidden_layers=2,
            no_rope_layers=[1, 0],
            attention_chunk_size=8,
            intermediate_size=32,
            intermediate_size_mlp=32,
            floor_scale=4,
            attn_scale=0.5,
            attn_temperature_tuning=True,
        )
    )
    hf = _randomize(Llama4TextAttention(config, 1))
    assert not hf.use_rope
    # transformers counts slots for the temperature, so compare without padding
    x, mask, pos = _inputs(t=30, pad=(0, 0))
    with torch.no_grad():
        ref, _ = hf(x, None, _mask(config, x, mask, pos))
        ours = attention_from_hf(hf)
        assert (
            ours.rope is None and ours.temperature_tuning == (0.5, 4.0) and ours.chunk_size is None
        )
        _assert_close(ours(x), ref, mask)
        # the temperature matters here: without it the outputs differ
        ours.temperature_tuning = None
        assert (ours(x) - ref).abs().max() > 1e-3


def test_gptj_interleaved_partial_rotary():
    from transformers import GPTJConfig
    from transformers.models.gptj.modeling_gptj import GPTJAttention

    config = _eager(GPTJConfig(n_embd=64, n_head=4, rotary_dim=8, n_positions=64))
    hf = _randomize(GPTJAttention(config, 0))
    x, mask, pos = _inputs()
    with torch.no_grad():
        ref = attention_forward(hf, x, attention_mask=_mask(config, x, mask, pos), position_ids=pos)
        ours = attention_from_hf(hf)
        assert (ours.rope.config.layout, ours.rope.config.rotary_dim, ours.head_dim) == (
            "interleaved",
            8,
            16,
        )
        _assert_close(ours(x, attention_mask=mask), ref, mask)


@pytest.mark.parametrize("bias", [True, False])
def test_gpt_neox_half_rotary_pct_fused_qkv(bias):
    from transformers import GPTNeoXConfig
    from transformers.models.gpt_neox.modeling_gpt_neox import (
        GPTNeoXAttention,
        GPTNeoXRotaryEmbedding,
    )

    config = _eager(
        GPTNeoXConfig(
            hidden_size=64,
            num_attention_heads=4,
            rotary_pct=0.25,
            attention_bias=bias,
            max_position_embeddings=64,
        )
    )
    hf = _randomize(GPTNeoXAttention(config, 0))
    x, mask, pos = _inputs()
    with torch.no_grad():
        ref, _ = hf(
            x,
            _mask(config, x, mask, pos),
            position_embeddings=GPTNeoXRotaryEmbedding(config)(x, pos),
        )
        ours = attention_from_hf(hf)
        assert (ours.rope.config.layout, ours.rope.config.rotary_dim) == ("half", 4)
        _assert_close(ours(x, attention_mask=mask), ref, mask)


def test_mistral_sliding_window():
    from transformers import MistralConfig
    from transformers.models.mistral.modeling_mistral import (
        MistralAttention,
        MistralRotaryEmbedding,
    )

    config = _eager(
        MistralConfig(
            hidden_size=64,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            sliding_window=6,
            max_position_embeddings=64,
        )
    )
    hf = _randomize(MistralAttention(config, 0))
    x, mask, pos = _inputs(t=20)
    with torch.no_grad():
        hf_mask = _mask(config, x, mask, pos, create_sliding_window_causal_mask)
        ref, _ = hf(x, MistralRotaryEmbedding(config)(x, pos), hf_mask)
        ours = attention_from_hf(hf)
        assert ours.window == 6
        _assert_close(ours(x, attention_mask=mask), ref, mask)


def _vl_positions(batch, text=(10, 10), grid=(2, 4, 5)):
    """Qwen2-VL position ids (3, B, T) of text, an image of grid (t, h, w), text: the image
    takes time t0 + i, height t0 + r, width t0 + c; text after it starts past the max."""
    t0, (gt, gh, gw) = text[0], grid
    head = torch.arange(t0).expand(3, t0)
    i, r, c = torch.meshgrid(torch.arange(gt), torch.arange(gh), torch.arange(gw), indexing="ij")
    image = torch.stack([i.reshape(-1), r.reshape(-1), c.reshape(-1)]) + t0
    start = int(image.max()) + 1
    tail = torch.arange(start, start + text[1]).expand(3, text[1])
    return torch.cat([head, image, tail], dim=1)[:, None, :].expand(3, batch, -1).contiguous()


def test_qwen2_vl_mrope_with_image_positions():
    from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLTextConfig
    from transformers.models.qwen2_vl.modeling_qwen2_vl import (
        Qwen2VLAttention,
        Qwen2VLRotaryEmbedding,
    )

    config = _eager(
        Qwen2VLTextConfig(
            hidden_size=64,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
            num_hidden_layers=1,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        )
    )
    hf = _randomize(Qwen2VLAttention(config, 0))
    vl = _vl_positions(2)  # 10 text tokens, a 2x4x5 image (40), 10 text tokens
    x, mask, pos = _inputs(t=vl.shape[-1])
    with torch.no_grad():
        ref, _ = hf(x, attention_mask=_mask(config, x, mask, pos),
                    position_embeddings=Qwen2VLRotaryEmbedding(config)(x, vl))
        ours = attention_from_hf(hf)
        assert ours.rope.mrope_section == (2, 3, 3)
        got = ours(x, vl, attention_mask=mask)
        _assert_close(got, ref, mask)
        # the image positions matter: text-only positions give another answer
        assert (ours(x, pos, attention_mask=mask) - ref)[mask.bool()].abs().max() > 100 * TOL * ref.abs().max()
        # cached decoding with 3-axis positions equals the full forward
        cache = KVCache(2, 2, 60, 16)
        steps = [ours(x[:, :45], vl[..., :45], cache=cache, attention_mask=mask[:, :45])]
        steps += [ours(x[:, t:t + 1], vl[..., t:t + 1], cache=cache, attention_mask=mask[:, :t + 1])
                  for t in range(45, 60)]
        _assert_close(torch.cat(steps, dim=1), ref, mask)


def test_three_axis_positions_only_where_they_mean_something():
    from ropelab.torch import MRoPE

    cfg = RopeConfig(16, layout="half")
    vl = _vl_positions(2, text=(3, 3), grid=(1, 2, 2))  # (3, 2, 10)
    x = torch.randn(2, 10, 64)
    with pytest.raises(ValueError, match=r"positions must be shaped \(T,\) = \(10,\) or \(B, T\) = \(2, 10\), got \(3, 2, 10\)"):
        Attention(64, 4, rope=cfg)(x, vl)  # plain RoPE has one axis
    with pytest.raises(ValueError, match=r"or \(3, B, T\) for this layer's rotary module, got \(3, 2, 9\)"):
        Attention(64, 4, rope=MRoPE(cfg))(x, vl[..., :9])
    with pytest.raises(ValueError, match=r"3-axis positions \(3, 2, 10\) \(M-RoPE\) go to the rotary module only; window=4"):
        Attention(64, 4, rope=MRoPE(cfg), window=4)(x, vl)


def test_qwen2_biases_on_qkv_only():
    from transformers import Qwen2Config
    from transformers.models.qwen2.modeling_qwen2 import Qwen2Attention, Qwen2RotaryEmbedding

    config = _eager(
        Qwen2Config(
            hidden_size=64,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            num_hidden_layers=1,
        )
    )
    hf = _randomize(Qwen2Attention(config, 0))
    assert hf.q_proj.bias is not None and hf.o_proj.bias is None
    x, mask, pos = _inputs(t=20)
    with torch.no_grad():
        ref, _ = hf(x, Qwen2RotaryEmbedding(config)(x, pos), _mask(config, x, mask, pos))
        ours = attention_from_hf(hf)
        assert ours.o_proj.bias is None and ours.q_proj.bias is not None
        _assert_close(ours(x, attention_mask=mask), ref, mask)


def test_unsupported_module_raises_type_error():
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertSelfAttention

    with pytest.raises(TypeError, match="BertSelfAttention"):
        attention_from_hf(BertSelfAttention(BertConfig(hidden_size=64, num_attention_heads=4)))
    with pytest.raises(TypeError, match="Linear"):
        attention_from_hf(torch.nn.Linear(2, 2))
