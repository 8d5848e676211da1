"""Causal RoPE attention at long T: ropelab.torch.Attention vs the same thing written plainly.

Three variants, same weights, float32, no grad, batch 1:

- ``ropelab``: :class:`ropelab.torch.Attention` with ``rope=RopeConfig(64, layout="half")``.
- ``plain``: the same four projections, rotary written out as Hugging Face Llama does
  (float32 angles, ``rotate_half``) and ``scaled_dot_product_attention(is_causal=True)``.
- ``full``: seed 000's algorithm: the full ``T x T`` score matrix, an additive triangular
  mask, softmax, then ``@ v`` (run at a smaller T, where it fits in memory).

Each variant runs in its own subprocess so its peak memory is its own: on CPU the
peak resident set size (``ru_maxrss``) during one forward pass minus that before it;
on CUDA ``torch.cuda.max_memory_allocated`` likewise. A 16-token warm-up runs before the
measured pass (kernel JIT and lazy imports are one-time costs). Time is the median over
``--rounds`` interleaved subprocesses per variant (``--repeats`` timed runs each), so
load from other processes falls on every variant alike; memory is the median peak.

Usage::

    python benchmarks/bench_attention.py                  # T=16384, full at T=4096
    python benchmarks/bench_attention.py --T 4096 --full-T 2048 --device cuda
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time

D_MODEL, HEADS = 512, 8


def _rss_mib() -> float:
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _variant(name: str, T: int, device: str, repeats: int) -> dict:
    import torch

    import ropelab
    from ropelab.torch import Attention

    torch.manual_seed(0)
    head_dim = D_MODEL // HEADS
    attn = (
        Attention(D_MODEL, HEADS, rope=ropelab.RopeConfig(head_dim, layout="half"))
        .to(device)
        .eval()
    )
    x = torch.randn(1, T, D_MODEL, device=device)

    def plain(x):
        b, t, _ = x.shape
        q = attn.q_proj(x).view(b, t, HEADS, head_dim).transpose(1, 2)  # (B, H, T, D)
        k = attn.k_proj(x).view(b, t, HEADS, head_dim).transpose(1, 2)
        v = attn.v_proj(x).view(b, t, HEADS, head_dim).transpose(1, 2)
        inv_freq = 1.0 / (
            10000.0 ** (torch.arange(0, head_dim, 2, device=x.device).float() / head_dim)
        )
        angles = torch.arange(t, device=x.device).float()[:, None] * inv_freq  # (T, D/2)
        emb = torch.cat((angles, angles), dim=-1)
        cos, sin = emb.cos(), emb.sin()

        def rotate_half(u):
            return torch.cat((-u[..., head_dim // 2 :], u[..., : head_dim // 2]), dim=-1)

        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return attn.o_proj(y.transpose(1, 2).reshape(b, t, D_MODEL))

    def full(x):  # seed 000: explicit scores, additive -1e9 triangle, softmax
        b, t, _ = x.shape
        q = attn.q_proj(x).view(b, t, HEADS, head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(b, t, HEADS, head_dim).transpose(1, 2)
        v = attn.v_proj(x).view(b, t, HEADS, head_dim).transpose(1, 2)
        q, k = attn.rope(q, k)
        scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim)  # (B, H, T, T)
        scores = scores + torch.triu(torch.full((t, t), -1e9, device=x.device), diagonal=1)
        weights = torch.softmax(scores, dim=-1)
        return attn.o_proj((weights @ v).transpose(1, 2).reshape(b, t, D_MODEL))

    fn = {"ropelab": attn, "plain": plain, "full": full}[name]
    attn.rope.ensure(T)  # tables built once, outside the measured region
    cuda = device.startswith("cuda")

    def sync():
        if cuda:
            torch.cuda.synchronize()

    with torch.no_grad():
        # a short warm-up first, so one-time costs (kernel JIT, allocator pools, lazy
        # imports) do not count as the long pass's memory
        fn(x[:, :16])
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated() / 2**20
        else:
            before = _rss_mib()
        out = fn(x)
        sync()
        peak = (torch.cuda.max_memory_allocated() / 2**20 if cuda else _rss_mib()) - before
        check = float(out.double().square().mean())
        del out
        times = []
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            fn(x)
            sync()
            times.append(time.perf_counter() - start)
    return {
        "variant": name,
        "T": T,
        "device": device,
        "seconds": statistics.median(times),
        "times": times,
        "peak_mib": peak,
        "mean_square": check,
        "threads": torch.get_num_threads(),
    }


def _run_child(name, T, device, repeats) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        name,
        "--T",
        str(T),
        "--device",
        device,
        "--repeats",
        str(repeats),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--T", type=int, default=16384, help="sequence length for ropelab vs plain")
    p.add_argument(
        "--full-T", type=int, default=4096, help="sequence length for all three (0: skip)"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=1, help="timed runs per subprocess")
    p.add_argument("--rounds", type=int, default=3, help="subprocesses per variant, interleaved")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(_variant(args.child, args.T, args.device, args.repeats)))
        return 0

    rows = []
    for T, names in ((args.T, ("plain", "ropelab")), (args.full_T, ("plain", "ropelab", "full"))):
        if T <= 0:
            continue
        # rounds interleave the variants, so load from other processes hits them alike
        runs = {n: [] for n in names}
        for _ in range(args.rounds):
            for n in names:
                runs[n].append(_run_child(n, T, args.device, args.repeats))
        results = {}
        for n, rs in runs.items():
            times = [t for r in rs for t in r["times"]]
            results[n] = dict(
                rs[0],
                times=times,
                seconds=statistics.median(times),
                peak_mib=statistics.median(r["peak_mib"] for r in rs),
            )
        base = results["plain"]
        for n, r in results.items():
            rows.append(r)
            print(
                f"T={T:6d} {n:8s} {r['seconds']:8.3f} s  peak {r['peak_mib']:9.1f} MiB   "
                f"time x{r['seconds'] / base['seconds']:5.2f}  memory x{r['peak_mib'] / base['peak_mib']:6.2f} "
                f"(vs plain; {r['threads']} threads, {args.device})"
            )
        # same weights and positions: the outputs agree
        assert math.isclose(results["ropelab"]["mean_square"], base["mean_square"], rel_tol=1e-4)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
