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


@pytest.mark.parametrize("name", sorted(MODELS))
def test_decoding_without_a_mask_after_a_padded_prompt_equals_the_full_forward(name):
    """The cache records the prompt's padding: later calls without a mask keep it
    hidden and continue each row's positions, as the mask extended by ones would."""
    model = _model(**MODELS[name])
    tokens = _tokens(b=3, t=12)
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[0, :3] = 0
    mask[2, :6] = 0  # a row with no token in the prompt starts at position 0 after it
    with torch.no_grad():
        full = model(tokens, attention_mask=mask)
        cache = model.new_cache(3, 16)
        steps = [model(tokens[:, :6], attention_mask=mask[:, :6], cache=cache)]
        for t in range(6, 9):  # one token at a time, then several
            steps.append(model(tokens[:, t : t + 1], cache=cache))
        steps.append(model(tokens[:, 9:12], cache=cache))
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
    with pytest.raises(ValueError, match="pattern name must be one of .*'irope'.*; got 'llama9'"):
        pattern("llama9", 2)
    with pytest.raises(TypeError, match="num_layers must be an integer, got 2.0"):
        pattern("rope", 2.0)
    with pytest.raises(ValueError, match="num_layers must be an integer >= 1, got 0"):
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


@pytest.mark.parametrize(
    "layers, options",
    [
        (("rope", "xpos"), {}),
        (("mrope", "linear_attention"), {}),
        (("prope", "axial"), {"axial": {"cols": 4}}),
    ],
)
def test_set_rope_updates_every_layer_built_from_config_rope(layers, options):
    model = _model(layers, kind_options=options)
    tokens = _tokens(t=20)
    with torch.no_grad():
        before = model(tokens)
        model.set_rope(RopeConfig(8, layout="half", scaling=scaling.Linear(4.0)))
        after = model(tokens)
        rebuilt = Transformer(model.config).eval()
        rebuilt.load_state_dict(model.state_dict())
        torch.testing.assert_close(rebuilt(tokens), after, rtol=0, atol=0)
    assert not torch.allclose(before, after)


def test_set_rope_refuses_a_kind_whose_module_has_weights_and_changes_nothing(monkeypatch):
    class Learned(torch.nn.Module):
        def __init__(self, config):
            super().__init__()
            self.config, self.rotary = config, RotaryEmbedding(config)
            self.gain = torch.nn.Parameter(torch.ones(()))

        def forward(self, q, k, positions):
            q, k = self.rotary(q, k, positions)
            return q * self.gain, k

    monkeypatch.setitem(LAYER_KINDS, "learned-rope", lambda config, index: {"rope": Learned(config.rope)})
    model = _model(("rope", "learned-rope"))
    old = model.config
    with pytest.raises(ValueError, match="set_rope cannot update layer 1 \\('learned-rope'\\).*Learned"):
        model.set_rope(RopeConfig(8, layout="half", scaling=scaling.Linear(4.0)))
    assert model.config is old and model.blocks[0].attn.rope.config == old.rope


@pytest.mark.parametrize("scale", [1.0, 0.03])
def test_sinusoidal_absolute_positions_are_added(scale):
    model = _model(("nope",), absolute="sinusoidal", max_positions=4, absolute_scale=scale)
    seen = {}
    model.blocks[0].attn_norm.register_forward_hook(
        lambda m, args, out: seen.setdefault("x", args[0])
    )
    tokens = _tokens(b=1, t=10)  # past max_positions: sinusoids have no table
    with torch.no_grad():
        model(tokens)
        table = torch.from_numpy(sinusoidal(np.arange(10), 32)).float()
        expected = model.embed(tokens) + scale * table
    torch.testing.assert_close(seen["x"], expected)


def test_sinusoids_are_exact_far_away_and_keep_nothing():
    """Sinusoidal positions are made per call: at 10**9 and 2**31 - 1 equal to the float64
    table within float32 rounding, and the model keeps no position-sized state."""
    model = _model(("nope",), absolute="sinusoidal", max_positions=4)
    assert not [name for name, _ in model.named_buffers()]
    far = np.array([[0, 5, 10**9, 2**31 - 1]])
    with torch.no_grad():
        got = model._absolute(torch.from_numpy(far), 4, 0)
    want = sinusoidal(far, 32)
    np.testing.assert_allclose(got.double().numpy(), want, atol=3e-7, rtol=0)


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
        model(_tokens(), attention_mask=torch.ones(2, 11, dtype=torch.long))
    with pytest.raises(ValueError, match="positions must be shaped"):
        model(_tokens(), positions=torch.arange(11))
    additive = torch.zeros(2, 12)
    additive[0, :3] = -1e9
    with pytest.raises(TypeError, match="1 for tokens and 0 for padding.*additive masks"):
        model(_tokens(), attention_mask=additive)
    twos = torch.ones(2, 12, dtype=torch.long)
    twos[1, 4] = 2
    with pytest.raises(ValueError, match="got 2 at row 1, slot 4"):
        model(_tokens(), attention_mask=twos)
    with pytest.raises(ValueError, match="got 2 at row 1, slot 4"):  # with positions too
        model(_tokens(), positions=torch.arange(12), attention_mask=twos)
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


# --- generate and stream ---------------------------------------------------------------


def _peaked(model, scale=0.3):
    """Weights large enough that the logits spread well apart (no near-ties to flip an argmax)."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, scale, generator=torch.Generator().manual_seed(7))
    return model


def _greedy_by_full_forward(model, tokens, mask, steps):
    """The reference: each step runs the whole sequence again (no cache) and takes the argmax."""
    logits = []
    with torch.no_grad():
        for _ in range(steps):
            last = model(tokens, attention_mask=mask)[:, -1]
            logits.append(last)
            tokens = torch.cat([tokens, last.argmax(-1, keepdim=True)], 1)
            mask = None if mask is None else torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    return tokens, logits


def _left_padded(b=3, t=7):
    mask = torch.ones(b, t, dtype=torch.long)
    mask[1, :2] = 0
    if b > 2:
        mask[2, :5] = 0
    return _tokens(b=b, t=t), mask


LONGROPE = RopeConfig(8, layout="half", scaling=scaling.LongRoPE(
    [1.0, 1.2, 1.5, 2.0], [2.0, 3.0, 5.0, 8.0], original_max_position=10))


@pytest.mark.parametrize("name", ["rope", "irope", "alibi", "shaw", "rope-learned", "longrope"])
def test_generate_equals_greedy_by_full_forwards(name):
    """The cached loop gives the tokens and, step by step, the logits of running the whole
    sequence each time; with LongRoPE also across the switch to the long factors at 10
    tokens (7-token prompts, 8 new), where generate runs the sequence again."""
    options = dict(layers=("rope", "rope"), rope=LONGROPE) if name == "longrope" else MODELS[name]
    model = _peaked(_model(**options))
    tokens, mask = _left_padded()
    want, want_logits = _greedy_by_full_forward(model, tokens, mask, 8)
    seen = []
    model.lm_head.register_forward_hook(lambda m, args, out: seen.append(out[:, -1].clone()))
    got = model.generate(tokens, 8, attention_mask=mask)
    assert got.dtype == torch.long and got.shape == (3, 7 + 8)
    assert torch.equal(got, want)
    assert torch.equal(got[:, :7], tokens)  # the prompt comes back as it was, padding included
    for mine, ref in zip(seen, want_logits, strict=True):
        torch.testing.assert_close(mine, ref, rtol=1e-5, atol=1e-5)


def test_generate_without_cache_rebuild_would_differ_at_the_longrope_switch():
    """What the rebuild is for: a plain cached loop keeps keys rotated by the short factors."""
    model = _peaked(_model(("rope", "rope"), rope=LONGROPE))
    tokens = _tokens(b=1, t=7)
    _, want_logits = _greedy_by_full_forward(model, tokens, None, 6)
    got = model.generate(tokens, 6)
    cache = model.new_cache(1, 13)
    with torch.no_grad():
        logits = [model(tokens, cache=cache)[:, -1]]
        for t in got[0, 7:-1]:
            logits.append(model(t.view(1, 1), cache=cache)[:, -1])
    # up to 10 tokens the short factors hold for all; at 11 the full forward moves every
    # key to the long factors, the plain cached loop only the new one
    torch.testing.assert_close(logits[3], want_logits[3], rtol=1e-5, atol=1e-5)  # 10 tokens
    assert (logits[4] - want_logits[4]).abs().max() > 1e-3  # 11 tokens


def test_generate_without_mask_equals_a_mask_of_ones():
    model = _model(**MODELS["irope"])
    tokens = _tokens(b=2, t=5)
    assert torch.equal(
        model.generate(tokens, 6), model.generate(tokens, 6, attention_mask=torch.ones_like(tokens))
    )


def test_left_padded_row_generates_what_it_generates_alone():
    model = _peaked(_model(**MODELS["rope"]))
    tokens, mask = _left_padded()
    batch = model.generate(tokens, 6, attention_mask=mask)
    alone = model.generate(tokens[2:, 5:], 6)
    assert torch.equal(batch[2, 7:], alone[0, 2:])


def test_stream_yields_each_step_and_equals_generate():
    model = _model(**MODELS["rope"])
    tokens, mask = _left_padded()
    steps = list(model.stream(tokens, 5, attention_mask=mask))
    assert len(steps) == 5 and all(s.shape == (3, 1) and s.dtype == torch.long for s in steps)
    assert torch.equal(torch.cat([tokens, *steps], 1), model.generate(tokens, 5, attention_mask=mask))
    # a sampled stream with the same generator state gives generate's sample
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    sampled = model.stream(tokens, 5, attention_mask=mask, temperature=1.5, generator=g())
    assert torch.equal(torch.cat([tokens, *sampled], 1),
                       model.generate(tokens, 5, attention_mask=mask, temperature=1.5, generator=g()))


def test_stream_stopped_early_is_the_start_of_a_longer_one():
    model = _model(**MODELS["rope"])
    tokens = _tokens(b=2, t=4)
    calls = []
    model.embed.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[1]))
    stream = model.stream(tokens, 50)
    first = [next(stream) for _ in range(3)]
    assert calls == [4, 1, 1]  # the prompt, then one token per further step: nothing ahead
    stream.close()
    assert torch.equal(torch.cat(first, 1), model.generate(tokens, 3)[:, 4:])


def test_stops_at_max_new_tokens():
    model = _model(**MODELS["rope"])
    for n in (1, 2, 9):
        assert model.generate(_tokens(b=2, t=3), n).shape == (2, 3 + n)
    # the cache holds prompt + n - 1: the last token is returned, never fed back
    calls = []
    model.embed.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[1]))
    model.generate(_tokens(b=2, t=3), 4)
    assert calls == [3, 1, 1, 1]


def test_top_k_1_equals_greedy_at_any_temperature():
    model = _model(**MODELS["irope"])
    tokens, mask = _left_padded()
    greedy = model.generate(tokens, 8, attention_mask=mask)
    for temperature in (0.5, 1.0, 30.0):
        got = model.generate(tokens, 8, attention_mask=mask, temperature=temperature, top_k=1,
                             generator=torch.Generator().manual_seed(0))
        assert torch.equal(got, greedy)


def test_sampling_is_reproducible_with_a_generator():
    model = _model(**MODELS["rope"])
    tokens = _tokens(b=4, t=5)

    def sample(seed):
        g = torch.Generator().manual_seed(seed)
        return model.generate(tokens, 12, temperature=1.0, top_k=20, generator=g)

    assert torch.equal(sample(3), sample(3))
    assert not torch.equal(sample(3), sample(4))
    assert not torch.equal(sample(3), model.generate(tokens, 12))


def test_samples_follow_softmax_of_logits_over_temperature():
    """One step for 20000 copies of a prompt: the token frequencies are the probabilities
    softmax(logits / temperature), restricted to the top k and renormalised."""
    model = _model(**MODELS["rope"])
    prompt = _tokens(b=1, t=4)
    with torch.no_grad():
        logits = model(prompt)[0, -1].double()
    n = 20000
    tokens = prompt.expand(n, 4)
    spread = float(logits.std())  # small weights: temperatures on the logits' own scale
    for temperature, top_k in ((spread, None), (0.5 * spread, 5)):
        g = torch.Generator().manual_seed(0)
        got = model.generate(tokens, 1, temperature=temperature, top_k=top_k, generator=g)[:, -1]
        freq = torch.bincount(got, minlength=V).double() / n
        scores = logits / temperature
        if top_k is not None:
            scores[scores < scores.topk(top_k).values[-1]] = -float("inf")
        p = torch.softmax(scores, -1)
        assert p.max() < 0.9 and (p > 0.02).sum() >= 3  # a distribution worth testing
        assert (freq - p).abs().max() < 4 * (p * (1 - p) / n).sqrt().max() + 1e-12
        if top_k is not None:
            assert set(got.unique().tolist()) <= set(logits.topk(top_k).indices.tolist())


def _ended(free, prompt_length, eos, pad):
    """What an end token makes of free-running greedy tokens: each row as it was up to
    and with its first end token, pads after it; cut at the step the last row ended
    when every row ends."""
    eos = {eos} if isinstance(eos, int) else set(eos)
    rows, ends = [], []
    for row in free[:, prompt_length:].tolist():
        end = next((i + 1 for i, t in enumerate(row) if t in eos), None)
        ends.append(end)
        rows.append(row if end is None else row[:end] + [pad] * (len(row) - end))
    new = torch.tensor(rows)
    if all(end is not None for end in ends):
        new = new[:, : max(ends)]
    return torch.cat([free[:, :prompt_length], new], 1)


def test_end_token_finishes_rows_and_stops_when_all_are_done():
    model = _peaked(_model(**MODELS["rope"]))
    tokens, mask = _left_padded()
    free = model.generate(tokens, 10, attention_mask=mask)
    first = free[:, 7].tolist()  # each row's first new token
    cases = [
        (int(free[0, 8]), 0),  # a token only row 0 makes: the others run to the end
        (int(free[0, 9]), 0),  # ends row 0 (and any row that makes it too)
        (first, 1),  # every row ends at once: one step
        (free[:, 7 + 3].tolist(), 2),  # every row by its fourth new token
    ]
    for eos, pad in cases:
        want = _ended(free, 7, eos, pad)
        got = model.generate(tokens, 10, attention_mask=mask, eos_token_id=eos, pad_token_id=pad)
        assert torch.equal(got, want), (eos, pad)
        streamed = list(model.stream(tokens, 10, attention_mask=mask, eos_token_id=eos, pad_token_id=pad))
        assert len(streamed) == want.shape[1] - 7  # the stream stops at the same step
    assert model.generate(tokens, 10, attention_mask=mask, eos_token_id=first).shape == (3, 8)
    # pad_token_id defaults to the (first) end token
    eos = int(free[0, 9])
    assert torch.equal(model.generate(tokens, 10, attention_mask=mask, eos_token_id=eos),
                       _ended(free, 7, eos, eos))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(tokens=[[1, 2]]), TypeError, "tokens must be a torch tensor shaped \\(B, T\\), got list"),
        (dict(tokens=torch.zeros(2, 3)), TypeError, "tokens must be an integer tensor, got dtype torch.float32"),
        (dict(tokens=torch.zeros(3, dtype=torch.long)), ValueError, "tokens must be shaped \\(B, T\\).*got \\(3,\\)"),
        (dict(tokens=torch.zeros(2, 0, dtype=torch.long)), ValueError, "T >= 1, got \\(2, 0\\)"),
        (dict(tokens=torch.full((1, 3), V)), ValueError, f"tokens must be ids in \\[0, {V}\\).*got {V}"),
        (dict(max_new_tokens=0), ValueError, "max_new_tokens must be an integer >= 1, got 0"),
        (dict(max_new_tokens=2.0), TypeError, "max_new_tokens must be an integer, got 2.0 \\(float\\)"),
        (dict(max_new_tokens=True), TypeError, "max_new_tokens must be an integer, got True \\(bool\\)"),
        (dict(attention_mask=[[1, 1, 1]]), TypeError, "attention_mask must be a torch tensor, got list"),
        (dict(attention_mask=torch.ones(2, 3)), TypeError, "attention_mask must be a bool or integer tensor"),
        (dict(attention_mask=torch.ones(2, 4, dtype=torch.long)), ValueError,
         "attention_mask must be shaped \\(B, S\\) = \\(2, 3\\) \\(like tokens\\), got \\(2, 4\\)"),
        (dict(attention_mask=torch.tensor([[1, 1, 1], [0, 2, 1]])), ValueError, "1 for tokens and 0 for padding"),
        (dict(attention_mask=torch.tensor([[1, 1, 1], [1, 1, 0]])), ValueError,
         "attention_mask row 1 has padding after a token; generate needs left padding"),
        (dict(attention_mask=torch.tensor([[1, 1, 1], [0, 0, 0]])), ValueError, "row 1 is all padding"),
        (dict(temperature=-0.5), ValueError, "temperature \\(0: greedy\\) must be a finite number >= 0, got -0.5"),
        (dict(temperature=float("nan")), ValueError, "temperature \\(0: greedy\\) must be a finite number >= 0, got nan"),
        (dict(temperature="1"), TypeError, "temperature \\(0: greedy\\) must be a number, got '1' \\(str\\)"),
        (dict(temperature=1.0, top_k=0), ValueError, f"top_k \\(at most vocab_size\\) must be an integer >= 1 and <= {V}, got 0"),
        (dict(temperature=1.0, top_k=V + 1), ValueError, f"top_k \\(at most vocab_size\\) must be an integer >= 1 and <= {V}, got {V + 1}"),
        (dict(temperature=1.0, top_k=2.5), TypeError, "top_k \\(at most vocab_size\\) must be an integer, got 2.5 \\(float\\)"),
        (dict(top_k=5), ValueError, "top_k=5 has no effect with temperature=0 \\(greedy decoding\\)"),
        (dict(generator=torch.Generator()), ValueError, "generator has no effect with temperature=0"),
        (dict(temperature=1.0, generator=0), TypeError, "generator must be a torch.Generator or None, got int"),
        (dict(eos_token_id=V), ValueError, f"eos_token_id \\(a token id below vocab_size\\) must be an integer >= 0 and <= {V - 1}, got {V}"),
        (dict(eos_token_id=[]), ValueError, "eos_token_id must be an id or a non-empty list"),
        (dict(eos_token_id="2"), TypeError, "eos_token_id \\(a token id below vocab_size\\) must be an integer, got '2' \\(str\\)"),
        (dict(eos_token_id=2, pad_token_id=-1), ValueError, "pad_token_id \\(a token id below vocab_size\\) must be an integer >= 0 and <= 39, got -1"),
        (dict(pad_token_id=0), ValueError, "pad_token_id=0 fills rows finished by an end token, but eos_token_id is None"),
    ],
)
def test_generate_argument_errors(kwargs, error, match):
    model = _model(**MODELS["rope"])
    kwargs = dict(kwargs)
    tokens = kwargs.pop("tokens", _tokens(b=2, t=3))
    max_new_tokens = kwargs.pop("max_new_tokens", 2)
    with pytest.raises(error, match=match):
        model.generate(tokens, max_new_tokens, **kwargs)
    with pytest.raises(error, match=match):  # stream checks when called, not at the first step
        model.stream(tokens, max_new_tokens, **kwargs)


def test_generate_refuses_a_bidirectional_model():
    model = _model(("rope",), causal=False)
    with pytest.raises(ValueError, match="generate needs a causal \\(decoder\\) model.*causal=False"):
        model.generate(_tokens(), 2)
