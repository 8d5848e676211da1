"""Linear attention: chunked causal form vs an explicit recurrence, Katharopoulos, RoFormer eq. 19."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ropelab_testing import assert_maskless_decode_equals_full  # noqa: E402

import ropelab  # noqa: E402
from ropelab.torch.linear_attention import (  # noqa: E402
    LinearAttentionState,
    linear_attention,
    linear_attention_step,
)


def _phi(x):  # elu(x) + 1 in float64 numpy
    return np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0)))


def _rot(x, cos, sin, layout):
    return ropelab.apply_rope(x, cos, sin, layout=layout, rotary_dim=2 * cos.shape[-1])  # partial or not


def _recurrence(q, k, v, cos, sin, layout, eps):
    """RoFormer eq. 19 as an RNN, token by token, float64 numpy, shapes (B, H, T, .)."""
    B, H, T, D = q.shape
    E = v.shape[-1]
    fq, fk = _phi(q), _phi(k)
    rq = fq if cos is None else _rot(fq, cos, sin, layout)
    rk = fk if cos is None else _rot(fk, cos, sin, layout)
    S = np.zeros((B, H, D, E))
    z = np.zeros((B, H, D))
    out = np.zeros((B, H, T, E))
    for t in range(T):
        S += rk[:, :, t, :, None] * v[:, :, t, None, :]
        z += fk[:, :, t]
        num = np.einsum("bhd,bhde->bhe", rq[:, :, t], S)
        den = np.einsum("bhd,bhd->bh", fq[:, :, t], z)[..., None]
        out[:, :, t] = num / (den + eps)
    return out


def _data(B=2, H=3, T=37, D=8, E=5, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(B, H, T, D)),
        rng.normal(size=(B, H, T, D)),
        rng.normal(size=(B, H, T, E)),
    )


def _t(x):
    return torch.as_tensor(x, dtype=torch.float64)


@pytest.mark.parametrize("layout", ["interleaved", "half"])
@pytest.mark.parametrize("chunk_size", [1, 5, 16, 64])
def test_causal_with_rope_equals_recurrence(layout, chunk_size):
    q, k, v = _data()
    cos, sin = ropelab.rope_tables(ropelab.RopeConfig(8, theta=100.0), np.arange(q.shape[2]))
    ref = _recurrence(q, k, v, cos, sin, layout, 1e-6)
    got = linear_attention(
        _t(q), _t(k), _t(v), cos=cos, sin=sin, layout=layout, chunk_size=chunk_size
    )
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-12)


def test_partial_rotary_equals_recurrence():
    q, k, v = _data(D=12)
    cos, sin = ropelab.rope_tables(ropelab.RopeConfig(12, rotary_dim=8), np.arange(q.shape[2]))
    ref = _recurrence(q, k, v, cos, sin, "half", 1e-6)
    got = linear_attention(_t(q), _t(k), _t(v), cos=cos, sin=sin, layout="half", chunk_size=8)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-12)


def _katharopoulos(q, k, v, causal, eps):
    """The quadratic form of their eq. 4-6: (phi(Q) phi(K)^T masked) V, row-normalised."""
    scores = np.einsum("bhid,bhjd->bhij", _phi(q), _phi(k))
    if causal:
        scores = np.tril(scores)
    return np.einsum("bhij,bhje->bhie", scores, v) / (scores.sum(-1, keepdims=True) + eps)


@pytest.mark.parametrize("causal", [True, False])
def test_without_rotation_equals_katharopoulos(causal):
    q, k, v = _data(T=29)
    ref = _katharopoulos(q, k, v, causal, 1e-6)
    got = linear_attention(_t(q), _t(k), _t(v), causal=causal, chunk_size=8)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-12)


def test_non_causal_with_rope_equals_eq19_quadratic_form():
    q, k, v = _data(T=11)
    cos, sin = ropelab.rope_tables(ropelab.RopeConfig(8), np.arange(11))
    rq, rk = _rot(_phi(q), cos, sin, "interleaved"), _rot(_phi(k), cos, sin, "interleaved")
    num = np.einsum("bhij,bhje->bhie", np.einsum("bhid,bhjd->bhij", rq, rk), v)
    den = np.einsum("bhid,bhjd->bhij", _phi(q), _phi(k)).sum(-1, keepdims=True)
    got = linear_attention(_t(q), _t(k), _t(v), cos=cos, sin=sin, layout="interleaved", causal=False)
    np.testing.assert_allclose(got.numpy(), num / (den + 1e-6), rtol=1e-10, atol=1e-12)


def test_numerator_depends_on_relative_positions_only():
    # shifting every position by the same offset leaves eq. 19 unchanged
    q, k, v = _data(T=20)
    cfg = ropelab.RopeConfig(8, theta=50.0)
    outs = []
    for offset in (0, 1234):
        cos, sin = ropelab.rope_tables(cfg, np.arange(20) + offset)
        outs.append(linear_attention(_t(q), _t(k), _t(v), cos=cos, sin=sin, layout="interleaved").numpy())
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("with_rope", [True, False])
def test_step_equals_parallel(with_rope):
    q, k, v = _data(T=23)
    cfg = ropelab.RopeConfig(8, layout="half")
    cos, sin = ropelab.rope_tables(cfg, np.arange(23)) if with_rope else (None, None)
    full = linear_attention(_t(q), _t(k), _t(v), cos=cos, sin=sin, layout="half", chunk_size=4)
    state = None
    for t in range(23):
        c = None if cos is None else cos[t : t + 1]
        s = None if sin is None else sin[t : t + 1]
        out, state = linear_attention_step(
            state,
            _t(q[:, :, t : t + 1]),
            _t(k[:, :, t : t + 1]),
            _t(v[:, :, t : t + 1]),
            cos=c,
            sin=s,
            layout="half",
        )
        np.testing.assert_allclose(
            out.numpy(), full[:, :, t : t + 1].numpy(), rtol=1e-10, atol=1e-12
        )
    assert isinstance(state, LinearAttentionState)


def test_float32_and_bfloat16_inputs_keep_dtype_and_are_close():
    q, k, v = _data(T=64)
    ref = _katharopoulos(q, k, v, True, 1e-6)
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 5e-2)):
        got = linear_attention(*(torch.as_tensor(x).to(dtype) for x in (q, k, v)), chunk_size=16)
        assert got.dtype == dtype
        np.testing.assert_allclose(got.double().numpy(), ref, rtol=tol, atol=tol)


def test_gradients_match_float64_reference():
    q, k, v = (_t(x).requires_grad_() for x in _data(T=9, B=1, H=1))
    cos, sin = ropelab.rope_tables(ropelab.RopeConfig(8), np.arange(9))

    def f(q, k, v):
        return linear_attention(
            q, k, v, cos=torch.as_tensor(cos), sin=torch.as_tensor(sin), layout="interleaved", chunk_size=4
        )

    assert torch.autograd.gradcheck(f, (q, k, v))


def test_rejects_mismatched_shapes():
    q, k, v = (_t(x) for x in _data())
    with pytest.raises(ValueError, match="q and k"):
        linear_attention(q, k[:, :, :5], v)
    with pytest.raises(ValueError, match=r"\(B, H, T, D\)"):
        linear_attention(q[0], k[0], v[0])


def test_rejects_cos_without_sin():
    q, k, v = (_t(x) for x in _data())
    cos, _ = ropelab.rope_tables(ropelab.RopeConfig(8), np.arange(q.shape[2]))
    with pytest.raises(ValueError, match="both cos and sin"):
        linear_attention(q, k, v, cos=cos)


def test_rejects_bad_chunk_size():
    q, k, v = (_t(x) for x in _data())
    with pytest.raises(ValueError, match="chunk_size must be an integer >= 1, got 0"):
        linear_attention(q, k, v, chunk_size=0)
    with pytest.raises(TypeError, match="chunk_size must be an integer, got 4.0"):
        linear_attention(q, k, v, chunk_size=4.0)


def test_tables_need_a_layout():
    q, k, v = (_t(x) for x in _data())
    cos, sin = ropelab.rope_tables(ropelab.RopeConfig(8), np.arange(q.shape[2]))
    with pytest.raises(TypeError, match="cos and sin need layout="):
        linear_attention(q, k, v, cos=cos, sin=sin)
    with pytest.raises(TypeError, match="cos and sin need layout="):
        linear_attention_step(None, q[:, :, :1], k[:, :, :1], v[:, :, :1], cos=cos[:1], sin=sin[:1])


def test_step_rejects_more_than_one_token():
    q, k, v = (_t(x) for x in _data())
    with pytest.raises(ValueError, match="one token"):
        linear_attention_step(None, q, k, v)


def test_rejects_negative_eps():
    q, k, v = (_t(x) for x in _data())
    with pytest.raises(ValueError, match="eps"):
        linear_attention(q, k, v, eps=-1.0)


def test_step_rejects_state_of_other_shape():
    q, k, v = (_t(x[:, :, :1]) for x in _data())
    _, state = linear_attention_step(None, q, k, v)
    with pytest.raises(ValueError, match="state shapes"):
        linear_attention_step(state, q[:1], k[:1], v[:1])


def test_rejects_integer_inputs():
    q, k, v = (_t(x) for x in _data())
    with pytest.raises(TypeError, match="floating point"):
        linear_attention(q.long(), k, v)


# --- prefix states, key masks, the attention layer ----------------------------------------

from ropelab.torch import KVCache  # noqa: E402
from ropelab.torch.linear_attention import LinearAttention, linear_attention_state  # noqa: E402


def test_prefill_state_then_continue_equals_full():
    q, k, v = (_t(x) for x in _data(T=30))
    cos, sin = ropelab.rope_tables(ropelab.RopeConfig(8), np.arange(30))
    lay = "interleaved"
    full, state_full = linear_attention(q, k, v, cos=cos, sin=sin, layout=lay, chunk_size=8, return_state=True)
    state = linear_attention_state(k[:, :, :13], v[:, :, :13], cos=cos[:13], sin=sin[:13], layout=lay)
    rest = linear_attention(
        q[:, :, 13:], k[:, :, 13:], v[:, :, 13:], cos=cos[13:], sin=sin[13:], layout=lay, initial_state=state
    )
    torch.testing.assert_close(rest, full[:, :, 13:], rtol=1e-10, atol=1e-12)
    ref_kv = np.einsum("bhtd,bhte->bhde", _rot(_phi(k.numpy()), cos, sin, "interleaved"), v.numpy())
    np.testing.assert_allclose(state_full.kv.numpy(), ref_kv, rtol=1e-10)
    np.testing.assert_allclose(state_full.k_sum.numpy(), _phi(k.numpy()).sum(2), rtol=1e-10)


def test_key_mask_equals_dropping_the_keys():
    q, k, v = (_t(x) for x in _data(B=1, T=12))
    keep = torch.ones(1, 12, dtype=torch.bool)
    keep[0, [2, 5, 6]] = False
    got = linear_attention(q, k, v, causal=False, key_mask=keep)
    kept = keep[0].numpy()
    scores = np.einsum("bhid,bhjd->bhij", _phi(q.numpy()), _phi(k.numpy()[:, :, kept]))
    ref = scores @ v.numpy()[:, :, kept] / (scores.sum(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10)


def test_layer_equals_functional_form():
    torch.manual_seed(0)
    layer = LinearAttention(32, 4, num_kv_heads=2, rope=ropelab.RopeConfig(8, layout="half"))
    x = torch.randn(2, 10, 32, dtype=torch.float64)
    layer = layer.double()
    q = layer.q_proj(x).view(2, 10, 4, 8).transpose(1, 2)
    k = layer.k_proj(x).view(2, 10, 2, 8).transpose(1, 2).repeat_interleave(2, dim=1)
    v = layer.v_proj(x).view(2, 10, 2, 8).transpose(1, 2).repeat_interleave(2, dim=1)
    cos, sin = ropelab.rope_tables(ropelab.RopeConfig(8, layout="half"), np.arange(10))
    y = linear_attention(q, k, v, cos=cos, sin=sin, layout="half")
    ref = layer.o_proj(y.transpose(1, 2).reshape(2, 10, 32))
    torch.testing.assert_close(layer(x), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("rope", [None, ropelab.RopeConfig(8)])
def test_layer_cached_decoding_equals_full_forward(rope):
    torch.manual_seed(1)
    layer = LinearAttention(32, 4, num_kv_heads=2, rope=rope, block_size=4)
    x = torch.randn(2, 12, 32)
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[0, :3] = 0  # left padding
    full = layer(x, attention_mask=mask)
    cache = KVCache(2, 2, 16, 8)
    steps = [layer(x[:, :5], cache=cache, attention_mask=mask[:, :5])]
    for start, stop in ((5, 6), (6, 9), (9, 10), (10, 12)):
        steps.append(layer(x[:, start:stop], cache=cache, attention_mask=mask[:, :stop]))
    rows = mask.bool()
    torch.testing.assert_close(torch.cat(steps, 1)[rows], full[rows], rtol=1e-5, atol=1e-5)
    assert_maskless_decode_equals_full(layer, x, mask)


def test_layer_rejects_softmax_options_and_rope_modules():
    with pytest.raises(ValueError, match="no window option"):
        LinearAttention(32, 4, window=8)
    with pytest.raises(TypeError, match="None or a RopeConfig"):
        LinearAttention(32, 4, rope=torch.nn.Identity())


def test_key_mask_of_wrong_shape():
    q, k, v = (_t(x) for x in _data())
    with pytest.raises(ValueError, match="key_mask"):
        linear_attention(q, k, v, key_mask=torch.ones(3, 3))


def test_long_inputs_go_by_segments_with_the_same_result(monkeypatch):
    import importlib

    # the module (ropelab.torch may export a function of the same name)
    la = importlib.import_module("ropelab.torch.linear_attention")

    q, k, v = _data(T=40)
    cos, sin = ropelab.rope_tables(ropelab.RopeConfig(8), np.arange(40))
    ref = _recurrence(q, k, v, cos, sin, "interleaved", 1e-6)
    monkeypatch.setattr(la, "_SEGMENT", 7)
    mask = torch.ones(2, 40, dtype=torch.bool)
    got, state = linear_attention(
        _t(q), _t(k), _t(v), cos=cos, sin=sin, layout="interleaved", chunk_size=3, key_mask=mask, return_state=True
    )
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(state.k_sum.numpy(), _phi(k).sum(2), rtol=1e-10)


def test_layer_checks_the_mask_shape():
    """The subclass with its own score path shares Attention's input checks."""
    x = torch.randn(2, 5, 16)
    with pytest.raises(ValueError, match=r"attention_mask must be shaped \(B, S\) = \(2, 5\)"):
        LinearAttention(16, 2)(x, attention_mask=torch.ones(2, 4, dtype=torch.long))
