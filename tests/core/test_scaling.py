"""Scaling schemes: parity with transformers' ROPE_INIT_FUNCTIONS, the NTK formula, relations, errors.

Hugging Face computes inverse frequencies in float32, so parity is checked to rtol 1e-6
(about ten float32 ulps); ropelab's float64 values are the more exact of the two.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from ropelab_testing import reference_inv_freq

import ropelab
from ropelab import RopeConfig, scaling
from ropelab.scaling import NTK, SCHEMES, DynamicNTK, Linear, Llama3, LongRoPE, PRoPE, Regime, YaRN

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: E402

RTOL = 1e-6


def _default_fn(cfg):
    # "default" has no registry entry: each model's RotaryEmbedding computes it
    if cfg.model_type == "gpt_neox":
        from transformers.models.gpt_neox.modeling_gpt_neox import GPTNeoXRotaryEmbedding as cls
    elif cfg.model_type == "phi3":
        from transformers.models.phi3.modeling_phi3 import Phi3RotaryEmbedding as cls
    else:
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding as cls
    return cls.compute_default_rope_parameters


def hf_reference(cfg, seq_len=None):
    """(inv_freq float64 numpy, attention_factor) as transformers computes them."""
    rope_type = cfg.rope_parameters.get("rope_type", "default")
    fn = _default_fn(cfg) if rope_type == "default" else ROPE_INIT_FUNCTIONS[rope_type]
    if rope_type == "default":
        inv_freq, factor = fn(cfg)
    else:
        inv_freq, factor = fn(cfg, "cpu", seq_len=seq_len)
    return inv_freq.double().numpy(), float(factor)


def llama(head_dim=64, heads=4, max_pos=4096, **kwargs):
    return transformers.LlamaConfig(
        hidden_size=head_dim * heads,
        num_attention_heads=heads,
        head_dim=head_dim,
        max_position_embeddings=max_pos,
        **kwargs,
    )


def _rng_factors(n, seed, low=1.0, high=6.0):
    return [float(v) for v in np.random.default_rng(seed).uniform(low, high, n)]


# (id, transformers config builder, seq_lens to check)
CASES = [
    (
        "default-1e4",
        lambda: llama(rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
        [None],
    ),
    (
        "default-5e5-d128",
        lambda: llama(128, rope_parameters={"rope_type": "default", "rope_theta": 5e5}),
        [None],
    ),
    ("default-old-kw", lambda: llama(96, rope_theta=123456.0), [None]),
    # (Llama's own default ignores partial_rotary_factor, so partial default RoPE is checked on GPT-NeoX)
    (
        "default-partial-neox",
        lambda: transformers.GPTNeoXConfig(
            hidden_size=512,
            num_attention_heads=4,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 1e4,
                "partial_rotary_factor": 0.5,
            },
        ),
        [None],
    ),
    (
        "linear-2",
        lambda: llama(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}),
        [None],
    ),
    (
        "linear-8-old",
        lambda: llama(128, rope_theta=5e5, rope_scaling={"type": "linear", "factor": 8.0}),
        [None],
    ),
    (
        "linear-partial",
        lambda: llama(
            rope_parameters={
                "rope_type": "linear",
                "factor": 4.0,
                "rope_theta": 1e4,
                "partial_rotary_factor": 0.25,
            }
        ),
        [None],
    ),
    (
        "dynamic-2",
        lambda: llama(
            max_pos=2048, rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}
        ),
        [None, 1, 1000, 2048, 2049, 4096, 10000],
    ),
    (
        "dynamic-old-partial",
        lambda: llama(
            128,
            max_pos=4096,
            rope_theta=5e5,
            partial_rotary_factor=0.5,
            rope_scaling={"type": "dynamic", "factor": 4.0},
        ),
        [None, 100, 4096, 4097, 50000],
    ),
    (
        "yarn-4",
        lambda: llama(
            max_pos=2048,
            rope_parameters={
                "rope_type": "yarn",
                "factor": 4.0,
                "original_max_position_embeddings": 512,
                "rope_theta": 1e4,
            },
        ),
        [None],
    ),
    (
        "yarn-betas",
        lambda: llama(
            128,
            max_pos=32768,
            rope_parameters={
                "rope_type": "yarn",
                "factor": 8.0,
                "original_max_position_embeddings": 4096,
                "beta_fast": 16.0,
                "beta_slow": 2.0,
                "rope_theta": 5e5,
            },
        ),
        [None],
    ),
    (
        "yarn-mscale",
        lambda: llama(
            64,
            max_pos=163840,
            rope_parameters={
                "rope_type": "yarn",
                "factor": 40.0,
                "original_max_position_embeddings": 4096,
                "mscale": 1.0,
                "mscale_all_dim": 0.5,
                "beta_fast": 32,
                "beta_slow": 1,
                "rope_theta": 1e4,
            },
        ),
        [None],
    ),
    (
        "yarn-mscale-equal",  # DeepSeek-V3's 0.707 / 0.707: attention factor 1
        lambda: llama(
            64,
            max_pos=163840,
            rope_parameters={
                "rope_type": "yarn",
                "factor": 40.0,
                "original_max_position_embeddings": 4096,
                "mscale": 0.707,
                "mscale_all_dim": 0.707,
                "rope_theta": 1e4,
            },
        ),
        [None],
    ),
    (
        "yarn-attention-factor",
        lambda: llama(
            max_pos=8192,
            rope_parameters={
                "rope_type": "yarn",
                "factor": 2.0,
                "original_max_position_embeddings": 4096,
                "attention_factor": 1.5,
                "rope_theta": 1e4,
            },
        ),
        [None],
    ),
    (
        "yarn-no-truncate",  # gpt-oss style
        lambda: llama(
            64,
            max_pos=131072,
            rope_parameters={
                "rope_type": "yarn",
                "factor": 32.0,
                "original_max_position_embeddings": 4096,
                "beta_fast": 32.0,
                "beta_slow": 1.0,
                "truncate": False,
                "rope_theta": 150000.0,
            },
        ),
        [None],
    ),
    (
        "yarn-partial-old",
        lambda: llama(
            128,
            max_pos=16384,
            rope_theta=1e6,
            partial_rotary_factor=0.5,
            rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096},
        ),
        [None],
    ),
    (
        "llama3-8",
        lambda: llama(
            128,
            max_pos=131072,
            rope_parameters={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192,
                "rope_theta": 5e5,
            },
        ),
        [None],
    ),
    (
        "llama3-scout-equal",  # Llama 4 Scout ships low_freq_factor == high_freq_factor == 1.0
        lambda: llama(
            128,
            max_pos=10485760,
            rope_parameters={
                "rope_type": "llama3",
                "factor": 16.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 1.0,
                "original_max_position_embeddings": 8192,
                "rope_theta": 5e5,
            },
        ),
        [None],
    ),
    (
        "llama3-32-old",
        lambda: llama(
            64,
            max_pos=131072,
            rope_theta=5e5,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 32.0,
                "low_freq_factor": 2.0,
                "high_freq_factor": 8.0,
                "original_max_position_embeddings": 8192,
            },
        ),
        [None],
    ),
]


def phi3_longrope(partial=None, **rope_extra):
    kwargs = {} if partial is None else {"partial_rotary_factor": partial}
    head_dim = 96
    pairs = int(head_dim * (partial or 1.0)) // 2
    return transformers.Phi3Config(
        hidden_size=head_dim * 4,
        num_attention_heads=4,
        max_position_embeddings=131072,
        original_max_position_embeddings=4096,
        rope_theta=10000.0,
        rope_scaling={
            "type": "longrope",
            "short_factor": _rng_factors(pairs, 1, 1.0, 1.2),
            "long_factor": _rng_factors(pairs, 2),
            **rope_extra,
        },
        **kwargs,
    )


CASES += [
    ("longrope-phi3", lambda: phi3_longrope(), [None, 1, 4096, 4097, 131072]),
    ("longrope-partial", lambda: phi3_longrope(partial=0.5), [None, 4096, 4097]),
    ("longrope-attention-factor", lambda: phi3_longrope(attention_factor=1.25), [None, 5000]),
    ("longrope-factor", lambda: phi3_longrope(factor=16.0), [None, 5000]),
    # Phi-3's top-level original_max_position_embeddings wins over one inside rope_scaling
    (
        "longrope-top-level-wins",
        lambda: phi3_longrope(original_max_position_embeddings=2048),
        [None, 3000, 4096, 4097],
    ),
]


def _quiet(build):
    # transformers logs warnings about some deliberately unusual settings
    transformers.logging.set_verbosity_error()
    return build()


@pytest.mark.parametrize("name,build,seq_lens", CASES, ids=[c[0] for c in CASES])
def test_hf_parity(name, build, seq_lens):
    cfg = _quiet(build)
    ours = RopeConfig.from_hf(cfg)
    for seq_len in seq_lens:
        inv_freq, attention = hf_reference(_quiet(build), seq_len)
        got = ours.inv_freq(seq_len)
        assert got.dtype == np.float64
        assert got.shape == inv_freq.shape, (seq_len, got.shape, inv_freq.shape)
        np.testing.assert_allclose(got, inv_freq, rtol=RTOL, atol=0, err_msg=f"seq_len={seq_len}")
        assert ours.attention_factor == pytest.approx(attention, rel=1e-12)


@pytest.mark.parametrize("name,build,seq_lens", CASES, ids=[c[0] for c in CASES])
def test_from_hf_dict_matches_object(name, build, seq_lens):
    """config.json (to_dict) and the config object give the same schedule."""
    cfg = _quiet(build)
    from_obj = RopeConfig.from_hf(cfg)
    from_dict = RopeConfig.from_hf(cfg.to_dict())
    assert from_dict == from_obj
    for seq_len in seq_lens:
        np.testing.assert_array_equal(from_dict.inv_freq(seq_len), from_obj.inv_freq(seq_len))


OLD_JSON = [
    # config.json dicts in the older keyword form, as released checkpoints ship them
    (
        "llama",
        {
            "model_type": "llama",
            "hidden_size": 512,
            "num_attention_heads": 8,
            "max_position_embeddings": 4096,
            "rope_theta": 5e5,
            "rope_scaling": {"type": "linear", "factor": 4.0},
        },
        "LlamaConfig",
    ),
    (
        "llama3",
        {
            "model_type": "llama",
            "hidden_size": 1024,
            "num_attention_heads": 8,
            "max_position_embeddings": 131072,
            "rope_theta": 5e5,
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192,
            },
        },
        "LlamaConfig",
    ),
    (
        "gpt_neox",
        {
            "model_type": "gpt_neox",
            "hidden_size": 512,
            "num_attention_heads": 4,
            "rotary_pct": 0.25,
            "rotary_emb_base": 10000,
            "max_position_embeddings": 2048,
        },
        "GPTNeoXConfig",
    ),
    # no rotary_pct: GPTNeoXConfig's default 0.25 applies
    (
        "gpt_neox-default-pct",
        {
            "model_type": "gpt_neox",
            "hidden_size": 512,
            "num_attention_heads": 4,
            "max_position_embeddings": 2048,
        },
        "GPTNeoXConfig",
    ),
    (
        "phi3",
        {
            "model_type": "phi3",
            "hidden_size": 3072,
            "num_attention_heads": 32,
            "max_position_embeddings": 131072,
            "original_max_position_embeddings": 4096,
            "rope_theta": 10000.0,
            "rope_scaling": {
                "type": "longrope",
                "short_factor": [1.0 + i / 100 for i in range(48)],
                "long_factor": [1.0 + i / 10 for i in range(48)],
            },
        },
        "Phi3Config",
    ),
    (
        "qwen2-yarn",
        {
            "model_type": "qwen2",
            "hidden_size": 896,
            "num_attention_heads": 14,
            "max_position_embeddings": 32768,
            "rope_theta": 1e6,
            "rope_scaling": {
                "type": "yarn",
                "factor": 4.0,
                "original_max_position_embeddings": 32768,
            },
        },
        "Qwen2Config",
    ),
]


@pytest.mark.parametrize("name,data,cls", OLD_JSON, ids=[c[0] for c in OLD_JSON])
def test_from_hf_config_json_old_keys(name, data, cls):
    """A raw config.json dict gives what transformers computes after loading it."""
    kwargs = {k: v for k, v in data.items() if k != "model_type"}
    cfg = _quiet(lambda: getattr(transformers, cls)(**kwargs))
    ours = RopeConfig.from_hf(data)
    for seq_len in (None, 4097, 200000):
        inv_freq, attention = hf_reference(cfg, seq_len)
        np.testing.assert_allclose(ours.inv_freq(seq_len), inv_freq, rtol=RTOL, atol=0)
        assert ours.attention_factor == pytest.approx(attention, rel=1e-12)


def test_gpt_neox_rotary_pct_layout():
    cfg = transformers.GPTNeoXConfig(hidden_size=512, num_attention_heads=4, rotary_pct=0.25)
    ours = RopeConfig.from_hf(cfg)
    assert (ours.head_dim, ours.rotary_dim, ours.layout) == (128, 32, "half")
    np.testing.assert_allclose(ours.inv_freq(), hf_reference(cfg)[0], rtol=RTOL)


# ---------------------------------------------------------------- NTK (no transformers rope_type)


@pytest.mark.parametrize(
    "theta,rotary_dim,factor", [(1e4, 64, 2.0), (5e5, 128, 8.0), (1e4, 96, 3.5)]
)
def test_ntk_formula(theta, rotary_dim, factor):
    base = theta * factor ** (rotary_dim / (rotary_dim - 2))
    expected = reference_inv_freq(base, rotary_dim)
    got = RopeConfig(rotary_dim, theta=theta, scaling=NTK(factor)).inv_freq()
    np.testing.assert_allclose(got, expected, rtol=1e-13)
    # NTK-aware: the highest frequency is kept, the lowest divided by exactly `factor`
    plain = reference_inv_freq(theta, rotary_dim)
    assert got[0] == pytest.approx(plain[0], rel=1e-15)
    assert got[-1] == pytest.approx(
        plain[-1] / factor ** ((rotary_dim - 2) / rotary_dim * rotary_dim / (rotary_dim - 2)),
        rel=1e-12,
    )


def test_ntk_equals_dynamic_where_they_coincide():
    # DynamicNTK(f, L0) at length L grows the base by (f L / L0 - (f - 1)); with f=2,
    # L0=1000, L=2000 that is 3, so it must equal static NTK(3) there, and transformers' dynamic.
    head_dim, L0 = 64, 1000
    ntk = RopeConfig(head_dim, theta=1e4, scaling=NTK(3.0)).inv_freq()
    dyn = RopeConfig(head_dim, theta=1e4, scaling=DynamicNTK(2.0, L0)).inv_freq(2000)
    np.testing.assert_allclose(ntk, dyn, rtol=1e-14)
    cfg = llama(
        head_dim,
        max_pos=L0,
        rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4},
    )
    np.testing.assert_allclose(ntk, hf_reference(cfg, 2000)[0], rtol=RTOL)


def test_dynamic_is_default_up_to_original_length():
    cfg = RopeConfig(64, theta=1e4, scaling=DynamicNTK(4.0, 2048))
    plain = reference_inv_freq(1e4, 64)
    for seq_len in (None, 1, 2048):
        np.testing.assert_allclose(cfg.inv_freq(seq_len), plain, rtol=1e-14)
    grown = cfg.inv_freq(2049)
    assert np.all(grown <= plain * (1 + 1e-12))  # a larger base: no frequency above the default
    assert grown[-1] < plain[-1]
    assert cfg.dynamic


# ---------------------------------------------------------------- relations (HF test style)


def test_linear_is_default_over_factor():
    plain = reference_inv_freq(1e4, 64)
    np.testing.assert_allclose(
        RopeConfig(64, scaling=Linear(4.0)).inv_freq(), plain / 4.0, rtol=1e-14
    )


def test_yarn_between_interpolation_and_default():
    plain = reference_inv_freq(1e4, 128)
    got = RopeConfig(128, scaling=YaRN(8.0, 4096)).inv_freq()
    assert np.all(got <= plain * (1 + 1e-12)) and np.all(got >= plain / 8.0 * (1 - 1e-12))
    assert got[0] == pytest.approx(plain[0])  # fastest pair kept
    assert got[-1] == pytest.approx(plain[-1] / 8.0)  # slowest pair interpolated
    assert RopeConfig(128, scaling=YaRN(8.0, 4096)).attention_factor == pytest.approx(
        0.1 * math.log(8.0) + 1
    )


def test_llama3_keeps_short_and_divides_long_wavelengths():
    plain = reference_inv_freq(5e5, 128)
    got = RopeConfig(128, theta=5e5, scaling=Llama3(8.0, 1.0, 4.0, 8192)).inv_freq()
    wavelength = 2 * np.pi / plain
    short, long = wavelength < 8192 / 4.0, wavelength > 8192 / 1.0
    np.testing.assert_allclose(got[short], plain[short], rtol=1e-14)
    np.testing.assert_allclose(got[long], plain[long] / 8.0, rtol=1e-14)
    middle = ~short & ~long
    assert middle.any()
    assert np.all((got[middle] < plain[middle]) & (got[middle] > plain[middle] / 8.0))


def test_longrope_short_and_long():
    short, long = [1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]
    cfg = RopeConfig(8, theta=1e4, scaling=LongRoPE(short, long, 100, factor=4.0))
    plain = reference_inv_freq(1e4, 8)
    np.testing.assert_allclose(cfg.inv_freq(), plain / short, rtol=1e-14)
    np.testing.assert_allclose(cfg.inv_freq(100), plain / short, rtol=1e-14)
    np.testing.assert_allclose(cfg.inv_freq(101), plain / long, rtol=1e-14)
    assert cfg.attention_factor == pytest.approx(math.sqrt(1 + math.log(4.0) / math.log(100)))


# ---------------------------------------------------------------- errors, one per case


@pytest.mark.parametrize(
    "build",
    [
        lambda f: Linear(f),
        lambda f: NTK(f),
        lambda f: DynamicNTK(f, 2048),
        lambda f: YaRN(f, 2048),
        lambda f: Llama3(f, 1.0, 4.0, 8192),
    ],
    ids=["Linear", "NTK", "DynamicNTK", "YaRN", "Llama3"],
)
def test_factor_below_one_rejected(build):
    with pytest.raises(ValueError, match=r"factor.*0\.5"):
        build(0.5)


def test_yarn_beta_fast_must_exceed_beta_slow():
    with pytest.raises(ValueError, match=r"beta_fast=2.*beta_slow=4"):
        YaRN(4.0, 2048, beta_fast=2, beta_slow=4)
    with pytest.raises(ValueError, match=r"beta_fast=3.*beta_slow=3"):
        YaRN(4.0, 2048, beta_fast=3, beta_slow=3)


def test_llama3_low_above_high_rejected():
    with pytest.raises(ValueError, match=r"low_freq_factor=4\.0.*high_freq_factor=1\.0"):
        Llama3(8.0, 4.0, 1.0, 8192)


def test_llama3_equal_low_high_allowed():
    # Llama 4 Scout: no blend band, each pair is kept or divided (parity with HF above)
    got = RopeConfig(128, theta=5e5, scaling=Llama3(16.0, 1.0, 1.0, 8192)).inv_freq()
    plain = reference_inv_freq(5e5, 128)
    ratio = plain / got
    assert np.all(np.isclose(ratio, 1.0) | np.isclose(ratio, 16.0))


def test_longrope_list_length_must_match_rotary_pairs():
    scheme = LongRoPE([1.0] * 3, [2.0] * 3, 4096)
    with pytest.raises(ValueError, match=r"rotary_dim // 2 = 4\), got 3"):
        RopeConfig(8, scaling=scheme)


def test_longrope_short_and_long_lists_must_agree():
    with pytest.raises(ValueError, match=r"same length, got 4 and 3"):
        LongRoPE([1.0] * 4, [2.0] * 3, 4096)


def test_longrope_list_length_from_config_json():
    data = {
        "hidden_size": 64,
        "num_attention_heads": 4,
        "max_position_embeddings": 400,
        "original_max_position_embeddings": 100,
        "rope_scaling": {"type": "longrope", "short_factor": [1.0] * 7, "long_factor": [2.0] * 7},
    }
    with pytest.raises(ValueError, match=r"rotary_dim // 2 = 8\), got 7"):
        RopeConfig.from_hf(data)


def test_longrope_factors_must_be_positive():
    with pytest.raises(ValueError, match=r"short_factor.*-1\.0"):
        LongRoPE([1.0, -1.0], [2.0, 2.0], 4096)


def test_original_max_position_must_be_positive():
    with pytest.raises(ValueError, match=r"original_max_position.*0"):
        YaRN(4.0, 0)


def test_ntk_needs_rotary_dim_above_two():
    with pytest.raises(ValueError, match=r"rotary_dim=2"):
        RopeConfig(2, scaling=NTK(2.0))


def test_numpy_scalars_accepted():
    # e.g. factors read from a numpy array or computed with numpy
    assert Linear(np.float32(2.0)) == Linear(2.0)
    assert YaRN(
        np.float32(4.0), np.int64(2048), beta_fast=np.float32(16), mscale=np.float32(1.0)
    ) == YaRN(4.0, 2048, beta_fast=16, mscale=1.0)


def test_bool_factor_rejected():
    with pytest.raises(TypeError, match=r"factor.*True"):
        Linear(True)


def test_yarn_mscale_nan_rejected():
    with pytest.raises(ValueError, match=r"mscale.*nan"):
        YaRN(4.0, 2048, mscale=float("nan"))


# ---------------------------------------------------------------- p-RoPE


def test_prope_one_is_rope_and_zero_is_nope():
    plain = RopeConfig(32, theta=500.0)
    np.testing.assert_array_equal(RopeConfig(32, theta=500.0, scaling=PRoPE(1.0)).inv_freq(), plain.inv_freq())
    cos, sin = ropelab.rope_tables(RopeConfig(32, scaling=PRoPE(0)), np.arange(50))
    np.testing.assert_array_equal(cos, 1.0)
    np.testing.assert_array_equal(sin, 0.0)


def test_prope_keeps_the_highest_frequencies():
    plain = RopeConfig(32).inv_freq()
    got = RopeConfig(32, scaling=PRoPE(0.25)).inv_freq()
    np.testing.assert_array_equal(got[:4], plain[:4])  # the fastest 4 of 16 pairs
    np.testing.assert_array_equal(got[4:], 0.0)


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan")])
def test_prope_rejects_p_outside_unit_interval(p):
    with pytest.raises(ValueError, match=r"PRoPE p must be a finite number >= 0 and <= 1, got"):
        PRoPE(p)


def test_prope_rejects_non_number():
    with pytest.raises(TypeError, match="p must be a number"):
        PRoPE("half")


# ---------------------------------------------------------------- length regimes

L0 = 64

#: one instance of every scheme, for the relations every scheme must satisfy
EVERY_SCHEME = {
    "linear": Linear(4.0),
    "ntk": NTK(4.0),
    "dynamic": DynamicNTK(4.0, L0),
    "yarn": YaRN(4.0, L0),
    "llama3": Llama3(8.0, 1.0, 4.0, L0),
    "longrope": LongRoPE([1.0 + i for i in range(8)], [2.0 + i for i in range(8)], L0, factor=4.0),
    "p-rope": PRoPE(0.5),
}


def test_every_scheme_is_in_the_relations_below():
    assert {type(s) for s in EVERY_SCHEME.values()} == set(SCHEMES.values()) | {PRoPE}
    assert all(issubclass(cls, scaling.Scheme) for cls in SCHEMES.values())


@pytest.mark.parametrize("name", sorted(EVERY_SCHEME))
def test_a_regime_is_the_lengths_with_one_set_of_frequencies(name):
    """Lengths in equal regimes give equal frequencies, in different regimes different
    ones; the base regime gives the frequencies of seq_len=None; a scheme that does not
    depend on the length has one regime."""
    scheme = EVERY_SCHEME[name]
    lengths = [1, 2, L0 - 1, L0, L0 + 1, L0 + 2, 2 * L0, 10 * L0]
    freq = {n: scheme.inv_freq(1e4, 16, n) for n in lengths}
    regime = {n: scheme.regime(n) for n in lengths}
    base = scheme.regime(None)
    np.testing.assert_array_equal(scheme.inv_freq(1e4, 16, base.first), scheme.inv_freq(1e4, 16, None))
    for n in lengths:
        r = regime[n]
        assert isinstance(r, Regime) and r.first <= n and (r.last is None or n <= r.last)
        np.testing.assert_array_equal(scheme.inv_freq(1e4, 16, r.first), freq[n])
        for m in lengths:
            if regime[m] == r:
                np.testing.assert_array_equal(freq[m], freq[n])
            else:
                assert not np.array_equal(freq[m], freq[n]), (n, m)
    assert scheme.dynamic == (len(set(regime.values())) > 1)
    if not scheme.dynamic:
        assert set(regime.values()) == {base} == {Regime("base", 1, None)}


def test_regimes_of_the_length_dependent_schemes():
    dyn, long = EVERY_SCHEME["dynamic"], EVERY_SCHEME["longrope"]
    assert dyn.regime(None) == dyn.regime(L0) == Regime("base", 1, L0)
    assert dyn.regime(L0 + 5) == Regime("grown", L0 + 5, L0 + 5)
    assert long.regime(None) == long.regime(L0) == Regime("short", 1, L0)
    assert long.regime(L0 + 1) == long.regime(100 * L0) == Regime("long", L0 + 1, None)


def test_extended_length_is_the_factors_length():
    assert DynamicNTK(2.0, 2048).extended_length == 4096
    assert LongRoPE([1.0], [2.0], 4096, factor=32.0).extended_length == 131072
    assert LongRoPE([1.0], [2.0], 4096).extended_length is None  # no factor: it does not say
    cfg = RopeConfig.from_hf({"hidden_size": 64, "num_attention_heads": 1, "max_position_embeddings": 10000,
                              "original_max_position_embeddings": 3000,
                              "rope_scaling": {"type": "longrope", "short_factor": [1.0] * 32,
                                               "long_factor": [2.0] * 32}})
    assert cfg.scaling.extended_length == 10000  # factor 10000 / 3000, rounded back
    assert all(s.extended_length is None for s in EVERY_SCHEME.values() if not s.dynamic)


# ---------------------------------------------------------------- nothing else asks the name


def _scheme_branches(path, scheme_classes, scheme_names):
    """Lines of ``path`` that test a scheme's class (isinstance) or compare a ``.name``
    with a scheme's name."""
    import ast

    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance":
            kinds = node.args[1] if len(node.args) == 2 else None
            names = kinds.elts if isinstance(kinds, ast.Tuple) else [kinds]
            if any(isinstance(n, (ast.Name, ast.Attribute)) and (getattr(n, "id", None) or n.attr) in scheme_classes
                   for n in names):
                found.append(f"{path.name}:{node.lineno}")
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(isinstance(n, ast.Attribute) and n.attr == "name" for n in sides) and any(
                isinstance(n, ast.Constant) and n.value in scheme_names for n in sides
            ):
                found.append(f"{path.name}:{node.lineno}")
    return found


def test_nothing_outside_scaling_branches_on_a_scheme(tmp_path):
    from pathlib import Path

    root = Path(ropelab.__file__).parent
    # (Linear is left out: isinstance(layer, nn.Linear) tests torch's and flax's layers)
    classes = {type(s).__name__ for s in EVERY_SCHEME.values()} - {"Linear"}
    names = {s.name for s in EVERY_SCHEME.values()}
    found = [hit for path in sorted(root.rglob("*.py")) if path.name != "scaling.py"
             for hit in _scheme_branches(path, classes, names)]
    assert not found, f"branches on a scheme's class or name outside scaling.py: {found}"
    # the check sees such branches
    probe = tmp_path / "probe.py"
    probe.write_text("def f(s):\n    return s.name == 'longrope' or isinstance(s, (int, DynamicNTK))\n")
    assert _scheme_branches(probe, classes, names) == ["probe.py:2", "probe.py:2"]


def test_longrope_context_kept_below_the_original_reads_as_transformers_runs_it():
    """max_position_embeddings below original_max_position_embeddings and no factor:
    transformers runs it with attention factor 1; so does from_hf (no extension)."""
    from transformers import Phi3Config
    from transformers.models.phi3.modeling_phi3 import Phi3RotaryEmbedding

    from ropelab.presets import preset_hf_config

    fields = {**preset_hf_config("phi-3-mini-128k"), "max_position_embeddings": 2048}
    config = RopeConfig.from_hf(fields)
    assert config.scaling.factor is None and config.attention_factor == 1.0
    assert Phi3RotaryEmbedding(Phi3Config(**fields)).attention_scaling == 1.0


def test_yarn_ratio_below_one_names_where_the_factor_came_from():
    fields = {"head_dim": 64, "max_position_embeddings": 1024, "rope_theta": 10000.0,
              "rope_scaling": {"rope_type": "yarn", "original_max_position_embeddings": 4096}}
    with pytest.raises(ValueError, match=r"max_position_embeddings / original_max_position_embeddings = 1024 / 4096"):
        RopeConfig.from_hf(fields)


@pytest.mark.parametrize("make", [lambda: RopeConfig(64, scaling=NTK(1e300)),
                                  lambda: RopeConfig(4, scaling=NTK(1e160)),
                                  lambda: RopeConfig(64, scaling=DynamicNTK(1e300, 16)).inv_freq(1 << 20)])
def test_ntk_factor_beyond_float64_is_a_value_error_naming_it(make):
    with pytest.raises(ValueError, match=r"NTK factor 1e\+(300|160)"):
        make()


def test_dynamic_ntk_at_its_original_length_keeps_the_base_frequencies_for_any_factor():
    """At and below the original length the base frequencies, exactly (a huge factor's
    factor * L / L0 - (factor - 1) would round to 0 there)."""
    base = RopeConfig(64).inv_freq()
    for factor in (2.0, 1e17):
        config = RopeConfig(64, scaling=DynamicNTK(factor, 4096))
        for length in (None, 1, 4096):
            np.testing.assert_array_equal(config.inv_freq(length), base)
        assert np.all(np.isfinite(config.inv_freq(8192)))


def test_prope_to_hf_says_why_it_cannot_be_written():
    with pytest.raises(NotImplementedError, match=r"PRoPE\(0.5\) has no transformers config"):
        RopeConfig(64, scaling=PRoPE(0.5)).to_hf()
