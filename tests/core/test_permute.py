"""permute_for_layout: a checkpoint made for one pairing gives identical attention under the other.

Shapes: x (T, d_model); W (H * D, d_model); per-head q, k (H, T, D); scores (H, T, T).
"""

from __future__ import annotations

import numpy as np
import pytest

from ropelab import RopeConfig, apply_rope, permute_for_layout, rope_tables


def rope_scores(x, wq, wk, num_heads, cos, sin, layout, bq=None, bk=None):
    """Per-head attention logits q . k after RoPE, float64."""
    T = x.shape[0]
    q = x @ wq.T + (0 if bq is None else bq)
    k = x @ wk.T + (0 if bk is None else bk)
    q = q.reshape(T, num_heads, -1).transpose(1, 0, 2)  # (H, T, D)
    k = k.reshape(T, num_heads, -1).transpose(1, 0, 2)
    r = 2 * cos.shape[-1]  # partial rotary when r < D
    q = apply_rope(q, cos, sin, layout=layout, rotary_dim=r)
    k = apply_rope(k, cos, sin, layout=layout, rotary_dim=r)
    return q @ k.transpose(0, 2, 1)  # (H, T, T)


@pytest.mark.parametrize("rotary_dim", [None, 4, 12])
@pytest.mark.parametrize("src,dst", [("interleaved", "half"), ("half", "interleaved")])
def test_scores_identical_after_permutation(rng, rotary_dim, src, dst):
    num_heads, head_dim, d_model, T = 3, 16, 24, 7
    cfg = RopeConfig(head_dim, rotary_dim=rotary_dim)
    cos, sin = rope_tables(cfg, rng.integers(0, 10**5, size=T))
    x = rng.standard_normal((T, d_model))
    wq, wk = rng.standard_normal((2, num_heads * head_dim, d_model))
    bq, bk = rng.standard_normal((2, num_heads * head_dim))
    before = rope_scores(x, wq, wk, num_heads, cos, sin, src, bq, bk)
    r = cfg.rotary_dim
    pq, pk = (permute_for_layout(w, num_heads, src=src, dst=dst, rotary_dim=r) for w in (wq, wk))
    pbq, pbk = (permute_for_layout(b, num_heads, src=src, dst=dst, rotary_dim=r) for b in (bq, bk))
    after = rope_scores(x, pq, pk, num_heads, cos, sin, dst, pbq, pbk)
    np.testing.assert_allclose(after, before, rtol=1e-12, atol=1e-10)
    # and without permuting, the other layout gives different scores (the test can fail)
    assert not np.allclose(rope_scores(x, wq, wk, num_heads, cos, sin, dst, bq, bk), before)
    # round trip is exact
    back = permute_for_layout(pq, num_heads, src=dst, dst=src, rotary_dim=r)
    np.testing.assert_array_equal(back, wq)
    # rows past rotary_dim never move
    per_head = pq.reshape(num_heads, head_dim, d_model)
    np.testing.assert_array_equal(per_head[:, r:], wq.reshape(num_heads, head_dim, d_model)[:, r:])


def test_interleaved_to_half_order():
    # one head of D=4: interleaved rows (a0, b0, a1, b1) become half rows (a0, a1, b0, b1)
    w = np.arange(4.0)[:, None]
    np.testing.assert_array_equal(
        permute_for_layout(w, 1, src="interleaved", dst="half")[:, 0], [0, 2, 1, 3]
    )
    np.testing.assert_array_equal(
        permute_for_layout(w, 1, src="half", dst="interleaved")[:, 0], [0, 2, 1, 3]
    )
    w6 = np.arange(6.0)
    np.testing.assert_array_equal(
        permute_for_layout(w6, 1, src="interleaved", dst="half"), [0, 2, 4, 1, 3, 5]
    )
    np.testing.assert_array_equal(
        permute_for_layout(w6, 1, src="half", dst="interleaved"), [0, 3, 1, 4, 2, 5]
    )


def test_same_layout_is_identity(rng):
    w = rng.standard_normal((8, 3))
    np.testing.assert_array_equal(permute_for_layout(w, 2, src="half", dst="half"), w)


def test_torch_tensor(rng):
    torch = pytest.importorskip("torch")
    w = rng.standard_normal((2 * 8, 5))
    got = permute_for_layout(torch.from_numpy(w), 2, src="interleaved", dst="half")
    assert isinstance(got, torch.Tensor)
    np.testing.assert_array_equal(
        got.numpy(), permute_for_layout(w, 2, src="interleaved", dst="half")
    )


# ---------------------------------------------------------------- errors


def test_rows_not_divisible_by_heads():
    with pytest.raises(ValueError, match=r"10 rows.*num_heads=3"):
        permute_for_layout(np.zeros((10, 2)), 3, src="interleaved", dst="half")


def test_bad_rotary_dim():
    with pytest.raises(ValueError, match=r"rotary_dim must be an integer >= 2 and <= 4, got 5"):
        permute_for_layout(np.zeros((8, 2)), 2, src="interleaved", dst="half", rotary_dim=5)


def test_bad_num_heads():
    with pytest.raises(ValueError, match=r"num_heads.*0"):
        permute_for_layout(np.zeros((8, 2)), 0, src="interleaved", dst="half")


def test_unknown_layout():
    with pytest.raises(ValueError, match=r"'gptj'"):
        permute_for_layout(np.zeros((8, 2)), 2, src="gptj", dst="half")
