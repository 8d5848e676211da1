"""Causal linear attention with RoPE: time against sequence length.

Shows that the chunked causal form of :func:`ropelab.torch.linear_attention.linear_attention`
grows linearly with T: it runs at T = 65536 and 4x the length costs well under 6x the
time (the acceptance bar; quadratic attention would cost 16x).

Usage: python benchmarks/bench_linear_attention.py [--device cpu|cuda] [--lengths 4096 16384 65536]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import ropelab
from ropelab.torch.linear_attention import linear_attention


def _time(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, kernels)
    best = float("inf")
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 16384, 65536])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    cfg = ropelab.RopeConfig(args.head_dim)
    print(
        f"causal linear attention + RoPE, B={args.batch} H={args.heads} D={args.head_dim} "
        f"C={args.chunk_size} {args.dtype} on {device} (torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads)"
    )
    print(f"{'T':>8} {'seconds':>10} {'ms/1k tok':>10} {'ratio vs T/4':>13}")
    times = {}
    for T in args.lengths:
        g = torch.Generator(device="cpu").manual_seed(T)
        q, k, v = (
            torch.randn(args.batch, args.heads, T, args.head_dim, generator=g).to(device, dtype) for _ in range(3)
        )
        cos, sin = (torch.as_tensor(t, dtype=torch.float32, device=device) for t in ropelab.rope_tables(cfg, np.arange(T)))
        def call(q=q, k=k, v=v, cos=cos, sin=sin):
            with torch.no_grad():
                return linear_attention(q, k, v, cos=cos, sin=sin, chunk_size=args.chunk_size)

        seconds = _time(call, args.repeats)
        times[T] = seconds
        ratio = f"{seconds / times[T // 4]:.2f}x" if T // 4 in times else "-"
        print(f"{T:>8} {seconds:>10.4f} {1000 * seconds / T * 1000:>10.3f} {ratio:>13}")
    worst = [times[T] / times[T // 4] for T in times if T // 4 in times]
    if worst:
        verdict = "PASS" if max(worst) < 6 else "FAIL"
        print(f"4x length costs at most {max(worst):.2f}x the time (bar: < 6x): {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
