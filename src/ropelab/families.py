"""How each transformers model family applies RoPE, as data (read by ``RopeConfig.from_hf``).

Keys are ``model_type`` values. ``tests/hf/test_hf_families.py`` finds every family whose
modeling code applies rotary embeddings in the installed transformers, rotates q and k
with that family's own code, and holds these tables to it: each family in
:data:`ROPE_MODEL_TYPES` matches ropelab, each in :data:`REFUSED` is refused with its reason.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_ROTARY_DIM",
    "DEFAULT_ROPE",
    "HEAD_DIM_KEY",
    "INTERLEAVED",
    "INTERLEAVE_FLAG",
    "REFUSED",
    "ROPE_MODEL_TYPES",
    "ROTARY_DIM_KEY",
]

#: families whose attention pairs features interleaved, (x[2i], x[2i+1]): a ``rotate_half``
#: on ``x[..., ::2]``/``x[..., 1::2]``, a complex view of adjacent pairs, or GPT-J's
#: ``rotate_every_two``; every other family in ROPE_MODEL_TYPES pairs (x[i], x[i + R/2])
INTERLEAVED = frozenset(
    {
        "bailing_hybrid", "blt_global_transformer", "blt_local_decoder", "blt_local_encoder",
        "blt_patcher", "codegen", "cohere", "cohere2", "cohere2_moe", "deepseek_v2",
        "dots3_note_audio_encoder", "ernie4_5", "ernie4_5_moe", "ernie4_5_vl_moe",
        "ernie4_5_vl_moe_text", "glm", "glm4", "glm_moe_dsa", "glm_ocr", "glm_ocr_text", "gptj",
        "helium", "hy_v4_vl", "hy_v4_vl_text", "llama4", "llama4_text", "longcat_flash",
        "mistral_large4", "mistral_large4_text", "moonshine", "moonshine_streaming",
        "openai_privacy_filter",
        "pe_audio_encoder", "pe_audio_video_encoder", "pe_video_encoder",
    }
)

#: families whose attention picks the layout by the config's ``rope_interleave`` flag, with
#: the flag's default (DeepSeek-V3 and the models built on its attention)
INTERLEAVE_FLAG = {
    "axk1": True,
    "deepseek_v3": True,
    "glm4_moe_lite": True,
    "kimi_k25": True,
    "mistral4": True,
    "youtu": True,
}

#: families that read the rotated width from an absolute ``rotary_dim`` key
ROTARY_DIM_KEY = frozenset({"gptj", "codegen"})

#: the key holding the head width where it is not ``head_dim``
HEAD_DIM_KEY = {"jetmoe": "kv_channels", "zamba2": "attention_head_dim"}

#: what the config classes assume when a config.json leaves the key out: GPT-J's and
#: CodeGen's rotary_dim, and every family's rope parameters that are not plain RoPE with
#: theta 10000 over the whole head
DEFAULT_ROTARY_DIM = {"gptj": 64, "codegen": 64}
DEFAULT_ROPE: dict[str, dict] = {
    "EvollaModel": {"rope_theta": 500000.0},
    "apertus": {"rope_type": "llama3", "rope_theta": 12000000.0, "factor": 8.0, "original_max_position_embeddings": 8192, "low_freq_factor": 1.0, "high_freq_factor": 4.0},
    "apertus1p5": {"rope_type": "llama3", "rope_theta": 12000000.0, "factor": 8.0, "original_max_position_embeddings": 8192, "low_freq_factor": 1.0, "high_freq_factor": 4.0},
    "apertus1p5_text": {"rope_type": "llama3", "rope_theta": 12000000.0, "factor": 8.0, "original_max_position_embeddings": 8192, "low_freq_factor": 1.0, "high_freq_factor": 4.0},
    "bailing_hybrid": {"rope_theta": 6000000.0},
    "bamba": {"rope_theta": 10000.0, "partial_rotary_factor": 0.5},
    "bitnet": {"rope_theta": 500000.0},
    "blt_global_transformer": {"rope_theta": 500000.0},
    "blt_local_decoder": {"rope_theta": 500000.0},
    "blt_local_encoder": {"rope_theta": 500000.0},
    "codegen": {},
    "cohere": {"rope_theta": 500000.0},
    "cosmos3_edge": {"rope_theta": 100000000.0, "mrope_section": [24, 20, 20]},
    "cosmos3_edge_text": {"rope_theta": 100000000.0, "mrope_section": [24, 20, 20]},
    "csm": {"rope_theta": 500000.0},
    "csm_depth_decoder_model": {"rope_theta": 500000.0},
    "cwm": {"rope_theta": 1000000.0, "factor": 16.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0, "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "dots3_note_audio_encoder": {"rope_theta": 10000.0, "partial_rotary_factor": 0.5},
    "emu3": {"rope_theta": 1000000.0},
    "emu3_text_model": {"rope_theta": 1000000.0},
    "ernie4_5": {"rope_theta": 500000.0},
    "ernie4_5_moe": {"rope_theta": 500000.0},
    "ernie4_5_vl_moe": {"rope_theta": 500000.0},
    "ernie4_5_vl_moe_text": {"rope_theta": 500000.0},
    "esm": {},
    "evolla": {"rope_theta": 500000.0},
    "flex_olmo": {"rope_theta": 500000.0},
    "glm": {"rope_theta": 10000.0, "partial_rotary_factor": 0.5},
    "glm4": {"rope_theta": 10000.0, "partial_rotary_factor": 0.5},
    "glmasr_encoder": {"rope_theta": 10000.0, "partial_rotary_factor": 0.5},
    "gpt_neox": {"rope_theta": 10000.0, "partial_rotary_factor": 0.25},
    "gpt_neox_japanese": {"rope_theta": 10000.0, "partial_rotary_factor": 1.0},
    "gpt_oss": {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False, "original_max_position_embeddings": 4096, "rope_theta": 150000.0},
    "gptj": {},
    "gte": {"rope_theta": 160000.0},
    "helium": {"rope_theta": 100000.0},
    "higgs_audio_v2": {"factor": 32.0, "rope_theta": 500000.0, "high_freq_factor": 0.5, "low_freq_factor": 0.125, "original_max_position_embeddings": 1024, "rope_type": "llama3"},
    "hy_v3": {"rope_theta": 11158840.0},
    "hy_v4_vl": {"rope_theta": 10000.0, "mrope_section": [12, 10, 10]},
    "hy_v4_vl_text": {"rope_theta": 10000.0, "mrope_section": [12, 10, 10]},
    "jina_embeddings_v3": {"rope_theta": 20000.0},
    "lfm2": {"rope_theta": 1000000.0},
    "lfm2_moe": {"rope_theta": 1000000.0},
    "llama4": {"rope_theta": 500000.0},
    "llama4_text": {"rope_theta": 500000.0},
    "longcat_flash": {"rope_theta": 10000000.0},
    "minimax": {"rope_theta": 1000000.0},
    "minimax_m2": {"rope_theta": 5000000.0},
    "minimax_m3_vl": {"rope_theta": 5000000.0},
    "minimax_m3_vl_text": {"rope_theta": 5000000.0},
    "ministral3": {"type": "yarn", "rope_theta": 1000000.0, "factor": 16.0, "original_max_position_embeddings": 16384, "max_position_embeddings": 262144, "beta_fast": 32.0, "beta_slow": 1.0, "mscale_all_dim": 1.0, "mscale": 1.0, "llama_4_scaling_beta": 0.1, "rope_type": "yarn"},
    "moonshine": {"rope_theta": 10000.0, "partial_rotary_factor": 0.9},
    "mistral4": {"type": "yarn", "rope_theta": 10000.0, "factor": 128.0, "original_max_position_embeddings": 8192, "max_position_embeddings": 1048576, "beta_fast": 32.0, "beta_slow": 1.0, "mscale_all_dim": 1.0, "mscale": 1.0, "llama_4_scaling_beta": 0.1, "partial_rotary_factor": 0.5, "rope_type": "yarn"},
    "mistral_large4": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 2048.0, "original_max_position_embeddings": 512, "beta_fast": 32.0, "beta_slow": 1.0, "attention_factor": 1.0},
    "mistral_large4_text": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 2048.0, "original_max_position_embeddings": 512, "beta_fast": 32.0, "beta_slow": 1.0, "attention_factor": 1.0},
    "mixtral": {"rope_theta": 1000000.0},
    "mllama": {"rope_theta": 500000.0},
    "mllama_text_model": {"rope_theta": 500000.0},
    "moonshine_streaming": {"rope_theta": 10000.0, "partial_rotary_factor": 0.8},
    "muse_glimmer_assistant": {"rope_theta": 500000.0},
    "muse_spark": {"rope_theta": 500000.0},
    "muse_spark_text": {"rope_theta": 500000.0},
    "nemotron": {"rope_theta": 10000.0, "partial_rotary_factor": 0.5},
    "nemotron3_5_transcribe_asr_audio": {"rope_theta": 10000.0, "partial_rotary_factor": 0.5},
    "nemotron3_5_transcribe_word_timestamp": {"rope_theta": 10000.0, "partial_rotary_factor": 0.5},
    "nemotron3_diarization_audio": {"rope_theta": 10000.0, "partial_rotary_factor": 1.0},
    "nomic_bert": {"rope_theta": 1000.0},
    "openai_privacy_filter": {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False, "original_max_position_embeddings": 4096, "rope_theta": 150000.0},
    "paddleocr_vl": {"rope_theta": 500000.0},
    "paddleocr_vl_text": {"rope_theta": 500000.0},
    "pe_audio_encoder": {"rope_theta": 20000},
    "pe_audio_video_encoder": {"rope_theta": 20000},
    "pe_video_encoder": {"rope_theta": 20000},
    "persimmon": {"rope_theta": 10000.0, "partial_rotary_factor": 0.5},
    "phi": {"rope_theta": 10000.0, "partial_rotary_factor": 0.5},
    "phi3": {"rope_theta": 10000.0, "partial_rotary_factor": 1.0},
    "phi4_multimodal": {"rope_theta": 10000.0, "partial_rotary_factor": 1.0},
    "phimoe": {"rope_theta": 1000000.0},
    "qwen2_5_omni": {"rope_theta": 1000000.0},
    "qwen2_5_omni_talker": {"rope_theta": 1000000.0},
    "qwen2_5_omni_text": {"rope_theta": 1000000.0},
    "qwen2_5_omni_thinker": {"rope_theta": 1000000.0},
    "qwen2_5_vl": {"rope_theta": 1000000.0},
    "qwen2_5_vl_text": {"rope_theta": 1000000.0},
    "qwen2_vl": {"rope_theta": 1000000.0},
    "qwen2_vl_text": {"rope_theta": 1000000.0},
    "qwen3_5": {"rope_theta": 10000.0, "partial_rotary_factor": 0.25},
    "qwen3_5_moe": {"rope_theta": 10000.0, "partial_rotary_factor": 0.25},
    "qwen3_5_moe_text": {"rope_theta": 10000.0, "partial_rotary_factor": 0.25},
    "qwen3_5_text": {"rope_theta": 10000.0, "partial_rotary_factor": 0.25},
    "qwen3_next": {"rope_theta": 10000.0, "partial_rotary_factor": 0.25},
    "qwen3_vl": {"rope_theta": 500000.0},
    "qwen3_vl_moe": {"rope_theta": 500000.0},
    "qwen3_vl_moe_text": {"rope_theta": 500000.0},
    "qwen3_vl_text": {"rope_theta": 500000.0},
    "recurrent_gemma": {"rope_theta": 10000.0, "partial_rotary_factor": 0.5},
    "smollm3": {"rope_theta": 2000000.0},
    "solar_open": {"rope_theta": 1000000.0},
    "stablelm": {"rope_theta": 10000.0, "partial_rotary_factor": 0.25},
    "voxtral_realtime": {"rope_theta": 1000000.0},
}

#: families with RoPE that ropelab does not read, and why
REFUSED: dict[str, str] = {
    "nanochat": (
        "nanochat rotates by the negative angle (its rotate_half returns (x2, -x1)), a "
        "convention no ropelab layout has"
    ),
}

#: every family whose RoPE from_hf reads (a config.json of one of these may leave out
#: every rope key: the family's defaults apply)
ROPE_MODEL_TYPES = frozenset(
    {
        "EvollaModel", "afmoe", "apertus", "apertus1p5", "apertus1p5_text", "arcee", "aria",
        "aria_text", "axk1", "axk2", "bailing_hybrid", "bamba", "bitnet", "blt_global_transformer",
        "blt_local_decoder", "blt_local_encoder", "blt_patcher", "chameleon", "codegen", "cohere",
        "cohere2", "cohere2_moe", "cosmos3_edge", "cosmos3_edge_text", "csm",
        "csm_depth_decoder_model", "cwm", "dbrx", "deepseek_ocr2", "deepseek_ocr2_encoder",
        "deepseek_ocr2_text", "deepseek_v2", "deepseek_v3", "deepseek_v32", "dia", "dia_decoder",
        "dia_encoder", "diffllama", "doge", "dots1", "dots3_note_audio_encoder", "emu3",
        "emu3_text_model", "ernie4_5", "ernie4_5_moe", "ernie4_5_vl_moe", "ernie4_5_vl_moe_text",
        "esm", "esmc", "eurobert", "evolla", "exaone4", "exaone4_5", "exaone_moe", "falcon",
        "falcon_h1", "flex_olmo", "flint", "gemma", "gemma2", "glm", "glm4", "glm4_moe_lite",
        "glm_moe_dsa", "glm_ocr", "glm_ocr_text", "glmasr", "glmasr_encoder", "gpt_neox",
        "gpt_neox_japanese", "gpt_oss", "gptj", "gradium_phonon_tts", "granite", "granite4_vision",
        "granite4_vision_text", "granite_docling", "granite_docling_text", "granite_swa",
        "granitemoe", "granitemoe_swa", "granitemoehybrid", "granitemoeshared", "gte", "helium",
        "higgs_audio_v2", "hrm_text", "hunyuan_v1_dense", "hunyuan_v1_moe", "hy_v3", "hy_v4",
        "hy_v4_vl", "hy_v4_vl_text", "hyperclovax", "idefics", "jais2", "jetmoe",
        "jina_embeddings_v3", "kimi_k25", "kolibri1", "kyutai_speech_to_text", "lara_mini",
        "lasr_encoder", "lfm2", "lfm2_moe", "llama", "llama4", "llama4_text", "longcat_flash",
        "mimi", "mimi_decoder", "mimi_encoder", "minicpm3", "minimax", "minimax_m2",
        "minimax_m3_vl", "minimax_m3_vl_text", "ministral", "ministral3", "mistral", "mistral4",
        "mistral_large4", "mistral_large4_text", "mixtral", "mllama", "mllama_text_model", "molmo2",
        "molmo2_text", "moonshine", "moonshine_streaming", "moshi", "muse_glimmer",
        "muse_glimmer_assistant",
        "muse_glimmer_text", "muse_spark", "muse_spark_text", "musicflamingo", "nemotron",
        "nemotron3_5_transcribe_asr_audio", "nemotron3_5_transcribe_word_timestamp",
        "nemotron3_diarization_audio", "neucodec", "nomic_bert", "olmo", "olmo2", "olmo_hybrid",
        "olmoe", "openai_privacy_filter", "paddleocr_vl", "paddleocr_vl_text", "pe_audio_encoder",
        "pe_audio_video_encoder", "pe_video_encoder", "persimmon", "phi", "phi3", "phi4_multimodal",
        "phimoe", "pocket_tts", "pocket_tts_audio_tokenizer", "pocket_tts_audio_tokenizer_decoder",
        "pocket_tts_audio_tokenizer_encoder", "qwen2", "qwen2_5_omni", "qwen2_5_omni_dit",
        "qwen2_5_omni_talker", "qwen2_5_omni_text", "qwen2_5_omni_thinker", "qwen2_5_vl",
        "qwen2_5_vl_text", "qwen2_moe", "qwen2_vl", "qwen2_vl_text", "qwen3", "qwen3_5",
        "qwen3_5_moe", "qwen3_5_moe_text", "qwen3_5_text", "qwen3_moe", "qwen3_next",
        "qwen3_omni_moe_talker_code_predictor", "qwen3_omni_moe_talker_text", "qwen3_vl",
        "qwen3_vl_moe", "qwen3_vl_moe_text", "qwen3_vl_text", "qwen4_exp", "qwen4_exp_text",
        "recurrent_gemma", "seed_oss", "smollm3", "solar_open", "stablelm", "starcoder2",
        "t5_gemma_module", "t5gemma", "timesfm2_5", "unlimited_ocr", "unlimited_ocr_text",
        "vaultgemma", "video_llama_3", "voxtral_realtime", "voxtral_realtime_encoder",
        "voxtral_realtime_text", "xcodec2", "youtu", "zamba2",
    }
)
