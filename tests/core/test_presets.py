"""Presets: each named config builds, and gives what transformers computes for the same config.json."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import ropelab
from ropelab.presets import preset_hf_config

NAMES = sorted(ropelab.PRESETS)

# pairing each family's reference code uses (RoFormer/GPT-J/Meta interleaved; NeoX/HF Llama half)
KNOWN_LAYOUTS = {
    "llama-2-7b": "half",
    "llama-3.1-8b": "half",
    "codellama-7b": "half",
    "mistral-7b-v0.1": "half",
    "qwen2.5-7b": "half",
    "qwen2.5-7b-yarn": "half",
    "gpt-neox-20b": "half",
    "phi-3-mini-128k": "half",
    "gpt-j-6b": "interleaved",
    "llama-4-scout": "interleaved",
    "deepseek-v3": "interleaved",
}


def test_at_least_eight_families():
    assert len({ropelab.preset(n).theta for n in NAMES} | set(NAMES)) >= 8
    assert len(NAMES) >= 8


@pytest.mark.parametrize("name", NAMES)
def test_preset_builds(name):
    cfg = ropelab.preset(name)
    assert isinstance(cfg, ropelab.RopeConfig)
    assert cfg.rotary_dim % 2 == 0 and cfg.rotary_dim <= cfg.head_dim
    if name in KNOWN_LAYOUTS:
        assert cfg.layout == KNOWN_LAYOUTS[name]
    # a preset is data: what preset_hf_config returns is a copy
    data = preset_hf_config(name)
    data["rope_theta"] = -1
    assert ropelab.preset(name) == cfg


def test_unknown_preset():
    with pytest.raises(ValueError, match=r"'llama-9000'.*llama"):
        ropelab.preset("llama-9000")


# ---------------------------------------------------------------- transformers parity

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")


def _default_rope_fn(model_type):
    folder = {"llama4_text": "llama4"}.get(model_type, model_type)
    module = importlib.import_module(f"transformers.models.{folder}.modeling_{folder}")
    classes = [getattr(module, n) for n in dir(module) if n.endswith("RotaryEmbedding")]
    classes = [c for c in classes if hasattr(c, "compute_default_rope_parameters")]
    if not classes:
        pytest.skip(f"no RotaryEmbedding with compute_default_rope_parameters in {module.__name__}")
    text = [c for c in classes if "Text" in c.__name__]
    return (text or classes)[0].compute_default_rope_parameters


ROPE_KEYS = {
    "hidden_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "max_position_embeddings",
    "original_max_position_embeddings",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "partial_rotary_factor",
    "rotary_pct",
    "rotary_emb_base",
    "qk_rope_head_dim",
    "qk_nope_head_dim",
    "n_embd",
    "n_head",
    "rotary_dim",
    "n_positions",
    "rope_interleave",
}


def _hf(data, seq_len):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    model_type = data["model_type"]
    # only the keys RoPE reads (other keys may be typed differently by today's transformers)
    kwargs = {k: v for k, v in data.items() if k in ROPE_KEYS}
    if model_type == "gptj":
        # GPT-J builds sin/cos tables directly; recover its frequencies from position 1
        from transformers.models.gptj.modeling_gptj import create_sinusoidal_positions

        cfg = transformers.GPTJConfig(**kwargs)
        table = create_sinusoidal_positions(2, cfg.rotary_dim).double().numpy()[1]
        half = cfg.rotary_dim // 2
        return np.arctan2(table[:half], table[half:]), 1.0
    transformers.logging.set_verbosity_error()
    cfg = transformers.AutoConfig.for_model(model_type, **kwargs)
    rope_type = cfg.rope_parameters.get("rope_type", "default")
    if rope_type == "default":
        inv_freq, factor = _default_rope_fn(model_type)(cfg)
    else:
        inv_freq, factor = ROPE_INIT_FUNCTIONS[rope_type](cfg, "cpu", seq_len=seq_len)
    return inv_freq.double().numpy(), float(factor)


@pytest.mark.parametrize("name", NAMES)
def test_preset_matches_transformers(name):
    data = preset_hf_config(name)
    cfg = ropelab.preset(name)
    seq_lens = [None, cfg.scaling.original_max_position + 1] if cfg.dynamic else [None]
    for seq_len in seq_lens:
        inv_freq, factor = _hf(data, seq_len)
        np.testing.assert_allclose(
            cfg.inv_freq(seq_len), inv_freq, rtol=1e-6, err_msg=f"seq_len={seq_len}"
        )
        assert cfg.attention_factor == pytest.approx(factor, rel=1e-12)


def test_preset_hf_config_is_a_deep_copy():
    """Editing the returned fields (nested ones included) leaves the preset as it was."""
    fields = preset_hf_config("llama-3.1-8b")
    fields["rope_scaling"]["factor"] = 2.0
    assert ropelab.preset("llama-3.1-8b").scaling.factor == 8.0
    phi = preset_hf_config("phi-3-mini-128k")
    key = "rope_scaling" if "rope_scaling" in phi else "rope_parameters"
    phi[key]["long_factor"][0] = 99.0
    assert ropelab.preset("phi-3-mini-128k").scaling.long_factor[0] != 99.0
