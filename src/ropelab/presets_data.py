"""RoPE-relevant excerpts of public Hugging Face ``config.json`` files.

Pure data: one public name, ``PRESETS``, mapping a short preset name to a dict
holding a subset of the keys of that model's published ``config.json``.

Conventions
-----------
* Key names are exactly the ones the model's own config uses (GPT-NeoX keeps
  ``rotary_pct`` / ``rotary_emb_base``; GPT-J keeps ``n_embd`` / ``n_head`` /
  ``n_positions`` / ``rotary_dim``; old configs keep ``"type"`` inside
  ``rope_scaling`` while newer ones use ``"rope_type"``).
* Numbers are copied verbatim, including JSON integer vs float (for example
  CodeLlama and DeepSeek-V3 publish ``rope_theta`` as the integers 1000000 and
  10000, and DeepSeek-V3 publishes ``factor`` 40 and ``beta_fast`` 32 as
  integers).
* A key that the published config.json does not contain is left out, so that
  the transformers default applies (e.g. Mistral-7B-v0.1 and Qwen2.5 have no
  ``rope_scaling`` key at all).  The one deliberate exception is
  ``llama-2-7b``'s ``rope_theta``: Llama-2-7b-hf's config.json has no
  ``rope_theta`` key; 10000.0 is the LlamaConfig default it loads with, and it
  is kept here because the preset is meant to be self-describing.
* Llama 4 is multimodal; its entry is the ``text_config`` sub-dict, flattened.

The comment above each entry names the Hugging Face repository whose
config.json it reproduces.
"""

from __future__ import annotations

PRESETS: dict[str, dict] = {
    # meta-llama/Llama-2-7b-hf config.json (no rope_theta key in the file: 10000.0 is the LlamaConfig default)
    "llama-2-7b": {
        "model_type": "llama",
        "hidden_size": 4096,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "max_position_embeddings": 4096,
        "rope_theta": 10000.0,
        "rope_scaling": None,
    },
    # meta-llama/Llama-3.1-8B (a.k.a. meta-llama/Meta-Llama-3.1-8B) config.json
    "llama-3.1-8b": {
        "model_type": "llama",
        "hidden_size": 4096,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "max_position_embeddings": 131072,
        "rope_theta": 500000.0,
        "rope_scaling": {
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3",
        },
    },
    # meta-llama/Llama-4-Scout-17B-16E config.json, "text_config" (flattened).
    # Revision after Meta's 2025-04 rope fix: factor 16 with low_freq_factor == high_freq_factor == 1.0
    # (the first upload had factor 8.0 / high_freq_factor 4.0 / max_position_embeddings 262144).
    # The file also has interleave_moe_layer_step 1 and no_rope_layers == [1, 1, 1, 0] * 12 (every 4th layer NoPE),
    # left out here.  attn_temperature_tuning is the integer 4 in the published file (transformers now types it bool).
    "llama-4-scout": {
        "model_type": "llama4_text",
        "hidden_size": 5120,
        "num_attention_heads": 40,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "max_position_embeddings": 10485760,
        "rope_theta": 500000.0,
        "rope_scaling": {
            "factor": 16.0,
            "high_freq_factor": 1.0,
            "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3",
        },
        "interleave_moe_layer_step": 1,
        "attention_chunk_size": 8192,
        "attn_temperature_tuning": 4,
        "floor_scale": 8192,
        "attn_scale": 0.1,
        "use_qk_norm": True,
    },
    # mistralai/Mistral-7B-v0.1 config.json (no rope_scaling key in the file)
    "mistral-7b-v0.1": {
        "model_type": "mistral",
        "hidden_size": 4096,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "max_position_embeddings": 32768,
        "rope_theta": 10000.0,
    },
    # Qwen/Qwen2.5-7B-Instruct config.json (no rope_scaling key in the file)
    "qwen2.5-7b": {
        "model_type": "qwen2",
        "hidden_size": 3584,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
    },
    # Qwen/Qwen2.5-7B-Instruct config.json plus the rope_scaling block its model card
    # ("Processing Long Texts") says to add to enable YaRN up to 131072 tokens
    "qwen2.5-7b-yarn": {
        "model_type": "qwen2",
        "hidden_size": 3584,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "rope_scaling": {
            "factor": 4.0,
            "original_max_position_embeddings": 32768,
            "type": "yarn",
        },
    },
    # EleutherAI/gpt-neox-20b config.json
    "gpt-neox-20b": {
        "model_type": "gpt_neox",
        "hidden_size": 6144,
        "num_attention_heads": 64,
        "max_position_embeddings": 2048,
        "rotary_pct": 0.25,
        "rotary_emb_base": 10000,
    },
    # EleutherAI/gpt-j-6b config.json (GPT-J's own key names; no base key: theta is 10000)
    "gpt-j-6b": {
        "model_type": "gptj",
        "n_embd": 4096,
        "n_head": 16,
        "n_positions": 2048,
        "rotary_dim": 64,
    },
    # microsoft/Phi-3-mini-128k-instruct config.json (current revision, the July 2024 update that
    # renamed "su" to "longrope" and replaced both factor lists; head_dim 3072 / 32 = 96 -> 48 factors)
    "phi-3-mini-128k": {
        "model_type": "phi3",
        "hidden_size": 3072,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "max_position_embeddings": 131072,
        "original_max_position_embeddings": 4096,
        "rope_theta": 10000.0,
        "rope_scaling": {
            "long_factor": [
                1.0700000524520874,
                1.1200000047683716,
                1.149999976158142,
                1.4199999570846558,
                1.5699999332427979,
                1.7999999523162842,
                2.129999876022339,
                2.129999876022339,
                3.009999990463257,
                5.910000324249268,
                6.950000286102295,
                9.070000648498535,
                9.930000305175781,
                10.710000038146973,
                11.130000114440918,
                14.609999656677246,
                15.409998893737793,
                19.809999465942383,
                37.279998779296875,
                38.279998779296875,
                38.599998474121094,
                40.12000274658203,
                46.20000457763672,
                50.940006256103516,
                53.66000747680664,
                54.9373893737793,
                56.89738845825195,
                57.28738784790039,
                59.98738479614258,
                60.86738586425781,
                60.887386322021484,
                61.71739196777344,
                62.91739273071289,
                62.957393646240234,
                63.41739273071289,
                63.8173942565918,
                63.83739471435547,
                63.897396087646484,
                63.93739700317383,
                64.06739807128906,
                64.11434936523438,
                64.12435150146484,
                64.15435028076172,
                64.19435119628906,
                64.24435424804688,
                64.57435607910156,
                64.69000244140625,
                64.76000213623047,
            ],
            "short_factor": [
                1.1,
                1.1,
                1.1,
                1.3000000000000003,
                1.3500000000000003,
                1.3500000000000003,
                1.4000000000000004,
                1.5500000000000005,
                2.000000000000001,
                2.000000000000001,
                2.000000000000001,
                2.000000000000001,
                2.000000000000001,
                2.000000000000001,
                2.000000000000001,
                2.000000000000001,
                2.000000000000001,
                2.000000000000001,
                2.000000000000001,
                2.000000000000001,
                2.000000000000001,
                2.000000000000001,
                2.000000000000001,
                2.000000000000001,
                2.000000000000001,
                2.0500000000000007,
                2.0500000000000007,
                2.0500000000000007,
                2.0500000000000007,
                2.0500000000000007,
                2.0500000000000007,
                2.1000000000000005,
                2.1000000000000005,
                2.1500000000000004,
                2.25,
                2.25,
                2.25,
                2.25,
                2.25,
                2.3999999999999995,
                2.4499999999999993,
                2.499999999999999,
                2.6999999999999984,
                2.6999999999999984,
                2.7499999999999982,
                2.799999999999998,
                2.8999999999999977,
                3.049999999999997,
            ],
            "type": "longrope",
        },
    },
    # deepseek-ai/DeepSeek-V3 config.json (MLA: RoPE is applied to qk_rope_head_dim = 64 dims only)
    "deepseek-v3": {
        "model_type": "deepseek_v3",
        "hidden_size": 7168,
        "num_attention_heads": 128,
        "num_key_value_heads": 128,
        "max_position_embeddings": 163840,
        "qk_rope_head_dim": 64,
        "qk_nope_head_dim": 128,
        "rope_theta": 10000,
        "rope_scaling": {
            "beta_fast": 32,
            "beta_slow": 1,
            "factor": 40,
            "mscale": 1.0,
            "mscale_all_dim": 1.0,
            "original_max_position_embeddings": 4096,
            "type": "yarn",
        },
    },
    # codellama/CodeLlama-7b-hf config.json
    "codellama-7b": {
        "model_type": "llama",
        "hidden_size": 4096,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "max_position_embeddings": 16384,
        "rope_theta": 1000000,
        "rope_scaling": None,
    },
}
