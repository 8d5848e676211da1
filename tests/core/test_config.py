"""RopeConfig: defaults, validation (one test per error), and from_hf's reading of configs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from ropelab_testing import reference_inv_freq

from ropelab import RopeConfig
from ropelab.scaling import Linear, LongRoPE, YaRN


def test_defaults():
    cfg = RopeConfig(64)
    assert (cfg.head_dim, cfg.rotary_dim, cfg.theta, cfg.layout, cfg.scaling) == (
        64,
        64,
        1e4,
        "interleaved",
        None,
    )
    assert cfg.attention_factor == 1.0 and not cfg.dynamic
    np.testing.assert_allclose(cfg.inv_freq(), reference_inv_freq(1e4, 64), rtol=1e-15)
    assert cfg.inv_freq().dtype == np.float64 and cfg.inv_freq().shape == (32,)


def test_partial_rotary_frequencies_use_rotary_dim():
    cfg = RopeConfig(128, theta=5e5, rotary_dim=32)
    np.testing.assert_allclose(cfg.inv_freq(), reference_inv_freq(5e5, 32), rtol=1e-15)


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        RopeConfig(64).theta = 2.0


# ---------------------------------------------------------------- errors, one per case


def test_odd_rotary_dim():
    with pytest.raises(ValueError, match=r"even.*got 33"):
        RopeConfig(64, rotary_dim=33)


def test_rotary_dim_above_head_dim():
    with pytest.raises(ValueError, match=r"head_dim=64, got 128"):
        RopeConfig(64, rotary_dim=128)


def test_odd_head_dim_without_rotary_dim():
    with pytest.raises(ValueError, match=r"got 65"):
        RopeConfig(65)


@pytest.mark.parametrize("theta", [0.0, -10000.0])
def test_non_positive_theta(theta):
    with pytest.raises(ValueError, match=rf"theta.*{theta!r}"):
        RopeConfig(64, theta=theta)


def test_non_finite_theta():
    with pytest.raises(ValueError, match=r"theta.*inf"):
        RopeConfig(64, theta=float("inf"))


def test_theta_wrong_type():
    with pytest.raises(TypeError, match=r"theta.*'10000'"):
        RopeConfig(64, theta="10000")


def test_unknown_layout():
    with pytest.raises(ValueError, match=r"layout must be one of 'interleaved', 'half'; got 'neox'"):
        RopeConfig(64, layout="neox")


def test_head_dim_not_positive():
    with pytest.raises(ValueError, match=r"head_dim.*0"):
        RopeConfig(0)


def test_scaling_wrong_type():
    with pytest.raises(TypeError, match=r"scaling.*'yarn'"):
        RopeConfig(64, scaling="yarn")


def test_bad_seq_len():
    with pytest.raises(ValueError, match=r"seq_len.*-3"):
        RopeConfig(64).inv_freq(-3)


def test_unknown_rope_type_in_config():
    with pytest.raises(ValueError, match=r"unknown rope_type 'wobble'"):
        RopeConfig.from_hf(
            {
                "hidden_size": 256,
                "num_attention_heads": 4,
                "rope_scaling": {"rope_type": "wobble", "factor": 2.0},
            }
        )


def test_missing_scheme_key_in_config():
    with pytest.raises(ValueError, match=r"'linear' needs the key 'factor'"):
        RopeConfig.from_hf(
            {"hidden_size": 256, "num_attention_heads": 4, "rope_scaling": {"type": "linear"}}
        )


def test_config_without_head_dim():
    with pytest.raises(ValueError, match=r"neither head_dim nor hidden_size"):
        RopeConfig.from_hf({"rope_theta": 1e4})


def test_from_hf_wrong_type():
    with pytest.raises(TypeError, match=r"got int"):
        RopeConfig.from_hf(3)


def test_per_layer_rope_parameters_rejected():
    params = {
        "full_attention": {"rope_type": "default", "rope_theta": 1e6},
        "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
    }
    with pytest.raises(ValueError, match=r"per layer type.*full_attention"):
        RopeConfig.from_hf(
            {"hidden_size": 256, "num_attention_heads": 4, "rope_parameters": params}
        )


# ---------------------------------------------------------------- from_hf


@pytest.mark.parametrize(
    "model_type,layout",
    [
        ("llama", "half"),
        ("mistral", "half"),
        ("qwen2", "half"),
        ("gpt_neox", "half"),
        ("phi3", "half"),
        ("gptj", "interleaved"),
        ("llama4_text", "interleaved"),
    ],
)
def test_layout_from_model_type(model_type, layout):
    cfg = RopeConfig.from_hf(
        {"model_type": model_type, "hidden_size": 256, "num_attention_heads": 4}
    )
    assert cfg.layout == layout


def test_layout_override_and_rope_interleave_flag():
    base = {"model_type": "llama", "hidden_size": 256, "num_attention_heads": 4}
    assert RopeConfig.from_hf(base, layout="interleaved").layout == "interleaved"
    # Llama's attention never reads rope_interleave: transformers pairs it half either way
    assert RopeConfig.from_hf({**base, "rope_interleave": True}).layout == "half"
    # DeepSeek-V3's attention picks by the flag, which defaults to true
    deepseek = {**base, "model_type": "deepseek_v3"}
    assert RopeConfig.from_hf(deepseek).layout == "interleaved"
    assert RopeConfig.from_hf({**deepseek, "rope_interleave": False}).layout == "half"
    # a config without model_type is taken at its word
    plain = {"hidden_size": 256, "num_attention_heads": 4, "rope_theta": 1e4}
    assert RopeConfig.from_hf({**plain, "rope_interleave": True}).layout == "interleaved"
    assert RopeConfig.from_hf(plain).layout == "half"


def test_from_hf_keys():
    # head_dim given explicitly wins over hidden_size // heads
    cfg = RopeConfig.from_hf(
        {"hidden_size": 256, "num_attention_heads": 4, "head_dim": 32, "rope_theta": 5e5}
    )
    assert (cfg.head_dim, cfg.rotary_dim, cfg.theta) == (32, 32, 5e5)
    # GPT-J: n_embd / n_head and an absolute rotary_dim
    gptj = RopeConfig.from_hf(
        {"model_type": "gptj", "n_embd": 4096, "n_head": 16, "rotary_dim": 64}
    )
    assert (gptj.head_dim, gptj.rotary_dim, gptj.layout) == (256, 64, "interleaved")
    # GPT-NeoX: rotary_pct and rotary_emb_base
    neox = RopeConfig.from_hf(
        {
            "model_type": "gpt_neox",
            "hidden_size": 512,
            "num_attention_heads": 4,
            "rotary_pct": 0.25,
            "rotary_emb_base": 5000,
        }
    )
    assert (neox.rotary_dim, neox.theta) == (32, 5000.0)
    # partial_rotary_factor inside the newer rope_parameters
    newer = RopeConfig.from_hf(
        {
            "hidden_size": 512,
            "num_attention_heads": 4,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1e6,
                "partial_rotary_factor": 0.5,
            },
        }
    )
    assert (newer.rotary_dim, newer.theta, newer.scaling) == (64, 1e6, None)


def test_from_hf_text_config():
    outer = {
        "model_type": "llama4",
        "text_config": {
            "model_type": "llama4_text",
            "hidden_size": 512,
            "num_attention_heads": 4,
            "head_dim": 128,
            "rope_theta": 5e5,
        },
    }
    cfg = RopeConfig.from_hf(outer)
    assert (cfg.head_dim, cfg.theta, cfg.layout) == (128, 5e5, "interleaved")


def test_from_hf_schemes():
    lin = RopeConfig.from_hf(
        {
            "hidden_size": 256,
            "num_attention_heads": 4,
            "rope_scaling": {"type": "linear", "factor": 2},
        }
    )
    assert lin.scaling == Linear(2.0)
    yarn = RopeConfig.from_hf(
        {
            "hidden_size": 256,
            "num_attention_heads": 4,
            "max_position_embeddings": 8192,
            "rope_scaling": {
                "type": "yarn",
                "factor": 4.0,
                "original_max_position_embeddings": 2048,
            },
        }
    )
    assert yarn.scaling == YaRN(4.0, 2048)
    # "su" is the name early Phi-3 configs used for LongRoPE
    su = RopeConfig.from_hf(
        {
            "hidden_size": 16,
            "num_attention_heads": 4,
            "max_position_embeddings": 400,
            "original_max_position_embeddings": 100,
            "rope_scaling": {"type": "su", "short_factor": [1, 1], "long_factor": [2, 2]},
        }
    )
    assert isinstance(su.scaling, LongRoPE) and su.scaling.factor == 4.0
    assert (
        RopeConfig.from_hf(
            {"hidden_size": 256, "num_attention_heads": 4, "rope_scaling": {"rope_type": "default"}}
        ).scaling
        is None
    )


def test_from_hf_model_type_rotary_defaults():
    # what transformers assumes when the key is absent: GPT-NeoX rotary_pct 0.25, GPT-J rotary_dim 64
    neox = RopeConfig.from_hf(
        {"model_type": "gpt_neox", "hidden_size": 512, "num_attention_heads": 4}
    )
    assert (neox.head_dim, neox.rotary_dim) == (128, 32)
    gptj = RopeConfig.from_hf({"model_type": "gptj", "n_embd": 4096, "n_head": 16})
    assert (gptj.head_dim, gptj.rotary_dim) == (256, 64)
    # other model types rotate the whole head
    assert (
        RopeConfig.from_hf(
            {"model_type": "llama", "hidden_size": 512, "num_attention_heads": 4}
        ).rotary_dim
        == 128
    )


# ---------------------------------------------------------------- dataclasses.replace


def test_replace_head_dim_moves_a_derived_rotary_dim():
    cfg = RopeConfig(128, layout="half")
    wider = dataclasses.replace(cfg, head_dim=256)
    assert (wider.head_dim, wider.rotary_dim) == (256, 256)
    np.testing.assert_allclose(wider.inv_freq(), reference_inv_freq(1e4, 256), rtol=1e-15)
    # an explicit rotary_dim is kept (partial rotary stays partial)
    partial = dataclasses.replace(RopeConfig(128, rotary_dim=64), head_dim=256)
    assert (partial.head_dim, partial.rotary_dim) == (256, 64)
    # set to None, it is derived again
    assert dataclasses.replace(partial, rotary_dim=None).rotary_dim == 256
    assert RopeConfig(128) == RopeConfig(128, rotary_dim=128)


def test_replace_a_scheme_recomputes_its_attention_factor():
    yarn = YaRN(4.0, 2048)
    eight = dataclasses.replace(yarn, factor=8.0)
    assert eight == YaRN(8.0, 2048)
    assert eight.attention_factor == pytest.approx(0.1 * np.log(8.0) + 1)
    longrope = LongRoPE([1.0, 2.0], [3.0, 4.0], 100, factor=4.0)
    sixteen = dataclasses.replace(longrope, factor=16.0)
    assert sixteen.attention_factor == pytest.approx(np.sqrt(1 + np.log(16.0) / np.log(100)))
    cfg = RopeConfig(64, scaling=yarn)
    assert dataclasses.replace(cfg, scaling=eight).attention_factor == eight.attention_factor


def test_replace_keeps_a_given_attention_factor_and_repr_shows_it():
    yarn = YaRN(4.0, 2048, attention_factor=1.5)
    assert "attention_factor=1.5" in repr(yarn)
    assert yarn.attention_factor_override == 1.5 and YaRN(4.0, 2048).attention_factor_override is None
    assert dataclasses.replace(yarn, factor=8.0).attention_factor == 1.5
    assert dataclasses.replace(yarn, attention_factor=None) == YaRN(4.0, 2048)
    assert dataclasses.replace(yarn, attention_factor=None).attention_factor_override is None
