"""ropelab.torch.Transformer: layer patterns, cached decoding, padding, presets, errors."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ropelab import RopeConfig, scaling  # noqa: E402
from ropelab.positional import sinusoidal  # noqa: E402
from ropelab.torch import (  # noqa: E402
    LAYER_KINDS,
    PATTERNS,
    Cache,
    RotaryEmbedding,
    Transformer,
    TransformerConfig,
    pattern,
    register_layer_kind,
)

V = 40


def _model(layers, seed=0, **kw):
    torch.manual_seed(seed)
    kw.setdefault("d_model", 32)
    kw.setdefault("num_heads", 4)
    return Transformer(TransformerConfig(V, layers=layers, **kw)).eval()


def _tokens(b=2, t=12, seed=0):
    return torch.randint(0, V, (b, t), generator=torch.Generator().manual_seed(seed))


MODELS = {
    "rope": dict(layers=pattern("rope", 2), num_kv_heads=2),
    "nope": dict(layers=pattern("nope", 2)),
    "irope": dict(
        layers=pattern("irope", 4), chunk_size=4, temperature_tuning=(0.5, 3.0), qk_norm=True
    ),
    "rope-learned": dict(layers=("rope",), absolute="learned", max_positions=32),
    "nope-sinusoidal": dict(layers=("nope",), absolute="sinusoidal", max_positions=4),
    # the other built-in kinds of ropelab.torch.kinds, each beside a rope layer
    "alibi": dict(layers=("alibi", "rope")),
    "t5": dict(layers=("t5", "nope")),
    "xpos": dict(layers=("xpos",)),
    "prope": dict(layers=("prope", "nope"), kind_options={"prope": {"p": 0.5}}),
    "shaw": dict(layers=("shaw", "rope"), kind_options={"shaw": {"clip": 3}}),
    "linear_attention": dict(layers=("linear_attention", "rope")),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_cached_decoding_equals_full_forward_with_left_padding(name):
    model = _model(**MODELS[name])
    tokens = _tokens(b=3, t=12)
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[0, :3] = 0
    mask[2, :7] = 0
    with torch.no_grad():
        full = model(tokens, attention_mask=mask)
        cache = model.new_cache(3, 16)
        steps = [model(tokens[:, :6], attention_mask=mask[:, :6], cache=cache)]
        for t in range(6, 12):  # then one token at a time
            steps.append(model(tokens[:, t : t + 1], attention_mask=mask[:, : t + 1], cache=cache))
    assert cache.length == 12
    rows = mask.bool()
    torch.testing.assert_close(torch.cat(steps, 1)[rows], full[rows], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["rope", "irope"])
def test_cache_without_mask_several_tokens_at_a_time(name):
    model = _model(**MODELS[name])
    tokens = _tokens(t=10)
    with torch.no_grad():
        full = model(tokens)
        cache = model.new_cache(2, 10)
        parts = [model(tokens[:, a:b], cache=cache) for a, b in ((0, 3), (3, 7), (7, 8), (8, 10))]
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["rope", "irope", "rope-learned"])
def test_left_padded_row_equals_the_row_alone(name):
    model = _model(**MODELS[name])
    tokens = _tokens(b=2, t=9)
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[0, :4] = 0
    with torch.no_grad():
        batch = model(tokens, attention_mask=mask)
        alone = model(tokens[:1, 4:])
    torch.testing.assert_close(batch[:1, 4:], alone, rtol=1e-5, atol=1e-5)


def test_irope_layers_get_llama4_options():
    model = _model(**MODELS["irope"])
    kinds = [b.kind for b in model.blocks]
    assert kinds == ["rope", "rope", "rope", "nope"]
    for block in model.blocks:
        attn = block.attn
        if block.kind == "rope":
            assert isinstance(attn.rope, RotaryEmbedding)
            assert (attn.chunk_size, attn.temperature_tuning, attn.qk_norm) == (4, None, True)
        else:
            assert attn.rope is None
            assert (attn.chunk_size, attn.temperature_tuning) == (None, (0.5, 3.0))


def test_patterns():
    assert pattern("irope", 6) == ("rope", "rope", "rope", "nope", "rope", "rope")
    assert pattern("nope", 2) == ("nope", "nope")
    # fewer layers than the unit's first NoPE layer: the last one is NoPE, never none
    assert pattern("irope", 1) == ("nope",)
    assert pattern("irope", 2) == ("rope", "nope")
    assert pattern("irope", 3) == ("rope", "rope", "nope")
    assert pattern("irope", 4) == ("rope", "rope", "rope", "nope")
    assert pattern("irope", 5) == ("rope", "rope", "rope", "nope", "rope")
    assert pattern("alternating", 1) == ("nope",)
    assert pattern("alternating", 3) == ("rope", "nope", "rope")
    assert pattern("rope", 3) == ("rope",) * 3
    assert PATTERNS["irope"] == ("rope", "rope", "rope", "nope")
    with pytest.raises(ValueError, match="known patterns"):
        pattern("llama9", 2)
    with pytest.raises(ValueError, match="num_layers"):
        pattern("rope", 0)


def test_default_rope_is_half_layout_theta_1e4():
    config = TransformerConfig(V, d_model=32, num_heads=4)
    assert config.rope == RopeConfig(8, theta=10000.0, layout="half")
    assert config.num_kv_heads == 4


def test_set_rope_equals_a_model_built_with_it():
    yarn = RopeConfig(8, layout="half", scaling=scaling.YaRN(4.0, 8))
    model = _model(("rope", "nope"))
    other = Transformer(
        TransformerConfig(V, d_model=32, num_heads=4, layers=("rope", "nope"), rope=yarn)
    ).eval()
    other.load_state_dict(model.state_dict())
    tokens = _tokens(t=20)
    with torch.no_grad():
        before = model(tokens)
        model.set_rope(yarn)
        after = model(tokens)
        torch.testing.assert_close(after, other(tokens))
    assert model.config.rope == yarn
    assert not torch.allclose(before, after)
    with pytest.raises(ValueError, match="head_dim"):
        model.set_rope(RopeConfig(16))


@pytest.mark.parametrize("scale", [1.0, 0.03])
def test_sinusoidal_absolute_positions_are_added(scale):
    model = _model(("nope",), absolute="sinusoidal", max_positions=4, absolute_scale=scale)
    seen = {}
    model.blocks[0].attn_norm.register_forward_hook(
        lambda m, args, out: seen.setdefault("x", args[0])
    )
    tokens = _tokens(b=1, t=10)  # past max_positions: the table grows
    with torch.no_grad():
        model(tokens)
        table = torch.from_numpy(sinusoidal(np.arange(10), 32)).float()
        expected = model.embed(tokens) + scale * table
    torch.testing.assert_close(seen["x"], expected)


def test_learned_positions_past_table_raise():
    model = _model(("rope",), absolute="learned", max_positions=8)
    with pytest.raises(ValueError, match="max_positions=8"):
        model(_tokens(t=9))


def test_tied_embeddings_and_gradients():
    model = _model(
        pattern("irope", 4), chunk_size=4, temperature_tuning=(0.5, 3.0), qk_norm=True
    ).train()
    assert model.lm_head.weight is model.embed.weight
    logits = model(_tokens())
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), _tokens(seed=1).flatten()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    untied = _model(("rope",), tie_embeddings=False, mlp="gelu")
    assert untied.lm_head.weight is not untied.embed.weight


def test_register_layer_kind_plugs_in():
    class Half(torch.nn.Module):  # a toy rotary-like module: scales q by 0.5
        def forward(self, q, k, positions):
            return q * 0.5, k

    @register_layer_kind("test_half")
    def half_layer(config, index):
        return {"rope": Half(), **config.kind_options.get("test_half", {})}

    try:
        model = _model(("test_half", "nope"), kind_options={"test_half": {"window": 2}})
        assert isinstance(model.blocks[0].attn.rope, Half)
        assert model.blocks[0].attn.window == 2
        assert model(_tokens()).shape == (2, 12, V)
        with pytest.raises(ValueError, match="already registered"):
            register_layer_kind("rope")(half_layer)
    finally:
        LAYER_KINDS.pop("test_half", None)


def test_config_errors():
    with pytest.raises(
        ValueError, match=r"unknown layer kind\(s\) \['ropee'\]; known kinds: .*'nope'"
    ):
        TransformerConfig(V, layers=("rope", "ropee"))
    with pytest.raises(ValueError, match="d_model=30 is not divisible by num_heads=4"):
        TransformerConfig(V, d_model=30)
    with pytest.raises(ValueError, match="num_heads=4 is not divisible by num_kv_heads=3"):
        TransformerConfig(V, num_kv_heads=3)
    with pytest.raises(ValueError, match="rope.head_dim=16"):
        TransformerConfig(V, d_model=32, num_heads=4, rope=RopeConfig(16))
    with pytest.raises(ValueError, match="absolute"):
        TransformerConfig(V, absolute="rotary")
    with pytest.raises(ValueError, match="kind_options names unknown layer kind 'xyz'"):
        TransformerConfig(V, kind_options={"xyz": {}})
    with pytest.raises(ValueError, match="mlp"):
        TransformerConfig(V, mlp="relu")
    with pytest.raises(ValueError, match="vocab_size"):
        TransformerConfig(0)
    for bad in (0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="absolute_scale must be a finite number > 0"):
            TransformerConfig(V, absolute="sinusoidal", absolute_scale=bad)
    with pytest.raises(TypeError, match="absolute_scale must be a number, got True"):
        TransformerConfig(V, absolute="sinusoidal", absolute_scale=True)
    with pytest.raises(ValueError, match="absolute_scale=0.5 scales the sinusoidal table, but absolute='learned'"):
        TransformerConfig(V, absolute="learned", absolute_scale=0.5)
    for name in ("head_dim", "mlp_hidden"):
        with pytest.raises(ValueError, match=f"{name} must be an integer >= 1, got 0"):
            TransformerConfig(V, **{name: 0})
        for bad in (2.5, True):  # a wrong type: TypeError
            with pytest.raises(TypeError, match=f"{name} must be an integer, got {bad!r}"):
                TransformerConfig(V, **{name: bad})
    with pytest.raises(ValueError, match="set head_dim"):
        TransformerConfig(V, d_model=30, num_heads=4)


def test_head_dim_and_mlp_hidden_set_outright():
    """Heads wider than d_model / num_heads and an MLP width of its own (checkpoints)."""
    cfg = TransformerConfig(V, d_model=30, num_heads=4, num_kv_heads=2, head_dim=12, mlp_hidden=50)
    model = Transformer(cfg)
    attn, mlp = model.blocks[0].attn, model.blocks[0].mlp
    assert cfg.rope.head_dim == 12 and attn.q_proj.out_features == 48 and attn.k_proj.out_features == 24
    assert mlp.gate.out_features == 50 and mlp.down.in_features == 50
    tokens = torch.randint(0, V, (2, 9))
    cache = model.new_cache(batch=2, capacity=9)
    with torch.no_grad():
        full = model(tokens)
        steps = torch.cat([model(tokens[:, :5], cache=cache)] + [model(tokens[:, t:t + 1], cache=cache) for t in range(5, 9)], 1)
    torch.testing.assert_close(steps, full, rtol=1e-5, atol=1e-5)


def test_forward_errors():
    model = _model(("rope",))
    with pytest.raises(ValueError, match=r"tokens must be shaped \(B, T\)"):
        model(torch.zeros(5, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        model(torch.zeros(1, 5))
    with pytest.raises(ValueError, match=r"attention_mask must be shaped \(B, S\) = \(2, 12\)"):
        model(_tokens(), attention_mask=torch.ones(2, 11))
    with pytest.raises(ValueError, match="positions must be shaped"):
        model(_tokens(), positions=torch.arange(11))
    with pytest.raises(ValueError, match="cache has 3 layers"):
        model(_tokens(), cache=Cache(3, 2, 4, 16, 8))
    cache = model.new_cache(2, 8)
    with pytest.raises(ValueError, match="capacity 8"):
        model(_tokens(), cache=cache)


def test_compiles_fullgraph():
    model = _model(**MODELS["irope"])
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    tokens = _tokens(t=9)
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, :2] = 0
    with torch.no_grad():
        torch.testing.assert_close(
            compiled(tokens, attention_mask=mask), model(tokens, attention_mask=mask)
        )
        torch.testing.assert_close(compiled(tokens), model(tokens))


def test_mrope_layers_take_three_axis_positions_through_the_model():
    """A Qwen2-VL-like stack: (3, B, T) positions reach every M-RoPE layer; decoding
    through the cache equals the full forward, and the axes change the answer."""
    cfg = TransformerConfig(V, d_model=32, num_heads=2, layers=("mrope", "mrope"))
    model = Transformer(cfg).eval()
    with torch.no_grad():  # weights large enough for positions to show in the logits
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    tokens = torch.randint(0, V, (2, 12))
    t = torch.arange(12)
    vl = torch.stack([t, t, t])
    vl[1, 4:8] = torch.tensor([4, 4, 5, 5])  # a 2x2 "image": height and width differ from time
    vl[2, 4:8] = torch.tensor([4, 5, 4, 5])
    vl = vl[:, None, :].expand(3, 2, 12)
    cache = model.new_cache(batch=2, capacity=12)
    with torch.no_grad():
        full = model(tokens, positions=vl)
        steps = [model(tokens[:, :6], positions=vl[..., :6], cache=cache)]
        steps += [model(tokens[:, i:i + 1], positions=vl[..., i:i + 1], cache=cache) for i in range(6, 12)]
        text_only = model(tokens, positions=t)
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-5, atol=1e-5)
    assert (full - text_only)[:, 5:].abs().max() > 1e-3  # tokens from the image on differ
    torch.testing.assert_close(full[:, :4], text_only[:, :4], rtol=1e-5, atol=1e-5)  # before it, not
