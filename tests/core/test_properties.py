"""Property tests (hypothesis) for RoPE's identities, from the RoFormer paper and its algebra.

- <RoPE(q, m), RoPE(k, n)> depends only on n - m (RoFormer, eq. 16);
- norms are preserved, position 0 is the identity, sin -> -sin undoes the rotation;
- permute_for_layout maps an interleaved checkpoint to a half one with the same scores.

Shapes: q, k (D,); x (T, D).
"""

from __future__ import annotations

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402

from ropelab import RopeConfig, apply_rope, permute_for_layout, rope_tables  # noqa: E402
from ropelab.scaling import Linear, Llama3, YaRN  # noqa: E402

finite = st.floats(-10, 10, allow_nan=False, allow_subnormal=False)
layouts = st.sampled_from(["interleaved", "half"])


@st.composite
def configs(draw):
    """A RopeConfig with any head_dim, partial rotary, base and (unit-attention-factor) scheme."""
    half_rot = draw(st.integers(1, 16))
    rotary_dim = 2 * half_rot
    head_dim = rotary_dim + draw(st.integers(0, 6))
    theta = draw(st.sampled_from([100.0, 1e4, 5e5, 1e6]))
    scheme = draw(
        st.sampled_from(
            [None, Linear(4.0), YaRN(8.0, 256, attention_factor=1.0), Llama3(8.0, 1.0, 4.0, 512)]
        )
    )
    return RopeConfig(
        head_dim, theta=theta, rotary_dim=rotary_dim, layout=draw(layouts), scaling=scheme
    )


def _vec(draw, n):
    return draw(arrays(np.float64, (n,), elements=finite))


def _rope(cfg, x, positions):
    return apply_rope(np.asarray(x, dtype=np.float64), rope_tables(cfg, np.asarray(positions)))


@given(
    data=st.data(),
    cfg=configs(),
    m=st.integers(0, 2**31 - 10**6),
    shift=st.integers(-(10**6), 10**6),
    delta=st.integers(-5000, 5000),
)
def test_score_depends_only_on_offset(data, cfg, m, shift, delta):
    q = _vec(data.draw, cfg.head_dim)
    k = _vec(data.draw, cfg.head_dim)
    n = m + delta
    m2, n2 = m + shift, n + shift
    if min(m, n, m2, n2) < 0:
        m, n, m2, n2 = m + 10**6, n + 10**6, m2 + 10**6, n2 + 10**6
    rq, rk = _rope(cfg, q[None], [m])[0], _rope(cfg, k[None], [n])[0]
    sq, sk = _rope(cfg, q[None], [m2])[0], _rope(cfg, k[None], [n2])[0]
    scale = 1 + np.abs(q).sum() * np.abs(k).sum()
    # tables are exact to ~1e-7 at these positions, so the scores agree to that, relatively
    assert abs(float(rq @ rk) - float(sq @ sk)) <= 1e-6 * scale


@given(
    data=st.data(),
    cfg=configs(),
    positions=st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=4),
)
def test_norm_preserved(data, cfg, positions):
    x = data.draw(arrays(np.float64, (len(positions), cfg.head_dim), elements=finite))
    out = _rope(cfg, x, positions)
    np.testing.assert_allclose(
        np.linalg.norm(out, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-12, atol=1e-12
    )
    # and each pair separately keeps its length
    np.testing.assert_array_equal(out[:, cfg.rotary_dim :], x[:, cfg.rotary_dim :])


@given(data=st.data(), cfg=configs())
def test_position_zero_is_identity(data, cfg):
    x = _vec(data.draw, cfg.head_dim)[None]
    np.testing.assert_array_equal(_rope(cfg, x, [0]), x)


@given(
    data=st.data(),
    cfg=configs(),
    positions=st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=4),
)
def test_inverse_rotation_undoes(data, cfg, positions):
    x = data.draw(arrays(np.float64, (len(positions), cfg.head_dim), elements=finite))
    cos, sin = rope_tables(cfg, np.asarray(positions))
    there = apply_rope(x, cos, sin, layout=cfg.layout, rotary_dim=cfg.rotary_dim)
    back = apply_rope(there, cos, -sin, layout=cfg.layout, rotary_dim=cfg.rotary_dim)
    np.testing.assert_allclose(back, x, rtol=0, atol=1e-12 * (1 + np.abs(x).max()))


@given(
    data=st.data(),
    num_heads=st.integers(1, 3),
    half_rot=st.integers(1, 6),
    extra=st.integers(0, 4),
    T=st.integers(1, 5),
)
def test_permute_interleaved_to_half_keeps_scores(data, num_heads, half_rot, extra, T):
    rotary_dim = 2 * half_rot
    head_dim = rotary_dim + extra
    d_model = 6
    w = data.draw(arrays(np.float64, (2, num_heads * head_dim, d_model), elements=finite))
    x = data.draw(arrays(np.float64, (T, d_model), elements=finite))
    positions = np.asarray(data.draw(st.lists(st.integers(0, 10**6), min_size=T, max_size=T)))
    cos, sin = rope_tables(RopeConfig(head_dim, rotary_dim=rotary_dim), positions)

    def scores(wq, wk, layout):
        q = (x @ wq.T).reshape(T, num_heads, head_dim).transpose(1, 0, 2)  # (H, T, D)
        k = (x @ wk.T).reshape(T, num_heads, head_dim).transpose(1, 0, 2)
        q, k = apply_rope((q, k), cos, sin, layout=layout, rotary_dim=rotary_dim)
        return q @ k.transpose(0, 2, 1)  # (H, T, T)

    perm = [
        permute_for_layout(wi, num_heads, src="interleaved", dst="half", rotary_dim=rotary_dim)
        for wi in w
    ]
    ref = scores(w[0], w[1], "interleaved")
    np.testing.assert_allclose(
        scores(*perm, "half"), ref, rtol=1e-9, atol=1e-9 * (1 + np.abs(ref).max())
    )
    for wi, pi in zip(w, perm, strict=True):
        np.testing.assert_array_equal(
            permute_for_layout(pi, num_heads, src="half", dst="interleaved", rotary_dim=rotary_dim),
            wi,
        )
