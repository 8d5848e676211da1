"""Causal linear attention with RoPE: time against sequence length.

Shows that the chunked causal form of :func:`ropelab.torch.linear_attention.linear_attention`
grows linearly with T: it runs at T = 65536 and 4x the length costs well under 6x the
time (the acceptance bar; quadratic attention would cost 16x).

Usage: python benchmarks/bench_linear_attention.py [--device cpu|cuda] [--lengths 4096 16384 65536]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import ropelab
from ropelab import timing
from ropelab.torch.linear_attention import linear_attention


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
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    cfg = ropelab.RopeConfig(args.head_dim)
    print(f"machine: {timing.machine_line(timing.machine(device))}")
    print(
        f"causal linear attention + RoPE, B={args.batch} H={args.heads} D={args.head_dim} "
        f"C={args.chunk_size} {args.dtype} on {device} (torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads)"
    )
    on_cpu = device.type == "cpu"
    measure = "CPU" if on_cpu else "wall"
    print(f"{'T':>8} {'wall s':>9} {'CPU s':>9} {measure + ' ms/1k tok':>16} {'ratio vs T/4':>13}")
    times = {}
    for T in args.lengths:
        g = torch.Generator(device="cpu").manual_seed(T)
        q, k, v = (
            torch.randn(args.batch, args.heads, T, args.head_dim, generator=g).to(device, dtype)
            for _ in range(3)
        )
        cos, sin = (
            torch.as_tensor(t, dtype=torch.float32, device=device)
            for t in ropelab.rope_tables(cfg, np.arange(T))
        )

        def call(q=q, k=k, v=v, cos=cos, sin=sin):
            with torch.no_grad():
                return linear_attention(q, k, v, cos=cos, sin=sin, layout=cfg.layout, chunk_size=args.chunk_size)

        # best of the repeats after one warm-up call; CPU time counts only this process's
        # work, the fairer measure on a shared machine (on a GPU only wall time means anything)
        t = timing.time_calls(call, reps=args.repeats, warmup=1, sync=timing.cuda_sync(device))
        wall, cpu = t.min, min(t.cpu_seconds)
        seconds = cpu if on_cpu else wall
        times[T] = seconds
        ratio = f"{seconds / times[T // 4]:.2f}x" if T // 4 in times else "-"
        print(f"{T:>8} {wall:>9.4f} {cpu:>9.4f} {1e6 * seconds / T:>16.3f} {ratio:>13}")
    worst = [times[T] / times[T // 4] for T in times if T // 4 in times]
    if worst:
        verdict = "PASS" if max(worst) < 6 else "FAIL"
        print(
            f"4x length costs at most {max(worst):.2f}x the {measure} time (bar: < 6x): {verdict}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
