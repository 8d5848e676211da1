"""Decode-size RoPE: one token's q and k through ropelab.torch.RotaryEmbedding and
through transformers' Llama rotary module + apply_rotary_pos_emb, in one run.

At this size (q (1, 32, 1, 128), k (1, 8, 1, 128)) every contender is bound by Python
and dispatch, not by memory; the ratio printed is measured within the run.

    python benchmarks/bench_decode_rope.py [--reps 5000]
"""

from __future__ import annotations

import argparse

import torch

from ropelab import RopeConfig, timing
from ropelab.torch import RotaryEmbedding


def _time(fn, reps: int) -> float:
    """Median over 5 rounds of the mean microseconds per call (``reps`` calls a round)."""
    return timing.time_calls(fn, reps=5, warmup=max(1, reps // 20), calls=reps).median * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    q, k = torch.randn(1, 32, 1, 128), torch.randn(1, 8, 1, 128)
    position = torch.tensor([[4000]])
    ours = RotaryEmbedding(RopeConfig(128, layout="half"))
    with torch.no_grad():
        t_ours = _time(lambda: ours(q, k, position), args.reps)
        print(f"ropelab RotaryEmbedding(q, k, positions): {t_ours:.1f} us")
        try:
            from transformers import LlamaConfig
            from transformers.models.llama.modeling_llama import (
                LlamaRotaryEmbedding,
                apply_rotary_pos_emb,
            )
        except ImportError:
            print("transformers not installed: no baseline")
            return
        hf = LlamaRotaryEmbedding(LlamaConfig(hidden_size=4096, num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192))

        def theirs():
            cos, sin = hf(q, position)
            return apply_rotary_pos_emb(q, k, cos, sin)

        t_hf = _time(theirs, args.reps)
    print(f"transformers LlamaRotaryEmbedding + apply_rotary_pos_emb: {t_hf:.1f} us")
    print(f"ropelab / transformers: {t_ours / t_hf:.2f}x")


if __name__ == "__main__":
    main()
