"""RopeConfig.to_hf: every scheme in transformers' own form; from_hf reads it back equal,
and transformers computes the same frequencies and attention factor from it."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from ropelab import RopeConfig  # noqa: E402
from ropelab.config import HF_FORMS  # noqa: E402
from ropelab.hf.compat import rope_form, rope_parameters  # noqa: E402
from ropelab.scaling import NTK, DynamicNTK, Linear, Llama3, LongRoPE, YaRN  # noqa: E402

HEAD_DIM = 32


def _longrope(pairs, **kw):
    short = [1.0 + 0.01 * i for i in range(pairs)]
    long = [1.0 + 0.9 * i for i in range(pairs)]
    return LongRoPE(short, long, 64, **kw)


def _schemes(pairs):
    return {
        "none": None,
        "linear": Linear(4.0),
        "ntk": NTK(4.0),
        "dynamic": DynamicNTK(2.0, 64),
        "yarn": YaRN(4.0, 64),
        "yarn-overrides": YaRN(8.0, 64, beta_fast=16, beta_slow=2, mscale=1.0, mscale_all_dim=0.8, truncate=False),
        "yarn-attention": YaRN(4.0, 64, attention_factor=1.25),
        "llama3": Llama3(8.0, 1.0, 4.0, 64),
        "longrope": _longrope(pairs, factor=16.0),
        "longrope-attention": _longrope(pairs, factor=4.0, attention_factor=1.1),
        "longrope-unset-factor": _longrope(pairs),
    }


CASES = [
    (name, rotary, layout, form)
    for rotary in (HEAD_DIM, 24)
    for name in _schemes(rotary // 2)
    for layout in ("half", "interleaved")
    for form in HF_FORMS
]


def _config(name, rotary, layout="half"):
    return RopeConfig(HEAD_DIM, theta=5e4, rotary_dim=rotary, layout=layout, scaling=_schemes(rotary // 2)[name])


@pytest.mark.parametrize(("name", "rotary", "layout", "form"), CASES)
def test_round_trip(name, rotary, layout, form):
    cfg = _config(name, rotary, layout)
    keys = cfg.to_hf(form=form)
    json.dumps(keys, allow_nan=False)  # config.json material: plain, strict JSON
    assert RopeConfig.from_hf(keys) == cfg
    assert RopeConfig.from_hf(json.loads(json.dumps(keys))) == cfg


def test_forms():
    cfg = _config("yarn", 24)
    new, old = cfg.to_hf(form="rope_parameters"), cfg.to_hf(form="rope_scaling")
    assert new["rope_parameters"]["rope_theta"] == 5e4 and "rope_theta" not in new
    assert new["rope_parameters"]["partial_rotary_factor"] == 0.75
    assert old["rope_theta"] == 5e4 and old["partial_rotary_factor"] == 0.75
    assert old["rope_scaling"]["rope_type"] == "yarn" and "rope_theta" not in old["rope_scaling"]
    assert _config("none", HEAD_DIM).to_hf(form="rope_scaling")["rope_scaling"] is None
    with pytest.raises(ValueError, match="form must be one of"):
        cfg.to_hf(form="rope")


def test_partial_fraction_lands_on_rotary_dim():
    # 58 / 100 * 100 is 57.99999999999999 in floats: the fraction is nudged up
    cfg = RopeConfig(100, rotary_dim=58, layout="half")
    fraction = cfg.to_hf()["rope_parameters"]["partial_rotary_factor"]
    assert int(100 * fraction) == 58
    assert RopeConfig.from_hf(cfg.to_hf()) == cfg


def test_ntk_keeps_its_scheme_and_checks_it():
    cfg = _config("ntk", HEAD_DIM)
    keys = cfg.to_hf()
    assert keys["rope_parameters"]["rope_type"] == "default"
    assert keys["ropelab_scaling"] == {"rope_type": "ntk", "factor": 4.0, "rope_theta": 5e4}
    keys["rope_parameters"]["rope_theta"] = 5e4  # edited by hand: the two disagree
    with pytest.raises(ValueError, match="does not match its rope settings"):
        RopeConfig.from_hf(keys)


def test_from_hf_reads_paths_and_folders(tmp_path):
    cfg = _config("llama3", HEAD_DIM)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "llama", **cfg.to_hf()}))
    assert RopeConfig.from_hf(path) == cfg
    assert RopeConfig.from_hf(str(path)) == cfg
    assert RopeConfig.from_hf(tmp_path) == cfg
    with pytest.raises(FileNotFoundError, match="no config file"):
        RopeConfig.from_hf(tmp_path / "missing")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json.* is not valid JSON"):
        RopeConfig.from_hf(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="holds a JSON list"):
        RopeConfig.from_hf(tmp_path / "list.json")


# ----------------------------------------------------------- transformers' own reading


def _hf_rope(cfg: RopeConfig, seq_len: int):
    """(inv_freq, attention factor) as transformers computes them from cfg.to_hf()."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.phi3.modeling_phi3 import Phi3RotaryEmbedding

    keys = cfg.to_hf(form=rope_form())
    keys.pop("ropelab_scaling", None)
    keys.pop("rope_interleave", None)
    keys.setdefault("max_position_embeddings", 4 * 64)
    sizes = dict(vocab_size=11, hidden_size=HEAD_DIM * 2, num_attention_heads=2)
    config = transformers.LlamaConfig(**sizes, **keys)
    rope_type = rope_parameters(config).get("rope_type", "default")
    if rope_type == "default":
        # Phi-3's default frequencies follow partial_rotary_factor (Llama's do not)
        module = Phi3RotaryEmbedding(transformers.Phi3Config(**sizes, **keys))
        return module.inv_freq.double().numpy(), float(module.attention_scaling)
    inv_freq, factor = ROPE_INIT_FUNCTIONS[rope_type](config, "cpu", seq_len=seq_len)
    return inv_freq.double().numpy(), float(factor)


@pytest.mark.parametrize("rotary", [HEAD_DIM, 24])
@pytest.mark.parametrize("name", list(_schemes(1)))
@pytest.mark.parametrize("seq_len", [48, 200])  # below and above the original length 64
def test_transformers_computes_the_same(name, rotary, seq_len):
    cfg = _config(name, rotary)
    inv_freq, factor = _hf_rope(cfg, seq_len)
    np.testing.assert_allclose(inv_freq, cfg.inv_freq(seq_len), rtol=2e-6, atol=0)
    assert factor == pytest.approx(cfg.attention_factor, rel=1e-6)


def test_the_check_fails_for_a_wrong_scheme():
    # the comparison above can fail: a scheme's keys read as another scheme's frequencies
    cfg = _config("yarn", HEAD_DIM)
    inv_freq, _ = _hf_rope(cfg, 48)
    other = _config("linear", HEAD_DIM)
    assert not np.allclose(inv_freq, other.inv_freq(48), rtol=2e-6, atol=0)
