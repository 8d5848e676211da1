"""Whole-model parity: ropelab.hf.transformer_from_hf against transformers' causal LMs
(tiny, random weights, float32, eager attention): logits, cached decoding, extension."""

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from ropelab import RopeConfig  # noqa: E402
from ropelab.hf import transformer_from_hf  # noqa: E402
from ropelab.torch import positions_from_mask  # noqa: E402

TOL = 2e-5
VOCAB = 97
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=88, num_hidden_layers=3,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
              rms_norm_eps=1e-5)


LLAMA4 = dict(head_dim=16, intermediate_size=40, intermediate_size_mlp=88, num_hidden_layers=4,
              no_rope_layers=[1, 1, 1, 0], moe_layers=[], attention_chunk_size=8, use_qk_norm=True,
              attn_temperature_tuning=True, floor_scale=4, attn_scale=0.5,
              rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                               "high_freq_factor": 4.0, "original_max_position_embeddings": 16})


def _model(kind, **overrides):
    configs = {"llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig,
               "qwen2": transformers.Qwen2Config, "llama4": transformers.Llama4TextConfig,
               "phi3": transformers.Phi3Config}
    classes = {"llama": transformers.LlamaForCausalLM, "mistral": transformers.MistralForCausalLM,
               "qwen2": transformers.Qwen2ForCausalLM, "llama4": transformers.Llama4ForCausalLM,
               "phi3": transformers.Phi3ForCausalLM}
    if kind == "llama4":
        overrides = {**LLAMA4, **overrides}
    config = configs[kind](**{**COMMON, **overrides})
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = classes[kind](config)
    with torch.no_grad():  # every weight random (norms too), biases included
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model.eval()


def _batch(b=2, t=24, pad=(0, 5), seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    for row, n in enumerate(pad):
        mask[row, :n] = 0
    return ids, mask


def _assert_close(ours, ref, mask):
    rows = mask.bool()  # padded rows are garbage in both
    err = (ours[rows] - ref[rows]).abs().max() / ref[rows].abs().max()
    assert err <= TOL, f"max error {float(err):.3g} relative to the logit scale"


def _hf_logits(model, ids, mask):
    # HF's forward counts positions from slot 0 unless told; generate() follows the mask
    with torch.no_grad():
        return model(ids, attention_mask=mask, position_ids=positions_from_mask(mask)).logits


CASES = {
    "llama": ("llama", {}),
    "llama-tied": ("llama", {"tie_word_embeddings": True}),
    "llama-head-dim": ("llama", {"head_dim": 24}),  # heads wider than hidden / heads
    "llama-bias": ("llama", {"attention_bias": True}),
    "llama3-scaling": ("llama", {"rope_parameters": {
        "rope_type": "llama3", "rope_theta": 50000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 16}}),
    "yarn": ("llama", {"rope_parameters": {
        "rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 16}}),
    # transformers' dynamic type grows past max_position_embeddings: within it here (64),
    # and past it (16 < 24 tokens), where the frequencies follow the longest position
    "dynamic-ntk": ("llama", {"rope_parameters": {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}}),
    "dynamic-ntk-grown": ("llama", {"max_position_embeddings": 16, "rope_parameters": {
        "rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}}),
    "mistral-window": ("mistral", {"sliding_window": 8}),
    "qwen2": ("qwen2", {}),
    # Phi-3 long-context: fused qkv and gate/up, partial rotary, LongRoPE short and long
    # factors (the long ones past 16 tokens, as with 24 here), with its attention factor
    "phi3-longrope": ("phi3", {"pad_token_id": 0, "partial_rotary_factor": 0.75, "original_max_position_embeddings": 16,
                               "rope_parameters": {"rope_type": "longrope", "rope_theta": 10000.0,
                                                   "short_factor": [1.0, 1.1, 1.3, 1.6, 2.0, 2.5],
                                                   "long_factor": [1.5, 2.0, 3.0, 4.0, 6.0, 8.0],
                                                   "original_max_position_embeddings": 16}}),
    "phi3-short": ("phi3", {"pad_token_id": 0, "original_max_position_embeddings": 32, "rope_parameters": {
        "rope_type": "longrope", "rope_theta": 10000.0, "short_factor": [1.0] * 4 + [1.5] * 4,
        "long_factor": [4.0] * 8, "original_max_position_embeddings": 32}}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_equal_transformers(case):
    kind, overrides = CASES[case]
    model = _model(kind, **overrides)
    ours = transformer_from_hf(model)
    ids, mask = _batch()
    with torch.no_grad():
        got = ours(ids, attention_mask=mask)
    _assert_close(got, _hf_logits(model, ids, mask), mask)
    # without padding both count positions from 0: the plain forwards agree
    with torch.no_grad():
        _assert_close(ours(ids[:1]), model(ids[:1]).logits, mask[:1])


def test_cached_decoding_equals_the_transformers_forward():
    model = _model("qwen2", num_key_value_heads=1)
    ours = transformer_from_hf(model)
    ids, mask = _batch(t=20, pad=(0, 3))
    want = _hf_logits(model, ids, mask)
    cache = ours.new_cache(batch=2, capacity=20)
    steps = [(0, 12)] + [(t, t + 1) for t in range(12, 20)]  # a prompt, then one at a time
    with torch.no_grad():
        got = torch.cat([ours(ids[:, a:b], attention_mask=mask[:, :b], cache=cache) for a, b in steps], dim=1)
    _assert_close(got, want, mask)


def test_extension_swapped_in_equals_a_checkpoint_built_with_it():
    """ropelab's side of the bargain: import a plain checkpoint, set YaRN on it, and get
    what transformers gives for the same weights under a YaRN config."""
    yarn = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 16}
    plain = _model("llama")
    extended = _model("llama", rope_parameters=yarn)
    extended.load_state_dict(plain.state_dict())
    ours = transformer_from_hf(plain)
    ours.set_rope(RopeConfig.from_hf(extended.config))
    ids, mask = _batch(t=48)
    with torch.no_grad():
        got = ours(ids, attention_mask=mask)
    _assert_close(got, _hf_logits(extended, ids, mask), mask)
    with torch.no_grad():  # and it is not the plain model's answer
        plain_logits = _hf_logits(plain, ids, mask)
    assert (got - plain_logits)[mask.bool()].abs().max() > 100 * TOL * plain_logits.abs().max()


def test_llama4_irope_model_equals_transformers():
    """Llama 4's iRoPE at model level: three chunked RoPE layers with qk norm, then a NoPE
    layer with temperature tuning; dense feed-forward layers."""
    model = _model("llama4")
    ours = transformer_from_hf(model)
    assert ours.config.layers == ("rope", "rope", "rope", "nope")
    assert (ours.config.chunk_size, ours.config.qk_norm, ours.config.temperature_tuning) == (8, True, (0.5, 4.0))
    ids, _ = _batch(b=2, t=30)
    full = torch.ones_like(ids)
    with torch.no_grad():
        # no padding: transformers' temperature tuning counts slots, ropelab positions
        _assert_close(ours(ids), model(ids).logits, full)
        cache = ours.new_cache(batch=2, capacity=30)
        steps = [ours(ids[:, :13], cache=cache)] + [ours(ids[:, t:t + 1], cache=cache) for t in range(13, 30)]
    _assert_close(torch.cat(steps, dim=1), model(ids).logits, full)


def test_layers_share_one_rotary_table():
    ours = transformer_from_hf(_model("llama"))
    tables = {id(block.attn.rope) for block in ours.blocks}
    assert len(tables) == 1
    assert ours.config.mlp_hidden == 88 and ours.config.norm_eps == 1e-5 and not ours.training


def test_unsupported_models_are_refused_clearly():
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50))
    with pytest.raises(TypeError, match="does not support .*GPT2LMHeadModel.*LlamaForCausalLM"):
        transformer_from_hf(gpt2)
    with pytest.raises(ValueError, match="hidden_act='gelu'"):
        transformer_from_hf(_model("llama", hidden_act="gelu"))
    with pytest.raises(ValueError, match="mlp_bias=True"):
        transformer_from_hf(_model("llama", mlp_bias=True))
    with pytest.raises(ValueError, match="layer 1 is a mixture-of-experts layer"):
        transformer_from_hf(_model("llama4", moe_layers=[1], num_local_experts=2))


def _step_logits(model):
    """A list that fills with the last position's logits (B, V) of every forward call."""
    seen = []
    model.lm_head.register_forward_hook(lambda module, args, out: seen.append(out[:, -1].clone()))
    return seen


@pytest.mark.parametrize("pad", [(0,), (0, 3)], ids=["one-row", "left-padded"])
@pytest.mark.parametrize("case", ["llama", "dynamic-ntk-grown", "phi3-longrope"])
def test_greedy_generation_equals_transformers_generate(case, pad):
    """Transformer.generate against transformers' generate: the same tokens, and the
    same logits at every step, also where the frequencies move with the length (dynamic
    NTK grown past its length; LongRoPE switching to its long factors mid-generation,
    where both run the whole sequence again), with left padding too."""
    kind, overrides = CASES[case]
    model = _model(kind, **overrides)
    ours = transformer_from_hf(model)
    prompt, mask = _batch(b=len(pad), t=12, pad=pad)
    steps = 10  # 12 + 10 tokens: past 16 while generating
    with torch.no_grad():
        out = model.generate(prompt, attention_mask=mask, max_new_tokens=steps, do_sample=False,
                             output_logits=True, return_dict_in_generate=True, pad_token_id=0)
    logits = _step_logits(ours)
    got = ours.generate(prompt, steps, attention_mask=mask)
    assert torch.equal(got, out.sequences)
    assert len(out.logits) == steps and len(logits) == steps  # a forward per step
    for mine, theirs in zip(logits, out.logits, strict=True):
        _assert_close(mine, theirs, torch.ones(len(pad), dtype=torch.long))


def test_sampling_equals_transformers_sampling_for_one_seed():
    """temperature and top_k mean what they mean in transformers: the same draws from
    torch's global generator give the same tokens."""
    model = _model("llama")
    ours = transformer_from_hf(model)
    prompt, mask = _batch(b=2, t=8, pad=(0, 2))
    torch.manual_seed(123)
    with torch.no_grad():
        want = model.generate(prompt, attention_mask=mask, max_new_tokens=12, do_sample=True,
                              temperature=0.7, top_k=5, top_p=1.0, pad_token_id=0)
    torch.manual_seed(123)
    got = ours.generate(prompt, 12, attention_mask=mask, temperature=0.7, top_k=5)
    assert torch.equal(got, want)
    greedy = ours.generate(prompt, 12, attention_mask=mask)
    assert not torch.equal(got, greedy)  # it did sample


def test_end_token_stops_like_transformers():
    model = _model("llama")
    ours = transformer_from_hf(model)
    prompt, mask = _batch(b=2, t=8, pad=(0, 2))
    greedy = ours.generate(prompt, 12, attention_mask=mask)
    eos = int(greedy[0, 8 + 3])  # row 0's fourth new token ends it
    with torch.no_grad():
        want = model.generate(prompt, attention_mask=mask, max_new_tokens=12, do_sample=False,
                              eos_token_id=eos, pad_token_id=1)
    got = ours.generate(prompt, 12, attention_mask=mask, eos_token_id=eos, pad_token_id=1)
    assert torch.equal(got, want)
