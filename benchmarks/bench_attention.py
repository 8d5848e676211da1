"""Causal RoPE attention at long T: ropelab.torch.Attention vs the same thing written plainly.

The measurement is ``ropelab bench``'s attention part (:func:`ropelab.bench.attention_scaling`)
at the lengths given here. Three variants, same weights, float32, no grad, batch 1,
d_model 512, 8 heads:

- ``ropelab``: :class:`ropelab.torch.Attention` with ``rope=RopeConfig(64, layout="half")``.
- ``plain``: the same four projections, rotary written out as Hugging Face Llama does
  (float32 angles, ``rotate_half``) and ``scaled_dot_product_attention(is_causal=True)``.
- ``full``: the textbook algorithm: the full ``T x T`` score matrix, a triangular mask,
  softmax, then ``@ v`` (run at a smaller T, where it fits in memory).

Each variant runs in a fresh process so its peak memory is its own: on CPU the peak
resident set size of one forward pass above the level before it; on CUDA
``torch.cuda.max_memory_allocated`` likewise. A 16-token pass runs first (kernel JIT and
lazy imports are one-time costs). Time is the median over ``--rounds`` interleaved
processes per variant (``--repeats`` timed passes each), so load from other processes
falls on every variant alike; memory is the median peak.

Usage::

    python benchmarks/bench_attention.py                  # T=16384, full at T=4096
    python benchmarks/bench_attention.py --T 4096 --full-T 2048 --device cuda
"""

from __future__ import annotations

import argparse
import math

from ropelab import timing
from ropelab.bench import attention_scaling


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--T", type=int, default=16384, help="sequence length for ropelab vs plain")
    p.add_argument(
        "--full-T", type=int, default=4096, help="sequence length for all three (0: skip)"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=1, help="timed passes per process")
    p.add_argument("--rounds", type=int, default=3, help="processes per variant, interleaved")
    args = p.parse_args(argv)
    print(f"machine: {timing.machine_line(timing.machine(args.device))}")

    rows = []
    for T, names in ((args.T, ("plain", "ropelab")), (args.full_T, ("plain", "ropelab", "full"))):
        if T <= 0:
            continue
        got = attention_scaling(
            [T], variants=names, reps=args.repeats, rounds=args.rounds, device=args.device
        )
        results = {r["variant"]: r for r in got}
        base = results["plain"]
        for n, r in results.items():
            rows.append(r)
            if "median_ms" not in r:
                print(f"T={T:6d} {n:8s} {r['note']}")
                continue
            memory = r["peak_mib"] / base["peak_mib"] if base["peak_mib"] > 0 else math.nan
            print(
                f"T={T:6d} {n:8s} {r['median_ms'] / 1e3:8.3f} s  peak {r['peak_mib']:9.1f} MiB   "
                f"time x{r['median_ms'] / base['median_ms']:5.2f}  memory x{memory:6.2f} "
                f"(vs plain; {r['threads']} threads, {args.device})"
            )
        # same weights and positions: the outputs agree
        assert math.isclose(results["ropelab"]["mean_square"], base["mean_square"], rel_tol=1e-4)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
