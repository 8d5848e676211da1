"""How exact are RoPE cos/sin tables at long context? ropelab vs transformers' float32 tables.

Reference: mpmath at 50 digits, with the true ``theta ** (-2i / R)`` (not any library's
rounded inv_freq), cos and sin of ``p * inv_freq`` exactly. For each target position N
the 16 positions N-15 .. N are checked over every pair; the table prints the largest
absolute error of cos and sin.

transformers' table is built as its ``LlamaRotaryEmbedding.forward`` builds it: float32
inv_freq, ``position_ids.float() @ inv_freq.float()`` in float32, then cos/sin in float32.

``benchmarks/table_accuracy.py`` is the companion measurement of every front end's
rows (NumPy, torch, jax, eager and compiled) against the float64 frequencies the scheme
defines, which is what ropelab's exactness claims are about.

Run: python benchmarks/table_precision.py [--head-dim 128] [--theta 500000] [--smoke]
"""

from __future__ import annotations

import argparse

import mpmath
import numpy as np

from ropelab import RopeConfig, rope_tables

TARGETS = [10**3, 10**6, 10**7, 2**31 - 1]


def exact_tables(positions, theta, rotary_dim):
    with mpmath.workdps(50):
        inv = [
            mpmath.mpf(theta) ** (mpmath.mpf(-2 * i) / rotary_dim) for i in range(rotary_dim // 2)
        ]
        cos = np.array([[float(mpmath.cos(int(p) * f)) for f in inv] for p in positions])
        sin = np.array([[float(mpmath.sin(int(p) * f)) for f in inv] for p in positions])
    return cos, sin


def transformers_tables(positions, theta, head_dim):
    """(cos, sin) float64 copies of transformers' float32 tables, shape (P, R/2)."""
    import torch
    import transformers
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    transformers.logging.set_verbosity_error()
    cfg = transformers.LlamaConfig(
        hidden_size=head_dim * 2,
        num_attention_heads=2,
        head_dim=head_dim,
        max_position_embeddings=2**31,
        rope_parameters={"rope_type": "default", "rope_theta": theta},
    )
    rotary = LlamaRotaryEmbedding(cfg)
    x = torch.zeros(1, len(positions), head_dim, dtype=torch.float32)
    position_ids = torch.as_tensor(np.asarray(positions, dtype=np.int64))[None, :]
    cos, sin = rotary(x, position_ids)  # (1, P, D), half layout: the R/2 angles twice
    half = head_dim // 2
    return cos[0, :, :half].double().numpy(), sin[0, :, :half].double().numpy()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--theta", type=float, nargs="+", default=[10000.0, 500000.0])
    parser.add_argument("--smoke", action="store_true", help="head_dim 16, one theta: seconds")
    args = parser.parse_args(argv)
    if args.smoke:
        args.head_dim, args.theta = 16, [500000.0]
    rows = []
    try:
        import transformers  # noqa: F401

        have_hf = True
    except ImportError:
        have_hf = False
    print(
        f"max |error| of cos/sin tables vs 50-digit reference, head_dim={args.head_dim}, "
        f"16 positions up to each N, all {args.head_dim // 2} pairs"
    )
    print(f"{'theta':>9} {'N':>12} {'ropelab (float64)':>18} {'transformers (float32)':>23}")
    for theta in args.theta:
        for target in TARGETS:
            positions = np.arange(target - 15, target + 1, dtype=np.int64)
            ref_cos, ref_sin = exact_tables(positions, theta, args.head_dim)
            cos, sin = rope_tables(RopeConfig(args.head_dim, theta=theta), positions)
            ours = max(np.abs(cos - ref_cos).max(), np.abs(sin - ref_sin).max())
            hf = float("nan")
            if have_hf:
                hcos, hsin = transformers_tables(positions, theta, args.head_dim)
                hf = max(np.abs(hcos - ref_cos).max(), np.abs(hsin - ref_sin).max())
            print(f"{theta:>9g} {target:>12d} {ours:>18.2e} {hf:>23.2e}")
            rows.append({"theta": theta, "N": target, "ropelab": float(ours), "transformers": float(hf)})
    return rows


if __name__ == "__main__":
    main()
