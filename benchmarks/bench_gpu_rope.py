"""RoPE on a GPU: ropelab's Triton kernel against the copy bandwidth and the peers, in one run.

For q and k of each shape (bfloat16, half layout, one table row per token): the time of
a device-to-device copy of q and k (the bandwidth floor: every byte read and written
once), ropelab in place (``apply_rope_((q, k), ...)``) and out of place
(``rope_op.rotate_qk``), transformers' eager ``apply_rotary_pos_emb``, ``torch.compile``
of it, and flash-attention's / Liger's rotary kernels where installed. Then a decode
step (one token at position 4000) through ``RotaryEmbedding`` against transformers'
rotary module. Ratios are measured within the run.

    python benchmarks/bench_gpu_rope.py [--reps 50] [--no-compile]
    python benchmarks/bench_gpu_rope.py --smoke   # tiny shapes, any device (checks the script)
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from ropelab import RopeConfig, apply_rope_, kernels, rope_tables, timing
from ropelab.torch import RotaryEmbedding, rope_op

SHAPES = [(8, 32, 4096, 128), (1, 32, 16384, 128)]
SMOKE_SHAPES = [(1, 4, 64, 32)]


def _timer(device):
    """A function timing ``fn`` over ``reps`` calls: median ms per call of 5 rounds of
    ``reps`` calls, after one warm-up call (compiles), the device synchronised around each."""
    sync = timing.cuda_sync(device)

    def run(fn, reps):
        return timing.time_calls(fn, reps=5, warmup=1, calls=reps, sync=sync).median * 1e3

    return run


def _peers():
    """Rotary kernels of other projects installed here: name -> fn(q, k, cos, sin) on
    (B, H, T, D) q/k and (T, D/2) tables."""
    found = {}
    try:
        from flash_attn.layers.rotary import apply_rotary_emb

        def flash(q, k, cos, sin):  # it wants (B, T, H, D)
            return (apply_rotary_emb(q.transpose(1, 2), cos, sin).transpose(1, 2),
                    apply_rotary_emb(k.transpose(1, 2), cos, sin).transpose(1, 2))

        found["flash-attn rotary"] = flash
    except ImportError:
        pass
    try:
        from liger_kernel.transformers.rope import liger_rotary_pos_emb

        def liger(q, k, cos, sin):
            full_cos, full_sin = torch.cat([cos, cos], -1)[None], torch.cat([sin, sin], -1)[None]
            return liger_rotary_pos_emb(q, k, full_cos, full_sin)

        found["liger rotary"] = liger
    except ImportError:
        pass
    return found


def _hf_apply():
    try:
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb
    except ImportError:
        return None
    return apply_rotary_pos_emb


def bench_shape(shape, device, reps, compile_):
    B, H, T, D = shape
    time_ms = _timer(device)
    cfg = RopeConfig(D, layout="half")
    cos, sin = (torch.from_numpy(t).float().to(device) for t in rope_tables(cfg, np.arange(T)))
    q = torch.randn(shape, device=device, dtype=torch.bfloat16)
    k = torch.randn(shape, device=device, dtype=torch.bfloat16)
    moved = 2 * (q.numel() + k.numel()) * q.element_size()  # bytes read + written
    qc, kc = torch.empty_like(q), torch.empty_like(k)
    rows = {}
    rows["copy (floor)"] = time_ms(lambda: (qc.copy_(q), kc.copy_(k)), reps)
    rows["ropelab in place"] = time_ms(lambda: apply_rope_((q, k), cos, sin, layout="half"), reps)
    with torch.no_grad():
        rows["ropelab out of place"] = time_ms(lambda: rope_op.rotate_qk(q, k, cos, sin, "half"), reps)
    hf = _hf_apply()
    if hf is not None:
        full_cos = torch.cat([cos, cos], -1)[None].to(q.dtype)  # (1, T, D), as transformers builds it
        full_sin = torch.cat([sin, sin], -1)[None].to(q.dtype)
        rows["transformers eager"] = time_ms(lambda: hf(q, k, full_cos, full_sin), reps)
        if compile_:
            compiled = torch.compile(hf)
            rows["torch.compile(transformers)"] = time_ms(lambda: compiled(q, k, full_cos, full_sin), reps)
    for name, fn in _peers().items():
        rows[name] = time_ms(lambda fn=fn: fn(q, k, cos, sin), reps)
    floor = rows["copy (floor)"]
    print(f"\nq and k {shape} bfloat16 on {device} ({moved / 2**20:.0f} MiB moved per call)")
    print(f"{'contender':32s} {'ms':>9s} {'GB/s':>8s} {'of copy':>8s}")
    for name, ms in rows.items():
        print(f"{name:32s} {ms:9.3f} {moved / ms / 1e6:8.1f} {floor / ms:8.0%}")
    best = min(rows["ropelab in place"], rows["ropelab out of place"])
    print("ropelab's share of the copy bandwidth: "
          f"{floor / rows['ropelab in place']:.0%} in place, {floor / rows['ropelab out of place']:.0%} out of place")
    if "transformers eager" in rows:
        print(f"  transformers eager takes {rows['transformers eager'] / best:.1f}x ropelab's time")
    if "torch.compile(transformers)" in rows:
        print(f"  torch.compile(transformers) takes {rows['torch.compile(transformers)'] / best:.2f}x ropelab's time")
    return rows


def bench_decode(device, reps):
    time_ms = _timer(device)
    q = torch.randn(1, 32, 1, 128, device=device, dtype=torch.bfloat16)
    k = torch.randn(1, 8, 1, 128, device=device, dtype=torch.bfloat16)
    position = torch.tensor([[4000]], device=device)
    ours = RotaryEmbedding(RopeConfig(128, layout="half")).to(device)
    with torch.no_grad():
        rows = {"ropelab RotaryEmbedding": time_ms(lambda: ours(q, k, position), reps)}
        try:
            from transformers import LlamaConfig
            from transformers.models.llama.modeling_llama import (
                LlamaRotaryEmbedding,
                apply_rotary_pos_emb,
            )
        except ImportError:
            LlamaRotaryEmbedding = None
        if LlamaRotaryEmbedding is not None:
            hf = LlamaRotaryEmbedding(LlamaConfig(hidden_size=4096, num_attention_heads=32, num_key_value_heads=8,
                                                  max_position_embeddings=8192)).to(device)

            def theirs():
                cos, sin = hf(q, position)
                return apply_rotary_pos_emb(q, k, cos, sin)

            rows["transformers rotary + apply"] = time_ms(theirs, reps)
    print(f"\ndecode step (q (1, 32, 1, 128), k (1, 8, 1, 128), position 4000) on {device}")
    for name, ms in rows.items():
        print(f"{name:32s} {ms * 1e3:9.1f} us")
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (slow to build)")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on any device: checks the script")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.smoke:
        parser.error("no CUDA device here: this benchmark is for GPUs (--smoke runs it small on the CPU)")
    print(f"machine: {timing.machine_line(timing.machine(device))}")
    print(kernels.backend_note())
    reps = 2 if args.smoke else args.reps
    results = {"shapes": {str(s): bench_shape(s, device, reps, not (args.no_compile or args.smoke))
                          for s in (SMOKE_SHAPES if args.smoke else SHAPES)}}
    results["decode"] = bench_decode(device, 2 if args.smoke else 20 * args.reps)
    return results


if __name__ == "__main__":
    main()
