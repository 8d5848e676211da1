"""ropelab.reference.attention against attention written out loop by loop (and torch's SDPA)."""

import math

import numpy as np
import pytest

from ropelab.reference import attention, causal_mask


def loop_attention(q, k, v, *, causal, scale=None, visible=None):
    """Eq. 1 of Vaswani et al. one query at a time, with math.exp; kv head = h // (H // K)."""
    *lead, H, Tq, D = q.shape
    K, Tk, Dv = v.shape[-3:]
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    out = np.zeros((*lead, H, Tq, Dv))
    for idx in np.ndindex(*lead):
        for h in range(H):
            g = h // (H // K)
            for i in range(Tq):
                keys = [
                    j
                    for j in range(Tk)
                    if (not causal or j <= i + Tk - Tq) and (visible is None or visible[idx + (h, i, j)])
                ]
                if not keys:
                    continue
                s = {j: scale * sum(q[idx + (h, i, d)] * k[idx + (g, j, d)] for d in range(D)) for j in keys}
                m = max(s.values())
                w = {j: math.exp(s[j] - m) for j in keys}
                z = sum(w.values())
                for j in keys:
                    out[idx + (h, i)] += w[j] / z * v[idx + (g, j)]
    return out


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("shape", [((2, 3, 5, 4), (2, 3, 5, 4)), ((1, 2, 3, 4), (1, 2, 6, 4)), ((4, 1, 4), (4, 1, 4))])
def test_matches_loops(causal, shape):
    rng = np.random.default_rng(0)
    qs, ks = shape
    q, k, v = rng.normal(size=qs), rng.normal(size=ks), rng.normal(size=ks)
    got = attention(q, k, v, causal=causal)
    np.testing.assert_allclose(got, loop_attention(q, k, v, causal=causal), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kv_heads", [1, 2])
def test_grouped_query_heads(kv_heads):
    rng = np.random.default_rng(1)
    q = rng.normal(size=(2, 4, 5, 3))
    k, v = rng.normal(size=(2, kv_heads, 5, 3)), rng.normal(size=(2, kv_heads, 5, 2))
    got = attention(q, k, v, causal=True)
    np.testing.assert_allclose(got, loop_attention(q, k, v, causal=True), rtol=1e-12, atol=1e-12)


def test_scale_and_boolean_mask():
    rng = np.random.default_rng(2)
    q, k, v = (rng.normal(size=(2, 2, 4, 3)) for _ in range(3))
    visible = rng.random(size=(2, 2, 4, 4)) < 0.6
    visible[..., 0] = True
    got = attention(q, k, v, causal=False, mask=visible, scale=0.3)
    ref = loop_attention(q, k, v, causal=False, scale=0.3, visible=visible)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_additive_mask_equals_boolean_mask():
    rng = np.random.default_rng(3)
    q, k, v = (rng.normal(size=(1, 2, 5, 4)) for _ in range(3))
    visible = rng.random(size=(5, 5)) < 0.5
    np.fill_diagonal(visible, True)
    additive = np.where(visible, 0.0, -np.inf)
    np.testing.assert_allclose(
        attention(q, k, v, causal=True, mask=additive),
        attention(q, k, v, causal=True, mask=visible),
        rtol=1e-13,
        atol=1e-13,
    )


def test_fully_masked_query_gives_zeros():
    rng = np.random.default_rng(4)
    q, k, v = (rng.normal(size=(1, 1, 3, 2)) for _ in range(3))
    visible = np.ones((3, 3), dtype=bool)
    visible[1] = False
    out = attention(q, k, v, causal=False, mask=visible)
    assert np.all(out[..., 1, :] == 0.0)
    assert np.all(np.isfinite(out))


def test_softmax_is_stable_for_huge_scores():
    rng = np.random.default_rng(5)
    q, k, v = (rng.normal(size=(1, 2, 4, 3)) for _ in range(3))
    # exp(1e4) overflows float64; the result must equal the softmax of the unscaled
    # scores times 1e4 computed with loops (which subtract the max the same way)
    got = attention(q * 1e4, k, v, causal=True)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, loop_attention(q * 1e4, k, v, causal=True), rtol=1e-10, atol=1e-10)


def test_causal_suffix_equals_rows_of_full_attention():
    """A KV cache identity: the last Tq queries over all keys are rows of the full pass."""
    rng = np.random.default_rng(6)
    q, k, v = (rng.normal(size=(2, 3, 7, 4)) for _ in range(3))
    full = attention(q, k, v, causal=True)
    tail = attention(q[..., 4:, :], k, v, causal=True)
    np.testing.assert_allclose(tail, full[..., 4:, :], rtol=1e-13, atol=1e-13)


def test_causal_mask_alignment():
    np.testing.assert_array_equal(causal_mask(3, 3), np.tril(np.ones((3, 3), dtype=bool)))
    np.testing.assert_array_equal(causal_mask(2, 4), np.array([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=bool))


def test_matches_torch_sdpa_in_float64():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    q, k, v = (rng.normal(size=(2, 4, 6, 8)) for _ in range(3))
    for causal in (True, False):
        ref = torch.nn.functional.scaled_dot_product_attention(
            *(torch.from_numpy(a) for a in (q, k, v)), is_causal=causal
        ).numpy()
        np.testing.assert_allclose(attention(q, k, v, causal=causal), ref, rtol=1e-12, atol=1e-12)


# --- errors ---------------------------------------------------------------------------------


def _qkv(q=(1, 2, 3, 4), k=(1, 2, 3, 4), v=(1, 2, 3, 4)):
    return np.zeros(q), np.zeros(k), np.zeros(v)


def test_error_head_dim_mismatch():
    with pytest.raises(ValueError, match="head dim"):
        attention(*_qkv(k=(1, 2, 3, 5)))


def test_error_value_shape():
    with pytest.raises(ValueError, match="v must be shaped"):
        attention(*_qkv(v=(1, 2, 4, 4)))


def test_error_kv_heads_do_not_divide():
    with pytest.raises(ValueError, match="kv heads"):
        attention(*_qkv(q=(1, 3, 3, 4), k=(1, 2, 3, 4), v=(1, 2, 3, 4)))


def test_error_mask_shape():
    with pytest.raises(ValueError, match="mask of shape"):
        attention(*_qkv(), mask=np.ones((4, 3), dtype=bool))


def test_error_mask_dtype():
    with pytest.raises(TypeError, match="mask must be boolean or real"):
        attention(*_qkv(), mask=np.ones((3, 3), dtype=complex))


def test_error_too_few_dims():
    with pytest.raises(ValueError, match=r"\(\.\.\., heads, T, D\)"):
        attention(np.zeros((3, 4)), np.zeros((3, 4)), np.zeros((3, 4)))


def test_error_non_numeric():
    with pytest.raises(TypeError, match="real-valued"):
        attention(np.zeros((1, 2, 2), dtype=bool), np.zeros((1, 2, 2)), np.zeros((1, 2, 2)))


def test_error_scale():
    with pytest.raises(ValueError, match="scale"):
        attention(*_qkv(), scale=float("nan"))


def test_error_causal_not_bool():
    with pytest.raises(TypeError, match="causal"):
        attention(*_qkv(), causal="yes")


def test_error_causal_mask_sizes():
    with pytest.raises(ValueError, match="tq"):
        causal_mask(-1, 3)
