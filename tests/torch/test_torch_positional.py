"""ropelab.torch.positional: each module against its paper's formula or transformers,
inside Attention, with a KV cache (decode equals full forward). The layer kinds that
build them are tested in test_kinds.py, ShawAttention in test_shaw.py."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ropelab_testing import assert_decode_equals_full, assert_maskless_decode_equals_full  # noqa: E402

import ropelab  # noqa: E402
from ropelab import RopeConfig  # noqa: E402
from ropelab.positional import PRoPE, alibi_slopes, xpos_scales  # noqa: E402
from ropelab.torch import Attention, Transformer, TransformerConfig  # noqa: E402
from ropelab.torch.positional import (  # noqa: E402
    ALiBiBias,
    AxialRoPE,
    LearnedAbsolute,
    MRoPE,
    T5Bias,
    XPos,
    default_mrope_section,
)


def _pos(*rows):
    return torch.as_tensor(np.array(rows), dtype=torch.long)


def _qk(b=2, h=3, t=9, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, h, t, d, generator=g, dtype=torch.float64), torch.randn(
        b, h, t, d, generator=g, dtype=torch.float64
    )


# --- learned absolute --------------------------------------------------------------------


def test_learned_absolute_rows_and_limit():
    emb = LearnedAbsolute(10, 4)
    pos = _pos([0, 3, 9])
    torch.testing.assert_close(emb(pos), emb.embedding.weight[[0, 3, 9]][None])
    with pytest.raises(
        ValueError, match="position 10 is outside the learned table of max_positions=10"
    ):
        emb(_pos([8, 9, 10]))


# --- ALiBi -----------------------------------------------------------------------------


def test_alibi_bias_is_minus_slope_times_distance():
    bias = ALiBiBias(6)(_pos([4, 5, 6]), _pos([0, 1, 2, 3, 4, 5, 6]))
    slopes = alibi_slopes(6)
    for h in range(6):
        for i, qp in enumerate([4, 5, 6]):
            for j in range(7):
                assert bias[0, h, i, j].item() == pytest.approx(-slopes[h] * abs(qp - j), rel=1e-6)


def test_alibi_softmax_equals_blooms():
    pytest.importorskip("transformers")
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    heads, t = 5, 8
    scores = torch.randn(1, heads, t, t, dtype=torch.float64)
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    ours = scores + ALiBiBias(heads)(_pos(range(t)), _pos(range(t))).double()
    bloom = scores + build_alibi_tensor(torch.ones(1, t), heads, torch.float64).view(1, heads, 1, t)
    p1 = torch.softmax(ours.masked_fill(~causal, -math.inf), -1)
    p2 = torch.softmax(bloom.masked_fill(~causal, -math.inf), -1)
    torch.testing.assert_close(p1, p2, rtol=1e-6, atol=1e-7)


def test_alibi_rejects_zero_heads():
    with pytest.raises(ValueError, match="num_heads"):
        ALiBiBias(0)


# --- T5 --------------------------------------------------------------------------------


@pytest.mark.parametrize("is_decoder", [False, True])
def test_t5_bias_equals_transformers_compute_bias(is_decoder):
    pytest.importorskip("transformers")
    from transformers import T5Config
    from transformers.models.t5.modeling_t5 import T5Attention

    cfg = T5Config(
        d_model=32,
        d_kv=8,
        num_heads=4,
        relative_attention_num_buckets=16,
        relative_attention_max_distance=40,
        is_decoder=is_decoder,
    )
    hf = T5Attention(cfg, has_relative_attention_bias=True)
    ours = T5Bias(4, bidirectional=not is_decoder, num_buckets=16, max_distance=40)
    ours.relative_attention_bias.load_state_dict(hf.relative_attention_bias.state_dict())
    q_len, k_len, past = 7, 90, 83  # queries are the last 7 of 90 keys
    ref = hf.compute_bias(q_len, k_len, past_seen_tokens=past)
    got = ours(_pos(range(past, past + q_len)), _pos(range(k_len)))
    torch.testing.assert_close(got, ref)


def test_t5_bias_rejects_one_bucket():
    with pytest.raises(ValueError, match="num_buckets"):
        T5Bias(4, num_buckets=1)


# --- xPos ------------------------------------------------------------------------------


def _xpos_reference(q, k, qp, kp, cfg, scale_base=512.0, gamma=0.4):
    """float64: RoPE from the tables, then q * zeta^(n/sb) and k / zeta^(n/sb) (Sun et al.)."""
    cq, sq = ropelab.rope_tables(cfg, qp)
    ck, sk = ropelab.rope_tables(cfg, kp)
    qr = ropelab.apply_rope(q, cq, sq, layout=cfg.layout, rotary_dim=cfg.rotary_dim)
    kr = ropelab.apply_rope(k, ck, sk, layout=cfg.layout, rotary_dim=cfg.rotary_dim)
    zq, zk = (
        xpos_scales(qp, cfg.rotary_dim, scale_base=scale_base, gamma=gamma),
        xpos_scales(kp, cfg.rotary_dim, scale_base=scale_base, gamma=gamma),
    )
    rep = (
        (lambda z: np.repeat(z, 2, -1))
        if cfg.layout == "interleaved"
        else (lambda z: np.concatenate([z, z], -1))
    )
    r = cfg.rotary_dim
    qr[..., :r] *= rep(zq)
    kr[..., :r] /= rep(zk)
    return qr, kr


@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_xpos_equals_formula(layout):
    cfg = RopeConfig(16, rotary_dim=12, layout=layout)
    q, k = _qk(b=1, h=2, t=6)
    pos = np.array([0, 3, 50, 51, 700, 1500])
    xpos = XPos(cfg, scale_base=128.0)  # scales made per call, 1500 included
    got_q, got_k = xpos(q.float(), k.float(), torch.as_tensor(pos)[None])
    ref_q, ref_k = _xpos_reference(q.numpy(), k.numpy(), pos, pos, cfg, scale_base=128.0)
    np.testing.assert_allclose(got_q.double().numpy(), ref_q, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        got_k.double().numpy(), ref_k, rtol=1e-5, atol=1e-6 * np.abs(ref_k).max()
    )


def test_xpos_scores_depend_only_on_relative_position():
    cfg = RopeConfig(16)
    xpos = XPos(cfg, center=2000)
    q, k = _qk(b=1, h=1, t=1)
    scores = []
    for shift in (0, 1000, 3000):
        qq, _ = xpos(q, q, _pos([300 + shift]))
        _, kk = xpos(k, k, _pos([100 + shift]))
        scores.append((qq * kk).sum().item())
    assert scores[1] == pytest.approx(scores[0], rel=1e-5)
    assert scores[2] == pytest.approx(scores[0], rel=1e-5)


def test_xpos_decays_with_distance_for_aligned_q_and_k():
    # with q = k constant the score is sum_i zeta_i^(s/512) * cos(s theta_i) * |q|^2: its envelope decays
    xpos = XPos(RopeConfig(32), scale_base=64.0)
    q = torch.ones(1, 1, 1, 32, dtype=torch.float64)
    near = []
    for dist in (0, 200, 2000):
        qq, _ = xpos(q, q, _pos([dist]))
        _, kk = xpos(q, q, _pos([0]))
        near.append(abs((qq * kk).sum().item()))
    assert near[0] > near[1] > near[2]


def test_xpos_after_dtype_cast_scales_as_before_and_holds_no_table():
    """Scales are made per call from float64: a cast module gives the float32 module's
    numbers (to bfloat16 rounding) and keeps no position-sized state."""
    xpos = XPos(RopeConfig(16))
    cast = XPos(RopeConfig(16)).to(torch.bfloat16)
    assert not list(cast.buffers()) and not cast.state_dict()
    q, k = torch.randn(1, 2, 3, 16), torch.randn(1, 2, 3, 16)
    positions = torch.tensor([5, 3000, -40])
    want = xpos(q.bfloat16().float(), k.bfloat16().float(), positions)
    got = cast(q.bfloat16(), k.bfloat16(), positions)
    assert all(torch.isfinite(w).all() for w in want)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g.float(), w, atol=5e-2, rtol=2e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_xpos_refuses_positions_whose_scales_leave_the_dtype(dtype):
    xpos = XPos(RopeConfig(8))
    limit = xpos.max_distance(dtype)
    assert limit == (3966 if dtype == torch.float16 else 35694)
    q, k = torch.randn(1, 1, 2, 8, dtype=dtype), torch.randn(1, 1, 2, 8, dtype=dtype)
    for good in ([limit - 1, limit], [-limit, 0]):
        qq, kk = xpos(q, k, _pos(good))
        assert torch.isfinite(qq).all() and torch.isfinite(kk).all()
        assert (kk != 0).all()  # no inverse scale flushed to zero
    with pytest.raises(ValueError, match=rf"XPos position {limit + 1} is {limit + 1} from center=0.*"
                                         rf"\[-{limit}, {limit}\].*center="):
        xpos(q, k, _pos([3, limit + 1]))
    with pytest.raises(ValueError, match=rf"position -{limit + 5} .*center=-"):
        xpos(q, k, _pos([-limit - 5, 0]))


def test_xpos_far_positions_work_once_centred_and_match_near_ones():
    attn = Attention(32, 4, rope=XPos(RopeConfig(8))).eval()
    x = torch.randn(1, 3, 32)
    near = attn(x, _pos([0, 1, 2]))
    with pytest.raises(ValueError, match="center="):
        attn(x, _pos([50000, 50001, 50002]))
    attn.rope = XPos(RopeConfig(8), center=50000)
    torch.testing.assert_close(attn(x, _pos([50000, 50001, 50002])), near, rtol=1e-4, atol=1e-5)


def test_xpos_needs_k():
    with pytest.raises(TypeError, match="XPos needs k as well as q"):
        XPos(RopeConfig(8))(torch.randn(1, 1, 3, 8), None)


def test_xpos_rejects_bad_scale_base():
    with pytest.raises(ValueError, match="scale_base"):
        XPos(RopeConfig(16), scale_base=-1.0)


# --- p-RoPE ----------------------------------------------------------------------------


def _copy(dst, src):
    dst.load_state_dict(src.state_dict(), strict=False)
    return dst


def test_prope_one_equals_rope_and_zero_equals_nope_in_attention():
    torch.manual_seed(0)
    x = torch.randn(2, 10, 32)
    rope = Attention(32, 2, rope=RopeConfig(16, layout="half"))
    nope = _copy(Attention(32, 2, rope=None), rope)
    p1 = _copy(Attention(32, 2, rope=RopeConfig(16, layout="half", scaling=PRoPE(1.0))), rope)
    p0 = _copy(Attention(32, 2, rope=RopeConfig(16, layout="half", scaling=PRoPE(0.0))), rope)
    torch.testing.assert_close(p1(x), rope(x))
    torch.testing.assert_close(p0(x), nope(x))
    assert not torch.allclose(rope(x), nope(x))


# --- M-RoPE ----------------------------------------------------------------------------


def test_mrope_equals_qwen2_vl():
    pytest.importorskip("transformers")
    from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLTextConfig
    from transformers.models.qwen2_vl.modeling_qwen2_vl import (
        Qwen2VLRotaryEmbedding,
        apply_rotary_pos_emb,
    )

    head_dim, section = 32, [4, 6, 6]
    hf_cfg = Qwen2VLTextConfig(
        hidden_size=64,
        num_attention_heads=2,
        num_key_value_heads=2,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": section},
    )
    rng = np.random.default_rng(3)
    positions = torch.as_tensor(rng.integers(0, 40, size=(3, 2, 7)))
    q, k = _qk(b=2, h=2, t=7, d=head_dim)
    q, k = q.float(), k.float()
    cos, sin = Qwen2VLRotaryEmbedding(hf_cfg)(q, positions)
    ref_q, ref_k = apply_rotary_pos_emb(q, k, cos, sin)
    got_q, got_k = MRoPE(RopeConfig(head_dim, layout="half"), section)(q, k, positions)
    torch.testing.assert_close(got_q, ref_q, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_k, ref_k, rtol=1e-5, atol=1e-5)


def test_mrope_text_positions_equal_rope():
    cfg = RopeConfig(32, layout="half")
    q, k = _qk(t=5, d=32)
    t = torch.arange(5)[None].expand(2, 5)
    mrope = MRoPE(cfg)
    a = mrope(q, k, t)
    b = mrope(q, k, torch.stack([t, t, t]))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, mrope.rotary(q, k, t))


def test_default_mrope_section_is_qwens():
    assert default_mrope_section(64) == (16, 24, 24)


def test_mrope_rejects_bad_section():
    with pytest.raises(ValueError, match="sums to 15"):
        MRoPE(RopeConfig(32), (5, 5, 5))


def test_mrope_rejects_positions_with_two_axes():
    q, k = _qk(d=32)
    with pytest.raises(ValueError, match=r"\(3, B, T\)"):
        MRoPE(RopeConfig(32))(q, k, torch.zeros(2, 2, 9, dtype=torch.long))


# --- every scheme in Attention with a KV cache -----------------------------------------


ATTENTIONS = {
    "alibi": lambda: Attention(32, 4, score_bias=ALiBiBias(4)),
    "t5": lambda: Attention(32, 4, score_bias=T5Bias(4, num_buckets=8, max_distance=6)),
    "xpos": lambda: Attention(32, 4, rope=XPos(RopeConfig(8, layout="half"), scale_base=16.0)),
    "prope": lambda: Attention(32, 4, num_kv_heads=2, rope=RopeConfig(8, scaling=PRoPE(0.5))),
    "mrope": lambda: Attention(32, 4, rope=MRoPE(RopeConfig(8, layout="half"), (2, 1, 1))),
    "axial": lambda: Attention(32, 4, rope=AxialRoPE(RopeConfig(8), 3)),
}


@pytest.mark.parametrize("name", sorted(ATTENTIONS))
def test_cached_decoding_equals_full_forward(name):
    torch.manual_seed(5)
    attn = ATTENTIONS[name]()
    if name == "t5":
        torch.nn.init.normal_(attn.score_bias.relative_attention_bias.weight)
    x = torch.randn(2, 12, 32)
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[0, :3] = 0  # left padding
    assert_decode_equals_full(attn, x, mask)
    assert_maskless_decode_equals_full(attn, x, mask)


@pytest.mark.parametrize("absolute", ["learned", "sinusoidal"])
def test_absolute_positions_in_transformer_decode_equals_full(absolute):
    torch.manual_seed(7)
    cfg = TransformerConfig(
        40, d_model=32, num_heads=4, layers=("nope", "nope"), absolute=absolute, max_positions=16
    )
    model = Transformer(cfg).eval()
    tokens = torch.randint(0, 40, (2, 10))
    full = model(tokens)
    cache = model.new_cache(2, 12)
    steps = [model(tokens[:, :6], cache=cache)] + [
        model(tokens[:, t : t + 1], cache=cache) for t in range(6, 10)
    ]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-4, atol=1e-4)


def test_learned_absolute_rejects_negative_positions():
    with pytest.raises(ValueError, match="position -1 is outside"):
        LearnedAbsolute(10, 4)(_pos([-1, 0]))


def test_transformer_learned_positions_outside_the_table_are_refused_the_same_way():
    model = Transformer(TransformerConfig(20, d_model=16, num_heads=2, absolute="learned", max_positions=8))
    tokens = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"position -1 is outside the learned table of max_positions=8 \(positions 0..7\)"):
        model(tokens, positions=_pos([-1, 0, 1, 2]))
    with pytest.raises(ValueError, match="position 8 is outside the learned table of max_positions=8"):
        model(tokens, positions=_pos([5, 6, 7, 8]))


def test_bias_modules_reject_float_positions():
    with pytest.raises(TypeError, match="q_positions must be an integer tensor"):
        ALiBiBias(4)(torch.zeros(1, 3), _pos([0, 1, 2]))
    with pytest.raises(ValueError, match=r"k_positions must be shaped \(B, T\)"):
        T5Bias(4)(_pos([0, 1, 2]), torch.arange(3))


@pytest.mark.parametrize("bias", [ALiBiBias(4), T5Bias(4)])
def test_bias_modules_reject_mismatched_batches(bias):
    with pytest.raises(ValueError, match=r"q_positions \(2, 3\) and k_positions \(3, 3\) must have the same batch"):
        bias(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 3, dtype=torch.long))
    assert bias(torch.zeros(1, 3, dtype=torch.long), torch.zeros(3, 5, dtype=torch.long)).shape == (3, 4, 3, 5)


def test_rope_modules_reject_non_config():
    with pytest.raises(TypeError, match="RopeConfig"):
        XPos(16)
    with pytest.raises(TypeError, match="RopeConfig"):
        MRoPE(16)


# --- axial 2-D -------------------------------------------------------------------------


def test_axial_module_equals_numpy_tables():
    from ropelab.positional import axial_rope_tables

    cfg = RopeConfig(16, layout="half")
    q, k = _qk(b=1, h=2, t=12, d=16)
    cos, sin = axial_rope_tables(cfg, 3, 4)
    got_q, got_k = AxialRoPE(cfg, 4)(q, k, torch.arange(12)[None])
    np.testing.assert_allclose(
        got_q.numpy(), ropelab.apply_rope(q.numpy(), cos, sin, layout="half"), atol=1e-6
    )
    np.testing.assert_allclose(
        got_k.numpy(), ropelab.apply_rope(k.numpy(), cos, sin, layout="half"), atol=1e-6
    )


# --- relative schemes see only relative positions ----------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=25, deadline=None)
@given(shift=st.integers(0, 10_000), start=st.integers(0, 50))
def test_bias_modules_depend_on_relative_positions_only(shift, start):
    torch.manual_seed(0)
    t5 = T5Bias(3, num_buckets=8, max_distance=20)
    torch.nn.init.normal_(t5.relative_attention_bias.weight)
    q, k = _pos(range(start, start + 5)), _pos(range(start + 7))
    for module in (ALiBiBias(3), t5):
        torch.testing.assert_close(module(q + shift, k + shift), module(q, k))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["t5", "xpos"])
def test_compiles_fullgraph(name):
    torch.manual_seed(8)
    attn = ATTENTIONS[name]()
    x = torch.randn(2, 10, 32)
    torch.testing.assert_close(
        torch.compile(attn, fullgraph=True)(x), attn(x), rtol=1e-4, atol=1e-5
    )
