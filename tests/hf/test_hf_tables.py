"""rows_from_hf / hf_from_rows against transformers' own rotary modules: Llama's (half,
``cat((freqs, freqs))``) and Cohere's (interleaved, ``repeat_interleave``). The rows equal
ropelab's tables for the same config, and rotating with them equals the family's
``apply_rotary_pos_emb``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from transformers.models.cohere import modeling_cohere
from transformers.models.llama import modeling_llama

from ropelab import RopeConfig, apply_rope, hf_from_rows, rope_tables, rows_from_hf

transformers.logging.set_verbosity_error()

FAMILIES = {
    # layout, config class, the family's modeling module
    "llama": ("half", transformers.LlamaConfig, modeling_llama, "LlamaRotaryEmbedding"),
    "cohere": ("interleaved", transformers.CohereConfig, modeling_cohere, "CohereRotaryEmbedding"),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_against_the_family_rotary_module(rng, family):
    layout, config_cls, modeling, rotary_name = FAMILIES[family]
    hf_cfg = config_cls(hidden_size=128, num_attention_heads=2, num_key_value_heads=2, head_dim=64,
                        max_position_embeddings=4096)
    rotary = getattr(modeling, rotary_name)(hf_cfg)
    B, H, T = 2, 2, 7
    positions = rng.integers(0, 200, size=(B, T))  # small: transformers' float32 angles
    q = torch.from_numpy(rng.standard_normal((B, H, T, 64)).astype(np.float32))
    k = torch.from_numpy(rng.standard_normal((B, H, T, 64)).astype(np.float32))
    cos, sin = rotary(q, torch.from_numpy(positions))  # (B, T, 64) full width
    rows = rows_from_hf(cos, sin, layout=layout)
    config = RopeConfig.from_hf(hf_cfg)
    assert config.layout == layout
    want = rope_tables(config, positions)
    np.testing.assert_allclose(rows.cos.double().numpy(), want.cos, atol=2e-5)
    np.testing.assert_allclose(rows.sin.double().numpy(), want.sin, atol=2e-5)
    # the family's rotation, and ropelab's with the converted rows (a head axis added)
    q_hf, k_hf = modeling.apply_rotary_pos_emb(q, k, cos, sin)
    head_rows = rows_from_hf(cos[:, None], sin[:, None], layout=layout)
    q_ro, k_ro = apply_rope((q, k), head_rows)
    torch.testing.assert_close(q_ro, q_hf, rtol=0, atol=1e-5)
    torch.testing.assert_close(k_ro, k_hf, rtol=0, atol=1e-5)
    # and back: ropelab's exact tables in transformers' form rotate as the family does
    full_cos, full_sin = hf_from_rows(torch.from_numpy(want.cos).float(), torch.from_numpy(want.sin).float(),
                                      layout=layout)
    q_back, _ = modeling.apply_rotary_pos_emb(q, k, full_cos, full_sin)
    torch.testing.assert_close(q_back, q_hf, rtol=0, atol=5e-5)
    # read with the other pairing, the family's tables are refused
    other = "half" if layout == "interleaved" else "interleaved"
    with pytest.raises(ValueError, match="not a full-width table"):
        rows_from_hf(cos, sin, layout=other)
