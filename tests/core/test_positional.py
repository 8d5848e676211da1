"""ropelab.positional: references are the papers' formulas and transformers' code."""

import math

import numpy as np
import pytest

import ropelab
from ropelab.positional import (
    PRoPE,
    alibi_slopes,
    axial_rope_tables,
    mrope_axis_of_pair,
    mrope_tables,
    shaw_relative_index,
    sinusoidal,
    t5_relative_buckets,
    xpos_scales,
)

# --- sinusoidal ------------------------------------------------------------------------


def test_sinusoidal_equals_formula():
    positions = np.array([0, 1, 7, 100, 2047])
    d = 16
    out = sinusoidal(positions, d)
    for a, p in enumerate(positions):
        for i in range(d // 2):
            angle = p / 10000.0 ** (2 * i / d)
            assert out[a, 2 * i] == pytest.approx(math.sin(angle), abs=1e-12)
            assert out[a, 2 * i + 1] == pytest.approx(math.cos(angle), abs=1e-12)


@pytest.mark.parametrize("d_model", [0, 3, 7, -2])
def test_sinusoidal_rejects_odd_or_small_dims(d_model):
    with pytest.raises(ValueError, match="d_model"):
        sinusoidal(np.arange(4), d_model)


# --- ALiBi -----------------------------------------------------------------------------


@pytest.mark.parametrize("num_heads", range(1, 41))
def test_alibi_slopes_equal_bloom(num_heads):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers.models.bloom.modeling_bloom import _get_alibi_slopes

    ref = _get_alibi_slopes(num_heads, torch.device("cpu")).double().numpy()
    np.testing.assert_allclose(alibi_slopes(num_heads), ref, rtol=1e-6)


def test_alibi_slopes_power_of_two_is_papers_geometric_sequence():
    # Press et al.: for 8 heads the slopes are 1/2, 1/4, ..., 1/256
    np.testing.assert_allclose(alibi_slopes(8), 0.5 ** np.arange(1, 9))


@pytest.mark.parametrize("num_heads,error", [(0, ValueError), (-3, ValueError), (2.5, TypeError), (True, TypeError)])
def test_alibi_slopes_rejects_bad_head_counts(num_heads, error):
    with pytest.raises(error, match=f"num_heads must be an integer.*, got {num_heads!r}"):
        alibi_slopes(num_heads)


# --- T5 --------------------------------------------------------------------------------


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize(
    "num_buckets,max_distance", [(32, 128), (16, 64), (8, 20), (64, 1000), (4, 9)]
)
def test_t5_buckets_equal_transformers(bidirectional, num_buckets, max_distance):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers.models.t5.modeling_t5 import T5Attention

    rel = np.arange(-3 * max_distance, 3 * max_distance + 1)
    ref = T5Attention._relative_position_bucket(
        torch.as_tensor(rel),
        bidirectional=bidirectional,
        num_buckets=num_buckets,
        max_distance=max_distance,
    ).numpy()
    np.testing.assert_array_equal(
        t5_relative_buckets(
            rel, bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance
        ),
        ref,
    )


def test_t5_buckets_keep_shape_and_range():
    rel = np.arange(-300, 300).reshape(20, 30)
    b = t5_relative_buckets(rel)
    assert b.shape == rel.shape and b.min() == 0 and b.max() == 31


def test_t5_rejects_fewer_than_two_buckets():
    with pytest.raises(ValueError, match="num_buckets"):
        t5_relative_buckets(np.arange(3), bidirectional=False, num_buckets=1)


def test_t5_bidirectional_rejects_three_buckets():
    with pytest.raises(ValueError, match="num_buckets >= 4"):
        t5_relative_buckets(np.arange(3), num_buckets=3)


def test_t5_rejects_max_distance_inside_exact_range():
    with pytest.raises(ValueError, match="max_distance"):
        t5_relative_buckets(np.arange(3), num_buckets=32, max_distance=8)


def test_t5_rejects_float_positions():
    with pytest.raises(TypeError, match="integers"):
        t5_relative_buckets(np.arange(3.0))


# --- Shaw ------------------------------------------------------------------------------


def test_shaw_index_clips_key_minus_query():
    q = np.arange(6)
    k = np.arange(6)
    idx = shaw_relative_index(q, k, 2)
    for i in range(6):
        for j in range(6):
            assert idx[i, j] == min(max(j - i, -2), 2) + 2


def test_shaw_index_same_on_torch():
    torch = pytest.importorskip("torch")
    q = np.array([[3, 4, 5]])
    k = np.arange(6)[None]
    ref = shaw_relative_index(q, k, 3)
    got = shaw_relative_index(torch.as_tensor(q), torch.as_tensor(k), 3)
    np.testing.assert_array_equal(got.numpy(), ref)


def test_shaw_rejects_zero_clip():
    with pytest.raises(ValueError, match="clip"):
        shaw_relative_index(np.arange(3), np.arange(3), 0)


# --- xPos ------------------------------------------------------------------------------


def test_xpos_scales_follow_sun_et_al():
    # zeta_i = (2i/d + 0.4) / 1.4, scale = zeta ** (n / 512) (torchscale's XPOS)
    d = 8
    pos = np.array([-3, 0, 5, 1000])
    zeta = (np.arange(0, d, 2) + 0.4 * d) / (1.4 * d)
    ref = zeta[None, :] ** (pos[:, None] / 512)
    np.testing.assert_allclose(xpos_scales(pos, d), ref, rtol=1e-13)


def test_xpos_product_depends_only_on_distance():
    m, n, shift = np.array([40, 900]), np.array([3, 100]), 777
    a = xpos_scales(m, 16) / xpos_scales(n, 16)
    b = xpos_scales(m + shift, 16) / xpos_scales(n + shift, 16)
    np.testing.assert_allclose(a, b, rtol=1e-10)
    assert np.all(a < 1)  # queries after keys: decay


def test_xpos_rejects_odd_dim():
    with pytest.raises(ValueError, match="rotary_dim"):
        xpos_scales(np.arange(3), 7)


def test_xpos_rejects_bad_scale_base():
    with pytest.raises(ValueError, match="scale_base"):
        xpos_scales(np.arange(3), 8, scale_base=0)


# --- p-RoPE (a scaling scheme: tests in test_scaling.py) -------------------------------


def test_prope_is_importable_from_positional():
    assert PRoPE is ropelab.scaling.PRoPE


# --- axial 2-D -------------------------------------------------------------------------


def test_axial_equals_qwen2_vl_vision_rotary():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLVisionConfig
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLVisionRotaryEmbedding

    head_dim, rows, cols = 16, 3, 5
    cfg = Qwen2VLVisionConfig(embed_dim=head_dim * 2, num_heads=2)
    hf = Qwen2VLVisionRotaryEmbedding(cfg)
    r, c = np.divmod(np.arange(rows * cols), cols)
    ids = torch.as_tensor(np.stack([r, c], axis=-1))  # (N, 2): row, column
    cos_ref, sin_ref = hf(torch.zeros(1), ids)
    theta = cfg.rope_parameters["rope_theta"]
    cos, sin = axial_rope_tables(
        ropelab.RopeConfig(head_dim, theta=theta, layout="half"), rows, cols
    )
    np.testing.assert_allclose(cos, cos_ref[:, : head_dim // 2].double().numpy(), atol=1e-6)
    np.testing.assert_allclose(sin, sin_ref[:, : head_dim // 2].double().numpy(), atol=1e-6)


def test_axial_scores_depend_on_2d_offset_only():
    cfg = ropelab.RopeConfig(16)
    cos, sin = axial_rope_tables(cfg, 6, 6)
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=16), rng.normal(size=16)

    def score(a, b):  # patch a queries patch b
        qa = ropelab.apply_rope(q[None], cos[a : a + 1], sin[a : a + 1], layout=cfg.layout)
        kb = ropelab.apply_rope(k[None], cos[b : b + 1], sin[b : b + 1], layout=cfg.layout)
        return float((qa @ kb.T)[0, 0])

    # (1,1)->(3,2) and (2,3)->(4,4) share the offset (+2, +1)
    assert score(1 * 6 + 1, 3 * 6 + 2) == pytest.approx(score(2 * 6 + 3, 4 * 6 + 4), abs=1e-12)


def test_axial_rejects_rotary_dim_not_multiple_of_four():
    with pytest.raises(ValueError, match="divisible by 4"):
        axial_rope_tables(ropelab.RopeConfig(6), 2, 2)


# --- M-RoPE ----------------------------------------------------------------------------


def _hf_mrope(head_dim, theta, section, positions):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLTextConfig
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLRotaryEmbedding

    cfg = Qwen2VLTextConfig(
        hidden_size=head_dim * 2,
        num_attention_heads=2,
        num_key_value_heads=2,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": theta,
            "mrope_section": list(section),
        },
    )
    cos, sin = Qwen2VLRotaryEmbedding(cfg)(
        torch.zeros(1, dtype=torch.float32), torch.as_tensor(positions)
    )
    return cos.double().numpy(), sin.double().numpy()


def test_mrope_equals_qwen2_vl():
    head_dim, section = 32, (4, 6, 6)
    rng = np.random.default_rng(1)
    positions = rng.integers(0, 60, size=(3, 2, 7))  # (3, B, T)
    cos_ref, sin_ref = _hf_mrope(head_dim, 10000.0, section, positions)
    cos, sin = mrope_tables(ropelab.RopeConfig(head_dim, layout="half"), positions, section)
    assert cos.shape == (2, 7, head_dim // 2)
    # transformers rebuilds the half-layout table (..., D) as cat(table, table)
    np.testing.assert_allclose(cos, cos_ref[..., : head_dim // 2], atol=2e-5)
    np.testing.assert_allclose(sin, sin_ref[..., : head_dim // 2], atol=2e-5)
    np.testing.assert_allclose(cos, cos_ref[..., head_dim // 2 :], atol=2e-5)


def test_mrope_text_tokens_equal_plain_rope():
    cfg = ropelab.RopeConfig(32)
    t = np.arange(11)
    cos, sin = mrope_tables(cfg, np.stack([t, t, t]), (4, 6, 6))
    cos_ref, sin_ref = ropelab.rope_tables(cfg, t)
    np.testing.assert_array_equal(cos, cos_ref)
    np.testing.assert_array_equal(sin, sin_ref)


def test_mrope_axis_of_pair():
    np.testing.assert_array_equal(mrope_axis_of_pair((1, 2, 3), 6), [0, 1, 1, 2, 2, 2])


def test_mrope_rejects_sections_not_summing_to_pairs():
    with pytest.raises(ValueError, match="must sum to rotary_dim / 2 = 16"):
        mrope_tables(ropelab.RopeConfig(32), np.zeros((3, 4), dtype=int), (4, 6, 4))


def test_mrope_rejects_positions_without_three_axes():
    with pytest.raises(ValueError, match=r"\(3, \.\.\., T\)"):
        mrope_tables(ropelab.RopeConfig(32), np.zeros((2, 4), dtype=int), (4, 6, 6))


def test_mrope_rejects_negative_section():
    with pytest.raises(ValueError, match=r"mrope_section\[1\] must be an integer >= 0, got -2"):
        mrope_axis_of_pair((10, -2, 8), 16)
    with pytest.raises(TypeError, match=r"mrope_section\[0\] must be an integer, got 10.0"):
        mrope_axis_of_pair((10.0, 8), 18)
    with pytest.raises(TypeError, match="mrope_section must be a list of integers, got '16'"):
        mrope_axis_of_pair("16", 16)


def test_xpos_rejects_bad_gamma():
    with pytest.raises(ValueError, match="gamma"):
        xpos_scales(np.arange(3), 8, gamma=0.0)


def test_shaw_relative_index_takes_unsigned_positions_without_wrapping():
    """k - q of unsigned positions would wrap (uint32 1 - 2 = 2**32 - 1); positions are
    taken as int64, lists too; non-integers are refused by name."""
    want = np.array([[2, 3, 4], [1, 2, 3], [0, 1, 2]])
    for dtype in (np.uint8, np.uint32, np.int64):
        np.testing.assert_array_equal(shaw_relative_index(np.arange(3, dtype=dtype), np.arange(3, dtype=dtype), 2), want)
    np.testing.assert_array_equal(shaw_relative_index([0, 1, 2], [0, 1, 2], 2), want)
    with pytest.raises(TypeError, match="q_pos must be integers, got dtype float64"):
        shaw_relative_index(np.arange(3.0), np.arange(3), 2)
    torch = pytest.importorskip("torch")
    got = shaw_relative_index(torch.arange(3, dtype=torch.uint8), torch.arange(3, dtype=torch.uint8), 2)
    np.testing.assert_array_equal(got.numpy(), want)
    with pytest.raises(TypeError, match="k_pos must be an integer tensor, got dtype torch.float32"):
        shaw_relative_index(torch.arange(3), torch.arange(3.0), 2)
