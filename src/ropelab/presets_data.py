PRESETS: dict[str, dict] = {
    "llama-2-7b": {"model_type": "llama", "hidden_size": 4096, "num_attention_heads": 32, "max_position_embeddings": 4096, "rope_theta": 10000.0, "rope_scaling": None},
}
