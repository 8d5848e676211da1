"""ropelab.torch.Attention against a float64 NumPy reference; cache, compile, errors."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ropelab_testing import assert_decode_equals_full, assert_maskless_decode_equals_full  # noqa: E402

from ropelab import RopeConfig, scaling  # noqa: E402
from ropelab.attention_spec import AttentionSpec  # noqa: E402
from ropelab.torch import Attention, Cache, KVCache, RotaryEmbedding, positions_from_mask  # noqa: E402


def _rope64(x, positions, inv_freq, layout, factor=1.0):
    """float64 RoPE from the definition; x (B, H, T, D), positions (B, T)."""
    r = 2 * len(inv_freq)
    ang = positions[:, None, :, None].astype(np.float64) * inv_freq  # (B, 1, T, R/2)
    c, s = np.cos(ang) * factor, np.sin(ang) * factor
    out = x.copy()
    if layout == "interleaved":
        a, b = x[..., 0:r:2], x[..., 1:r:2]
        out[..., 0:r:2], out[..., 1:r:2] = a * c - b * s, a * s + b * c
    else:
        a, b = x[..., : r // 2], x[..., r // 2 : r]
        out[..., : r // 2], out[..., r // 2 : r] = a * c - b * s, a * s + b * c
    return out


def reference_attention(attn, x, positions=None, mask=None, bias=None):
    """float64 attention written from the definitions, reading attn's weights and options.

    x (B, T, d_model); positions (B, T); mask (B, T) 1/0. Returns (B, T, d_model).
    """
    w = {n: p.detach().double().numpy() for n, p in attn.named_parameters()}
    x = x.detach().double().numpy()
    b, t, _ = x.shape
    h, kv, d = attn.num_heads, attn.num_kv_heads, attn.head_dim
    pos = np.broadcast_to(np.arange(t), (b, t)) if positions is None else positions.numpy()

    def proj(name, heads):
        y = x @ w[f"{name}.weight"].T + w.get(f"{name}.bias", 0.0)
        return y.reshape(b, t, heads, d).transpose(0, 2, 1, 3)  # (B, heads, T, D)

    q, k, v = proj("q_proj", h), proj("k_proj", kv), proj("v_proj", kv)
    if attn.rope is not None:
        cfg = attn.rope.config
        inv = cfg.inv_freq(int(pos.max()) + 1 if cfg.dynamic else None)
        q = _rope64(q, pos, inv, cfg.layout, cfg.attention_factor)
        k = _rope64(k, pos, inv, cfg.layout, cfg.attention_factor)
    if attn.qk_norm:
        eps = attn.qk_norm_eps
        q = q / np.sqrt((q**2).mean(-1, keepdims=True) + eps)
        k = k / np.sqrt((k**2).mean(-1, keepdims=True) + eps)
    if attn.temperature_tuning is not None:
        a, f = attn.temperature_tuning
        q = q * (1 + a * np.log(np.floor((pos + 1) / f) + 1))[:, None, :, None]
    k = np.repeat(k, h // kv, axis=1)
    v = np.repeat(v, h // kv, axis=1)
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d)  # (B, H, T, T)
    if bias is not None:
        scores = scores + bias
    i, j = np.arange(t)[:, None], np.arange(t)[None, :]
    qp, kp = pos[:, :, None], pos[:, None, :]
    keep = np.ones((b, t, t), dtype=bool)
    if attn.causal:
        keep &= j <= i
    if attn.chunk_size:
        keep &= qp // attn.chunk_size == kp // attn.chunk_size
    if attn.window:
        keep &= (qp - kp < attn.window) if attn.causal else (np.abs(qp - kp) < attn.window)
    if mask is not None:
        keep &= mask.numpy().astype(bool)[:, None, :]
    scores = np.where(keep[:, None], scores, -np.inf)
    with np.errstate(invalid="ignore"):  # rows of pads with no key are NaN; never compared
        p = np.exp(scores - scores.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
    y = (p @ v).transpose(0, 2, 1, 3).reshape(b, t, h * d)
    return y @ w["o_proj.weight"].T + w.get("o_proj.bias", 0.0)


def _close(out, ref, tol=2e-5, rows=None):
    out = out.detach().double().numpy()
    if rows is not None:
        out, ref = out[rows], ref[rows]
    scale = np.abs(ref).max()
    err = np.abs(out - ref).max() / scale
    assert err <= tol, f"max error {err:.3g} relative to output scale {scale:.3g}"


def _x(b=2, t=11, d=64, seed=0):
    return torch.randn(b, t, d, generator=torch.Generator().manual_seed(seed))


CASES = {
    "rope-gqa-half": dict(num_kv_heads=2, rope=RopeConfig(16, layout="half")),
    "rope-interleaved-partial-bias": dict(rope=RopeConfig(16, rotary_dim=8), bias=True),
    "nope": dict(),
    "bidirectional-rope": dict(rope=RopeConfig(16), causal=False),
    "chunked-qknorm": dict(rope=RopeConfig(16), chunk_size=4, qk_norm=True),
    "window": dict(rope=RopeConfig(16, layout="half"), window=3),
    "bidirectional-window": dict(causal=False, window=3),
    "temperature": dict(temperature_tuning=(0.5, 2.0)),
    "yarn": dict(rope=RopeConfig(16, scaling=scaling.YaRN(4.0, 8))),
    "mqa-head-dim": dict(num_kv_heads=1, head_dim=8, rope=RopeConfig(8)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_float64_reference(name):
    torch.manual_seed(1)
    attn = Attention(64, 4, **CASES[name])
    x = _x()
    _close(attn(x), reference_attention(attn, x))
    attn.kernel = "eager"
    _close(attn(x), reference_attention(attn, x))


@pytest.mark.parametrize("name", ["rope-gqa-half", "chunked-qknorm", "window", "temperature"])
def test_left_padding_matches_reference_on_real_tokens(name):
    torch.manual_seed(2)
    attn = Attention(64, 4, **CASES[name])
    x = _x(b=3, t=9)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, :3] = 0
    mask[2, :8] = 0
    out = attn(x, attention_mask=mask)
    assert torch.isfinite(out).all()  # fully masked pad rows give no NaN
    ref = reference_attention(attn, x, positions_from_mask(mask), mask)
    _close(out, ref, rows=mask.bool().numpy())
    # a padded row equals the same tokens run alone (positions start at 0 after the pads)
    alone = attn(x[1:2, 3:])
    torch.testing.assert_close(out[1:2, 3:], alone, rtol=1e-5, atol=1e-5)


def test_score_bias_module_is_added():
    class Distance(torch.nn.Module):  # an ALiBi-like bias from positions
        def forward(self, q_pos, k_pos):
            return -0.5 * (q_pos[:, None, :, None] - k_pos[:, None, None, :]).abs().float()

    torch.manual_seed(3)
    attn = Attention(64, 4, score_bias=Distance())
    x = _x(t=6)
    pos = torch.arange(6).expand(2, 6)
    bias = -0.5 * np.abs(np.arange(6)[:, None] - np.arange(6)[None, :])
    _close(attn(x), reference_attention(attn, x, pos, bias=bias))


def test_score_bias_with_cache_equals_full_forward():
    class Distance(torch.nn.Module):
        def forward(self, q_pos, k_pos):
            return -0.5 * (q_pos[:, None, :, None] - k_pos[:, None, None, :]).abs().float()

    torch.manual_seed(3)
    attn = Attention(64, 4, score_bias=Distance())
    x = _x(t=8)
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, :2] = 0
    full = attn(x, attention_mask=mask)
    cache = KVCache(2, 4, 8, 16)
    parts = [attn(x[:, :3], cache=cache, attention_mask=mask[:, :3])]
    parts += [
        attn(x[:, t : t + 1], cache=cache, attention_mask=mask[:, : t + 1]) for t in range(3, 8)
    ]
    rows = mask.bool()
    torch.testing.assert_close(torch.cat(parts, 1)[rows], full[rows], rtol=1e-5, atol=1e-5)


def test_custom_rope_module_gets_batch_positions():
    seen = {}

    class Spy(torch.nn.Module):
        def forward(self, q, k, positions):
            seen["positions"] = positions
            return q, k

    attn = Attention(64, 4, rope=Spy())
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    attn(_x(t=4), attention_mask=mask)
    torch.testing.assert_close(seen["positions"], torch.tensor([[0, 0, 1, 2], [0, 1, 2, 3]]))


def test_plain_causal_builds_no_mask(monkeypatch):
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        calls.append((attn_mask, kw.get("is_causal")))
        return sdpa(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    attn = Attention(64, 4, num_kv_heads=2, rope=RopeConfig(16))
    attn(_x())
    assert calls[-1] == (None, True)
    cache = KVCache(2, 2, 16, 16)
    attn(_x(t=5), cache=cache)
    assert calls[-1] == (None, True)
    attn(_x(t=1), cache=cache)  # one token after the prefix: no mask at all
    assert calls[-1] == (None, False)
    attn(_x(t=3), cache=cache)  # several new tokens after a prefix: a (T, S) mask
    assert calls[-1][0].shape[-2:] == (3, 9)


@pytest.mark.parametrize(
    "name", ["rope-gqa-half", "chunked-qknorm", "window", "temperature", "nope"]
)
def test_cached_decoding_equals_full_forward(name):
    torch.manual_seed(4)
    attn = Attention(64, 4, **CASES[name])
    x = _x(b=2, t=12)
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[0, :4] = 0  # left padding
    assert_decode_equals_full(attn, x, mask)
    assert_maskless_decode_equals_full(attn, x, mask)


def test_cache_records_padding_and_continues_each_row():
    attn = Attention(64, 4, rope=RopeConfig(16, layout="half"))
    x = _x(b=3, t=8)
    mask = torch.ones(3, 8, dtype=torch.long)
    mask[0, :2] = 0
    mask[2, :4] = 0  # no token in the prompt
    cache = KVCache(3, 4, 10, 16)
    attn(x[:, :4], cache=cache, attention_mask=mask[:, :4])
    assert cache.padded and repr(cache) == "KVCache(B=3, K=4, capacity=10, D=16, length=4, padded)"
    assert cache.tokens[:, :4].tolist() == mask[:, :4].bool().tolist()
    assert cache.next_positions(2).tolist() == [[2, 3], [4, 5], [0, 1]]
    assert cache.key_mask(1).tolist() == torch.cat([mask[:, :4], torch.ones(3, 1, dtype=torch.long)], 1).bool().tolist()
    # a step without a mask, then one with the mask (which covers every key again)
    steps = [attn(x[:, 4:5], cache=cache), attn(x[:, 5:8], cache=cache, attention_mask=mask)]
    full = attn(x, attention_mask=mask)
    rows = mask[:, 4:].bool()
    torch.testing.assert_close(torch.cat(steps, 1)[rows], full[:, 4:][rows], rtol=1e-5, atol=1e-5)
    cache.reset()
    assert (cache.length, cache.padded, cache.counted) == (0, False, True)
    assert repr(cache) == "KVCache(B=3, K=4, capacity=10, D=16, length=0)"
    assert cache.next_positions(2) is None and cache.key_mask(2) is None


def test_cache_given_positions_continues_from_them():
    attn = Attention(64, 4, rope=RopeConfig(16))
    x = _x(b=2, t=6)
    cache = KVCache(2, 4, 8, 16)
    start = torch.tensor([[100, 101, 102, 103], [7, 8, 9, 10]])
    out = [attn(x[:, :4], start, cache=cache), attn(x[:, 4:6], cache=cache)]
    assert cache.positions[:, :6].tolist() == [[100, 101, 102, 103, 104, 105], [7, 8, 9, 10, 11, 12]]
    positions = torch.cat([start, start[:, -1:] + torch.tensor([1, 2])], 1)
    torch.testing.assert_close(torch.cat(out, 1), attn(x, positions), rtol=1e-5, atol=1e-5)
    # a cache written without positions or masks counts slots, as before
    plain = KVCache(2, 4, 8, 16)
    attn(x[:, :4], cache=plain)
    assert plain.counted and plain.next_positions(1) is None


def test_cache_stores_keys_rotated_once():
    attn = Attention(64, 4, rope=RopeConfig(16))
    x = _x(b=1, t=4)
    cache = KVCache(1, 4, 8, 16)
    attn(x, cache=cache)
    with torch.no_grad():
        k = attn.k_proj(x).view(1, 4, 4, 16).transpose(1, 2)
        _, k_rot = attn.rope(k, k)
    torch.testing.assert_close(cache.keys[:, :, :4], k_rot)
    torch.testing.assert_close(cache.positions[:, :4], torch.arange(4)[None])


def test_cache_capacity_error():
    attn = Attention(64, 4, rope=RopeConfig(16))
    cache = KVCache(2, 4, 8, 16)
    attn(_x(t=6), cache=cache)
    with pytest.raises(ValueError, match=r"capacity 8 .* 9 tokens"):
        attn(_x(t=3), cache=cache)
    assert cache.length == 6  # nothing written by the failed call


def test_a_cache_of_another_dtype_is_refused_naming_both():
    attn = Attention(64, 4, rope=RopeConfig(16)).to(torch.bfloat16)
    with pytest.raises(ValueError, match="KV cache holds torch.float32 keys but the layer's weights are torch.bfloat16"):
        attn(_x(t=3).bfloat16(), cache=KVCache(2, 4, 8, 16))
    cache = KVCache(2, 4, 8, 16, dtype=torch.bfloat16)
    attn(_x(t=3).bfloat16(), cache=cache)
    assert cache.length == 3


def test_positions_from_mask():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    torch.testing.assert_close(
        positions_from_mask(mask), torch.tensor([[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]])
    )
    with pytest.raises(ValueError, match=r"\(B, S\)"):
        positions_from_mask(torch.ones(5))


@pytest.mark.parametrize("neg", [-1e9, float("-inf")])
def test_additive_masks_are_refused_not_flipped(neg):
    attn = Attention(64, 4, rope=RopeConfig(16))
    x = _x(t=5)
    additive = torch.zeros(2, 5)
    additive[0, :2] = neg  # hide two pads, the additive way
    with pytest.raises(TypeError, match="1 for tokens and 0 for padding.*additive masks"):
        attn(x, attention_mask=additive)


@pytest.mark.parametrize("cls", ["Attention", "ShawAttention", "LinearAttention"])
def test_mask_values_other_than_0_and_1_are_refused(cls):
    import ropelab.torch as rt

    attn = getattr(rt, cls)(64, 4)
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    with pytest.raises(ValueError, match="1 for tokens and 0 for padding only, got 2 at row 0, slot 2"):
        attn(_x(t=5), attention_mask=mask * 2)
    attn(_x(t=5), attention_mask=mask.bool())  # bool masks mean the same as 1/0


def test_positions_from_mask_refuses_what_is_not_a_padding_mask():
    with pytest.raises(ValueError, match="got 2 at row 0, slot 1"):
        positions_from_mask(torch.tensor([[1, 2, 1]]))
    with pytest.raises(TypeError, match="additive masks"):
        positions_from_mask(torch.tensor([[0.0, -1e9]]))


def test_compiles_fullgraph_and_gradients_reach_all_weights():
    torch.manual_seed(5)
    attn = Attention(
        64, 4, num_kv_heads=2, rope=RopeConfig(16, layout="half"), bias=True, qk_norm=True
    )
    compiled = torch.compile(attn, fullgraph=True, backend="eager")
    x = _x(t=8)
    pos = torch.arange(3, 11).expand(2, 8)
    torch.testing.assert_close(compiled(x), attn(x))
    torch.testing.assert_close(compiled(x, pos), attn(x, pos))
    compiled(x).square().sum().backward()
    for name, p in attn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_dropout_only_while_training():
    attn = Attention(64, 4, rope=RopeConfig(16), dropout=0.5).eval()
    x = _x()
    torch.testing.assert_close(attn(x), attn(x))
    attn.train()
    assert not torch.allclose(attn(x), attn(x))


def test_hf_llama_state_dict_keys():
    attn = Attention(64, 4, num_kv_heads=2, rope=RopeConfig(16))
    assert set(attn.state_dict()) == {f"{n}_proj.weight" for n in "qkvo"}
    assert isinstance(attn.rope, RotaryEmbedding)


def test_errors():
    with pytest.raises(ValueError, match="d_model=60 is not divisible by num_heads=8"):
        Attention(60, 8)
    with pytest.raises(ValueError, match="num_heads=4 is not divisible by num_kv_heads=3"):
        Attention(64, 4, num_kv_heads=3)
    with pytest.raises(ValueError, match="head_dim=8"):
        Attention(64, 4, rope=RopeConfig(8))
    with pytest.raises(TypeError, match="rope must be"):
        Attention(64, 4, rope="rope")
    with pytest.raises(ValueError, match="chunk_size"):
        Attention(64, 4, chunk_size=0)
    with pytest.raises(ValueError, match="temperature_tuning"):
        Attention(64, 4, temperature_tuning=(0.1,))
    with pytest.raises(ValueError, match="dropout"):
        Attention(64, 4, dropout=1.5)
    with pytest.raises(TypeError, match="causal must be True or False, got 1"):
        Attention(64, 4, causal=1)
    attn = Attention(64, 4, rope=RopeConfig(16))
    x = _x(t=5)
    with pytest.raises(ValueError, match=r"x must be shaped \(B, T, d_model=64\)"):
        attn(x[..., :32])
    with pytest.raises(ValueError, match=r"positions must be shaped \(T,\) = \(5,\)"):
        attn(x, torch.arange(4))
    with pytest.raises(ValueError, match="positions must be shaped"):
        attn(x, torch.zeros(3, 5, dtype=torch.long))
    with pytest.raises(TypeError, match="integer tensor"):
        attn(x, torch.arange(5.0))
    with pytest.raises(ValueError, match=r"attention_mask must be shaped \(B, S\) = \(2, 5\)"):
        attn(x, attention_mask=torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="cache batch 3"):
        attn(x, cache=KVCache(3, 4, 8, 16))
    with pytest.raises(ValueError, match="one layer's cache"):
        attn(x, cache=Cache(2, 2, 4, 8, 16))
    with pytest.raises(TypeError, match="cache must be"):
        attn(x, cache={})
    with pytest.raises(ValueError, match="capacity"):
        KVCache(2, 4, 0, 16)


def test_kernel_is_checked_when_set():
    with pytest.raises(ValueError, match="kernel must be one of 'sdpa', 'eager'; got 'Eager'"):
        Attention(64, 4).kernel = "Eager"
    attn = Attention(64, 4)
    attn.kernel = "eager"
    assert attn.kernel == "eager"


def test_a_rope_module_for_another_head_dim_is_refused_like_a_config():
    from ropelab.torch import AxialRoPE, MRoPE, XPos

    for rope in (RopeConfig(8), RotaryEmbedding(RopeConfig(8)), XPos(RopeConfig(8)), MRoPE(RopeConfig(8)),
                 AxialRoPE(RopeConfig(8), 3)):
        with pytest.raises(ValueError, match="rope.head_dim=8 does not match the attention head_dim=16"):
            Attention(64, 4, rope=rope)
    attn = Attention(64, 4)
    with pytest.raises(ValueError, match="rope.head_dim=8 does not match the attention head_dim=16"):
        attn.rope = RotaryEmbedding(RopeConfig(8))
    assert attn.rope is None
    # partial rotary is the config's rotary_dim, for a module as for a bare config
    attn.rope = RotaryEmbedding(RopeConfig(16, rotary_dim=8))
    Attention(64, 4, rope=RopeConfig(16, rotary_dim=8))
    attn.rope = RopeConfig(16)  # a config set later is wrapped as at construction
    assert isinstance(attn.rope, RotaryEmbedding)


def test_options_live_in_the_spec():
    attn = Attention(64, 4, num_kv_heads=2, rope=RopeConfig(16), chunk_size=8, qk_norm=True)
    assert attn.spec == AttentionSpec(64, 4, num_kv_heads=2, chunk_size=8, qk_norm=True)
    assert (attn.num_kv_heads, attn.head_dim, attn.chunk_size, attn.window) == (2, 16, 8, None)
    assert str(attn).splitlines()[1].strip() == (
        "d_model=64, heads=4, kv_heads=2, head_dim=16, causal=True, chunk_size=8, qk_norm_eps=1e-06"
    )
    assert "causal=False, NoPE" in str(Attention(64, 4, causal=False))
    with pytest.raises(ValueError, match="window must be an integer >= 1, got 0"):
        attn.window = 0
    with pytest.raises(AttributeError, match="head_dim is fixed by the projection weights"):
        attn.head_dim = 8


def test_an_option_set_later_equals_one_given_at_construction():
    torch.manual_seed(4)
    late = Attention(64, 4, rope=RopeConfig(16))
    early = Attention(64, 4, rope=RopeConfig(16), window=3, temperature_tuning=(0.5, 2.0))
    early.load_state_dict(late.state_dict())
    x = _x(t=9)
    before = late(x)
    late.window, late.temperature_tuning = 3, (0.5, 2.0)
    assert late.spec == early.spec
    torch.testing.assert_close(late(x), early(x))
    assert (late(x) - before).abs().max() > 1e-3


def test_compiles_fullgraph_with_padding_chunk_and_window():
    torch.manual_seed(6)
    attn = Attention(
        64, 4, num_kv_heads=2, rope=RopeConfig(16), chunk_size=4, window=6, qk_norm=True
    )
    compiled = torch.compile(attn, fullgraph=True, backend="eager")
    x = _x(t=9)
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[0, :3] = 0
    torch.testing.assert_close(compiled(x, attention_mask=mask), attn(x, attention_mask=mask))
