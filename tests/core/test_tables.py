"""rope_tables: exact cos/sin at any position below 2**31, against a 50-digit mpmath reference.

Shapes: positions any shape P; tables P + (R/2,).
"""

from __future__ import annotations

import numpy as np
import pytest

from ropelab import RopeConfig, rope_tables
from ropelab.scaling import DynamicNTK, LongRoPE, YaRN

mpmath = pytest.importorskip("mpmath")

POSITIONS = [0, 1, 2, 1000, 10**6, 10**7, 2**24 + 1, 2**30 + 12345, 2**31 - 2, 2**31 - 1]


def _positions(seed):
    rand = np.random.default_rng(seed).integers(0, 2**31, size=6)
    return np.array(POSITIONS + [int(v) for v in rand], dtype=np.int64)


def mp_tables(positions, inv_freq_mp):
    """cos/sin of p * f at 50 digits; inv_freq_mp is a list of mpf."""
    with mpmath.workdps(50):
        cos = np.array([[float(mpmath.cos(int(p) * f)) for f in inv_freq_mp] for p in positions])
        sin = np.array([[float(mpmath.sin(int(p) * f)) for f in inv_freq_mp] for p in positions])
    return cos, sin


@pytest.mark.parametrize("rotary_dim,theta", [(64, 1e4), (96, 5e5), (128, 1e4), (128, 5e5)])
def test_exact_against_mpmath(rotary_dim, theta):
    """The true theta ** (-2i/R) at 50 digits: error <= 1e-6 for every position < 2**31."""
    positions = _positions(rotary_dim)
    with mpmath.workdps(50):
        exact = [
            mpmath.mpf(theta) ** (mpmath.mpf(-2 * i) / rotary_dim) for i in range(rotary_dim // 2)
        ]
    ref_cos, ref_sin = mp_tables(positions, exact)
    cos, sin = rope_tables(RopeConfig(rotary_dim, theta=theta), positions)
    assert cos.dtype == np.float64 and cos.shape == (len(positions), rotary_dim // 2)
    assert np.max(np.abs(cos - ref_cos)) <= 1e-6
    assert np.max(np.abs(sin - ref_sin)) <= 1e-6


def test_angle_product_is_exact_for_the_float64_inv_freq():
    """Given the float64 inv_freq, the angle p * f is formed exactly: error ~1e-15, not ~1e-7."""
    cfg = RopeConfig(128, theta=5e5)
    positions = _positions(7)
    with mpmath.workdps(50):
        exact = [mpmath.mpf(float(f)) for f in cfg.inv_freq()]
    ref_cos, ref_sin = mp_tables(positions, exact)
    cos, sin = rope_tables(cfg, positions)
    assert np.max(np.abs(cos - ref_cos)) <= 1e-14
    assert np.max(np.abs(sin - ref_sin)) <= 1e-14


def test_scaled_tables_carry_attention_factor():
    cfg = RopeConfig(64, theta=1e4, scaling=YaRN(4.0, 2048, attention_factor=1.3))
    positions = np.array([0, 5, 2**31 - 1])
    with mpmath.workdps(50):
        exact = [mpmath.mpf(float(f)) for f in cfg.inv_freq()]
    ref_cos, ref_sin = mp_tables(positions, exact)
    cos, sin = rope_tables(cfg, positions)
    np.testing.assert_allclose(cos, 1.3 * ref_cos, rtol=0, atol=1e-14)
    np.testing.assert_allclose(sin, 1.3 * ref_sin, rtol=0, atol=1e-14)


def test_shapes_follow_positions():
    cfg = RopeConfig(16, rotary_dim=8)
    positions = np.arange(12).reshape(3, 4)
    cos, sin = rope_tables(cfg, positions)
    assert cos.shape == sin.shape == (3, 4, 4)
    np.testing.assert_array_equal(cos[1], rope_tables(cfg, np.arange(4, 8))[0])
    assert rope_tables(cfg, 5)[0].shape == (4,)  # a scalar position


def test_float_positions_match_integer_positions():
    cfg = RopeConfig(32)
    a = rope_tables(cfg, np.arange(0, 5000, 7))
    b = rope_tables(cfg, np.arange(0, 5000, 7).astype(np.float64))
    np.testing.assert_array_equal(a[0], b[0])


def test_dynamic_schemes_read_seq_len_from_positions():
    # DynamicNTK grows with max(positions) + 1 unless seq_len is given
    cfg = RopeConfig(32, scaling=DynamicNTK(2.0, 100))
    positions = np.arange(300)
    cos, _ = rope_tables(cfg, positions)
    expect = np.cos(positions[:, None] * cfg.inv_freq(300)[None, :])
    np.testing.assert_allclose(cos, expect, atol=1e-12)
    short_cos, _ = rope_tables(cfg, positions[:100], seq_len=100)
    np.testing.assert_allclose(
        short_cos, np.cos(positions[:100, None] * cfg.inv_freq()[None, :]), atol=1e-12
    )
    # LongRoPE switches to its long factors past the original length
    lr = RopeConfig(4, scaling=LongRoPE([1.0, 1.0], [2.0, 4.0], 10))
    np.testing.assert_allclose(
        rope_tables(lr, np.arange(11))[0][3], np.cos(3 * lr.inv_freq(11)), atol=1e-15
    )
    np.testing.assert_allclose(
        rope_tables(lr, np.arange(10))[0][3], np.cos(3 * lr.inv_freq(10)), atol=1e-15
    )


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_positions(bad):
    with pytest.raises(ValueError, match=r"finite"):
        rope_tables(RopeConfig(8), np.array([0.0, bad]))


def test_boolean_positions():
    with pytest.raises(TypeError, match=r"bool"):
        rope_tables(RopeConfig(8), np.array([True, False]))


def test_config_must_be_ropeconfig():
    with pytest.raises(TypeError, match=r"dict"):
        rope_tables({"head_dim": 8}, np.arange(3))
