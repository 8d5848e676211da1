"""RotaryEmbedding with rows made per call: far positions, prefill in place, ONNX Runtime.

``ropelab.torch.RotaryEmbedding`` keeps no table: each call makes the exact cos/sin
rows of the positions it rotates. Three measurements, each against a baseline timed in
the same run (interleaved, so a change in the machine's load hits both):

(a) decode step, q (1, 32, 1, 128) and k (1, 8, 1, 128), at position 2**31 - 1 against
    position 10: the time ratio, and the growth of the process's peak resident memory
    (``ru_maxrss``) while calling at each position. Peak RSS counts every allocation
    that touches memory (torch's CPU allocator, numpy, numba) and never goes down, so
    the far position is measured after the near one: anything it allocated beyond the
    near position's peak shows up. A table reaching position 2**31 - 1 would be 16 GiB.
(b) prefill, q and k (1, 32, 4096, 128) float32, rotated in place (``rotate_``, the rows
    made inside the call) against ``copy_`` of q and k into preallocated buffers: the
    least any op that reads and writes q and k can cost.
(c) the same prefill in the (B, S, H, D) layout against ONNX Runtime's
    ``com.microsoft.RotaryEmbedding`` CPU kernel (input (B, S, H*D), position_ids,
    cos_cache and sin_cache), writing into preallocated outputs through io_binding.
    ORT is handed its cos/sin cache ready made (not timed); ropelab makes its rows in
    the timed call. Skipped, with a message, where onnxruntime is not installed.

(b) and (c) also time ``mul_(1.0)`` of q and k in place: one read and one write of each
element, the least any in-place op on q and k costs on the machine (its memory floor).
An in-place rotation at that floor is as fast as it can be; ORT / floor then bounds
the ratio ORT / ropelab from above.

    python benchmarks/bench_rows.py [--reps 20]
    python benchmarks/bench_rows.py --smoke   # tiny sizes: checks the script
"""

from __future__ import annotations

import argparse
import resource
import sys

import numpy as np
import torch

from ropelab import RopeConfig, kernels, rope_tables, timing
from ropelab.torch import RotaryEmbedding

FAR = 2**31 - 1
NEAR = 10
PREFILL = (1, 32, 4096, 128)
SMOKE_PREFILL = (1, 4, 64, 128)


def _peak_rss_mib() -> float:
    """The process's peak resident memory so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def bench_decode(reps: int, calls: int) -> dict:
    rope = RotaryEmbedding(RopeConfig(128, layout="half"))
    q, k = torch.randn(1, 32, 1, 128), torch.randn(1, 8, 1, 128)
    near, far = torch.tensor([[NEAR]]), torch.tensor([[FAR]])
    with torch.no_grad():
        rope(q, k, near)  # first calls: kernels loaded
        rope(q, k, far)
        times = timing.round_robin({"near": lambda: rope(q, k, near), "far": lambda: rope(q, k, far)},
                                   reps=reps, warmup=calls, calls=calls)
        grew = {}
        for name, positions in (("near", near), ("far", far)):
            before = _peak_rss_mib()
            for _ in range(200):
                rope(q, k, positions)
            grew[name] = _peak_rss_mib() - before
    us = {name: t.median * 1e6 for name, t in times.items()}
    ratio = us["far"] / us["near"]
    print(f"(a) decode step q (1, 32, 1, 128), k (1, 8, 1, 128), median of {reps} x {calls} calls:")
    print(f"    position {NEAR}: {us['near']:.1f} us, peak RSS grew {grew['near']:.2f} MiB over 200 calls")
    print(f"    position {FAR}: {us['far']:.1f} us, peak RSS grew {grew['far']:.2f} MiB over 200 calls")
    print(f"    time far / near: {ratio:.2f}x; peak memory difference: {grew['far'] - grew['near']:.2f} MiB")
    return {"near_us": us["near"], "far_us": us["far"], "ratio": ratio,
            "near_rss_mib": grew["near"], "far_rss_mib": grew["far"]}


def bench_prefill(shape, reps: int) -> dict:
    rope = RotaryEmbedding(RopeConfig(shape[-1]))
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    bq, bk = torch.empty_like(q), torch.empty_like(k)

    def copy():
        bq.copy_(q)
        bk.copy_(k)

    with torch.no_grad():
        times = timing.round_robin({"copy_": copy, "rotate_": lambda: rope.rotate_(q, k), "floor": _floor(q, k)},
                                   reps=reps, warmup=2)
    ms = {name: t.median * 1e3 for name, t in times.items()}
    ratio = ms["rotate_"] / ms["copy_"]
    print(f"(b) prefill q, k {shape} float32, median of {reps}:")
    print(f"    copy_ into preallocated buffers: {ms['copy_']:.2f} ms")
    print(f"    RotaryEmbedding.rotate_ (rows made in the call): {ms['rotate_']:.2f} ms = {ratio:.2f}x copy_, "
          f"{ms['rotate_'] / ms['floor']:.2f}x the in-place floor (mul_ of q and k: {ms['floor']:.2f} ms)")
    return {"copy_ms": ms["copy_"], "rotate_ms": ms["rotate_"], "floor_ms": ms["floor"], "ratio": ratio}


def _floor(q, k):
    """The memory floor of an in-place op on q and k: each element read and written once."""
    def scale():
        q.mul_(1.0)
        k.mul_(1.0)
    return scale


def _ort_session(ort, onnx, shape, config):
    """q and k through two com.microsoft.RotaryEmbedding nodes: (B, S, H*D) in, out."""
    from onnx import TensorProto, helper

    b, h, s, d = shape
    half = config.rotary_dim // 2
    nodes, inputs, outputs = [], [], []
    for name in ("q", "k"):
        nodes.append(helper.make_node(
            "RotaryEmbedding", [name, "position_ids", "cos_cache", "sin_cache"], [f"{name}_out"],
            domain="com.microsoft", num_heads=h, interleaved=int(config.layout == "interleaved")))
        inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [b, s, h * d]))
        outputs.append(helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [b, s, h * d]))
    inputs += [helper.make_tensor_value_info("position_ids", TensorProto.INT64, [b, s]),
               helper.make_tensor_value_info("cos_cache", TensorProto.FLOAT, [s, half]),
               helper.make_tensor_value_info("sin_cache", TensorProto.FLOAT, [s, half])]
    graph = helper.make_graph(nodes, "rope", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    # ORT's workers spin after a run by default, which would take the cores from the
    # contender timed next (the timings interleave)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def bench_ort(shape, reps: int) -> dict | None:
    try:
        import onnx
        import onnxruntime as ort
    except ImportError as err:
        print(f"(c) ONNX Runtime skipped: {err} (pip install onnxruntime onnx)")
        return None
    b, h, s, d = shape
    config = RopeConfig(d, layout="half")
    rope = RotaryEmbedding(config)
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(b, s, h, d, generator=g), torch.randn(b, s, h, d, generator=g)  # (B, S, H, D)
    session = _ort_session(ort, onnx, shape, config)
    cos, sin = (np.ascontiguousarray(t, dtype=np.float32) for t in rope_tables(config, np.arange(s)))
    position_ids = np.broadcast_to(np.arange(s, dtype=np.int64), (b, s)).copy()
    out_q, out_k = np.empty((b, s, h * d), np.float32), np.empty((b, s, h * d), np.float32)
    binding = session.io_binding()
    for name, value in (("q", q.numpy().reshape(b, s, h * d)), ("k", k.numpy().reshape(b, s, h * d)),
                        ("position_ids", position_ids), ("cos_cache", cos), ("sin_cache", sin)):
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value))
    binding.bind_ortvalue_output("q_out", ort.OrtValue.ortvalue_from_numpy(out_q))
    binding.bind_ortvalue_output("k_out", ort.OrtValue.ortvalue_from_numpy(out_k))
    session.run_with_iobinding(binding)
    with torch.no_grad():  # the same numbers, before timing
        want_q, want_k = rope(q, k, heads_first=False)
    err = max(float(np.abs(out_q - want_q.reshape(b, s, h * d).numpy()).max()),
              float(np.abs(out_k - want_k.reshape(b, s, h * d).numpy()).max()))
    qq, kk = q.clone(), k.clone()
    with torch.no_grad():
        times = timing.round_robin({"ort": lambda: session.run_with_iobinding(binding),
                                    "ropelab": lambda: rope.rotate_(qq, kk, heads_first=False),
                                    "floor": _floor(qq, kk)},
                                   reps=reps, warmup=2)
    ms = {name: t.median * 1e3 for name, t in times.items()}
    ratio = ms["ort"] / ms["ropelab"]
    print(f"(c) prefill q, k {(b, s, h, d)} float32 (B, S, H, D), median of {reps}; "
          f"onnxruntime {ort.__version__}, {torch.get_num_threads()} threads each:")
    print(f"    ORT com.microsoft.RotaryEmbedding into preallocated outputs: {ms['ort']:.2f} ms "
          f"(largest difference from ropelab {err:.1e})")
    print(f"    RotaryEmbedding.rotate_(heads_first=False): {ms['ropelab']:.2f} ms; ORT / ropelab: {ratio:.2f}x")
    print(f"    in-place floor (mul_ of q and k): {ms['floor']:.2f} ms; ropelab / floor: "
          f"{ms['ropelab'] / ms['floor']:.2f}x, ORT / floor: {ms['ort'] / ms['floor']:.2f}x")
    return {"ort_ms": ms["ort"], "ropelab_ms": ms["ropelab"], "floor_ms": ms["floor"], "ratio": ratio,
            "max_diff": err}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script")
    args = parser.parse_args(argv)
    print(f"machine: {timing.machine_line(timing.machine())}")
    print(kernels.backend_note())
    reps = 3 if args.smoke else args.reps
    shape = SMOKE_PREFILL if args.smoke else PREFILL
    return {"decode": bench_decode(reps, 20 if args.smoke else 500),
            "prefill": bench_prefill(shape, reps),
            "ort": bench_ort(shape, reps)}


if __name__ == "__main__":
    main()
