"""``ropelab bench``: this machine's RoPE speed against the memory limit and the peers.

RoPE is memory bound: the least it can cost is one read and one write of q and k, which
is what ``copy_`` into preallocated buffers costs (the "memory limit" here). Three parts:

1. RoPE throughput, q and k ``(B, H, T, D) = (1, 32, 4096, 128)``, half layout, float32
   and bfloat16: median time, GB/s (2 x bytes of q and k over the time) and the ratio
   to ``copy_`` for ``copy_``, ``clone()``, ropelab in place / out of place / its op
   under ``torch.compile``, transformers' eager ``apply_rotary_pos_emb``,
   rotary-embedding-torch (when installed) and ``jax.jit(ropelab.apply_rope)``.
2. Attention scaling: time and peak memory against T for :class:`ropelab.torch.Attention`
   (SDPA, no T x T matrix) and a seed-000 style full score matrix (same weights).
3. Decode: one-token step latency against context length (RoPE alone, and a whole
   :class:`ropelab.torch.Attention` step over a KV cache).

Timings interleave the contenders round by round (so drift in machine load hits all
alike) and report medians. Writes ``bench.json`` and ``bench.png`` to ``--out``.
Shapes: B batch, H heads, T time, D head dim.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import threading
import time
from pathlib import Path

import numpy as np

from .config import RopeConfig
from .tables import rope_tables

FULL = dict(shape=(1, 32, 4096, 128), reps=15, attn_T=(1024, 2048, 4096, 8192, 16384),
            attn=dict(d_model=512, heads=8), decode_ctx=(1024, 2048, 4096, 8192, 16384), decode_reps=30)
QUICK = dict(shape=(1, 4, 256, 64), reps=3, attn_T=(128, 256), attn=dict(d_model=64, heads=2),
             decode_ctx=(128, 256), decode_reps=3)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="small shapes, few repetitions (a smoke test)")
    parser.add_argument("--out", default="out/bench", help="directory for bench.json and bench.png")
    parser.add_argument("--reps", type=_positive_int, default=None, help="timed repetitions per contender (>= 1)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile contender")
    parser.add_argument("--no-jax", action="store_true", help="skip the jax contender")
    parser.add_argument("--no-plot", action="store_true", help="write bench.json only")


# -- timing helpers ------------------------------------------------------------------


def _round_robin(contenders: dict, reps: int, warmup: int = 2) -> dict:
    """name -> list of seconds; each round times every contender once, in turn."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in contenders}
    for _ in range(reps):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _PeakRSS:
    """Peak resident memory above the level at entry, sampled every half millisecond."""

    def __enter__(self):
        self.base = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(0.0005)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())
        self.bytes = self.peak - self.base


def _unbuffer_malloc() -> None:
    """Make glibc map (and unmap on free) every block >= 1 MiB, so resident memory
    tracks the live tensors; otherwise freed blocks stay resident and later peaks hide."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD (fixing it also stops its growth)
        libc.mallopt(-1, 1 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def _mem_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


# -- part 1: RoPE throughput ---------------------------------------------------------


def _hf_apply():
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb
    except ImportError:
        return None
    return apply_rotary_pos_emb


def _rope_throughput(torch, dtype_name: str, cfg: dict, args, notes: list) -> list[dict]:
    from . import apply_rope, apply_rope_, kernels
    from .torch import rope_op

    B, H, T, D = cfg["shape"]
    reps = args.reps or cfg["reps"]
    dtype = getattr(torch, dtype_name)
    rope = RopeConfig(D, layout="half")
    cos64, sin64 = rope_tables(rope, np.arange(T))  # (T, D/2) float64, exact
    cos, sin = torch.from_numpy(cos64).float(), torch.from_numpy(sin64).float()  # cached once, as a module would
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(B, H, T, D, generator=gen).to(dtype)
    k = torch.randn(B, H, T, D, generator=gen).to(dtype)
    bq, bk = torch.empty_like(q), torch.empty_like(k)
    moved = 2 * (q.nbytes + k.nbytes)  # one read and one write of q and k

    contenders = {
        "copy_ (memory limit)": lambda: (bq.copy_(q), bk.copy_(k)),
        "clone()": lambda: (q.clone(), k.clone()),
        "ropelab in place": lambda: apply_rope_((q, k), cos, sin, layout="half"),
        "ropelab out of place": lambda: apply_rope((q, k), cos, sin, layout="half"),
    }
    if not args.no_compile:
        compiled = torch.compile(
            lambda q, k: (rope_op.rotate(q, cos, sin, "half"), rope_op.rotate(k, cos, sin, "half")),
            fullgraph=True,
        )
        compiled(q, k)  # compile outside the timing
        contenders["ropelab op, torch.compile"] = lambda: compiled(q, k)

    hf = _hf_apply()
    if hf is not None:
        # as LlamaRotaryEmbedding builds them: emb = cat(freqs, freqs), cast to x's dtype
        hf_cos = torch.cat([cos, cos], -1)[None].to(dtype)  # (1, T, D)
        hf_sin = torch.cat([sin, sin], -1)[None].to(dtype)
        contenders["transformers eager apply_rotary_pos_emb"] = lambda: hf(q, k, hf_cos, hf_sin)
    else:
        notes.append("transformers: not installed")

    try:
        from rotary_embedding_torch import RotaryEmbedding as RET  # noqa: N814

        ret = RET(dim=D, use_xpos=False)
        contenders["rotary-embedding-torch"] = lambda: (ret.rotate_queries_or_keys(q), ret.rotate_queries_or_keys(k))
    except ImportError:
        ret = None

    times = _round_robin(contenders, reps)
    copy_t = statistics.median(times["copy_ (memory limit)"])
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        rows.append(dict(name=name, dtype=dtype_name, median_ms=med * 1e3, min_ms=min(ts) * 1e3,
                         gb_s=moved / med / 1e9, ratio_to_copy=med / copy_t, reps=len(ts)))
    if ret is None:
        rows.append(dict(name="rotary-embedding-torch", dtype=dtype_name, note="not installed"))
    if not args.no_jax:
        rows.append(_jax_throughput(dtype_name, cfg["shape"], reps, moved, copy_t))
    del kernels
    return rows


_JAX_SCRIPT = r"""
import json, statistics, sys, time
import numpy as np
import jax, jax.numpy as jnp
from ropelab import RopeConfig, apply_rope, rope_tables
dtype_name, shape, reps = json.loads(sys.argv[1])
B, H, T, D = shape
cos, sin = (jnp.asarray(t, jnp.float32) for t in rope_tables(RopeConfig(D, layout="half"), np.arange(T)))
rng = np.random.default_rng(0)
dt = jnp.float32 if dtype_name == "float32" else jnp.bfloat16
q = jnp.asarray(rng.standard_normal(shape, dtype=np.float32), dt)
k = jnp.asarray(rng.standard_normal(shape, dtype=np.float32), dt)
f = jax.jit(lambda q, k, c, s: (apply_rope(q, c, s, layout="half"), apply_rope(k, c, s, layout="half")))
hlo = f.lower(q, k, cos, sin).compile().as_text()
fusions = hlo[hlo.index("ENTRY"):].count(" fusion(")  # one loop per output: q and k
for _ in range(2):
    jax.block_until_ready(f(q, k, cos, sin))
ts = []
for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(f(q, k, cos, sin))
    ts.append(time.perf_counter() - t0)
print(json.dumps(dict(median=statistics.median(ts), min=min(ts), n=len(ts), version=jax.__version__,
                      fusions=fusions)))
"""


def _jax_throughput(dtype_name: str, shape, reps: int, moved: int, copy_t: float) -> dict:
    """jax.jit(apply_rope) timed in a child process: XLA's spinning thread pool would
    otherwise steal the cores from every torch contender timed after it."""
    import subprocess
    import sys

    name = "jax.jit(ropelab.apply_rope)"
    try:
        import importlib.util

        if importlib.util.find_spec("jax") is None:
            return dict(name=name, dtype=dtype_name, note="not installed")
    except ValueError:
        return dict(name=name, dtype=dtype_name, note="not installed")
    done = subprocess.run([sys.executable, "-c", _JAX_SCRIPT, json.dumps([dtype_name, list(shape), reps])],
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        return dict(name=name, dtype=dtype_name, note=f"failed: {done.stderr.strip().splitlines()[-1:]}")
    got = json.loads(done.stdout.strip().splitlines()[-1])
    med = got["median"]
    return dict(name=name, dtype=dtype_name, median_ms=med * 1e3, min_ms=got["min"] * 1e3,
                gb_s=moved / med / 1e9, ratio_to_copy=med / copy_t, reps=got["n"],
                hlo_fusions=got["fusions"],
                note=f"jax {got['version']} in its own process; XLA fused q and k into "
                     f"{got['fusions']} loop(s); ratio against this process's copy_")


def _targets(rows: list[dict]) -> list[dict]:
    """The issue's ratios, per dtype: in place / copy_, transformers / in place, out / clone."""
    out = []
    for dtype in sorted({r["dtype"] for r in rows}):
        t = {r["name"]: r["median_ms"] for r in rows if r["dtype"] == dtype and "median_ms" in r}
        checks = []
        if "ropelab in place" in t:
            checks.append(("in place / copy_", t["ropelab in place"] / t["copy_ (memory limit)"], "<=", 1.3))
        hf = t.get("transformers eager apply_rotary_pos_emb")
        if hf and "ropelab in place" in t:
            checks.append(("transformers eager / in place", hf / t["ropelab in place"], ">=", 15.0))
        if "ropelab out of place" in t:
            checks.append(("out of place / clone()", t["ropelab out of place"] / t["clone()"], "<=", 1.5))
        for name, value, op, bound in checks:
            ok = value <= bound if op == "<=" else value >= bound
            out.append(dict(dtype=dtype, check=name, value=value, target=f"{op} {bound}", met=ok))
    return out


# -- part 2: attention scaling -----------------------------------------------------------


def _full_matrix_attention(torch, attn, x):
    """Seed-000 style: the whole (B, H, T, T) score matrix, masked, softmaxed, times V."""
    from .torch import rope_op

    B, T, _ = x.shape
    H, K, D = attn.num_heads, attn.num_kv_heads, attn.head_dim
    q = attn.q_proj(x).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
    k = attn.k_proj(x).view(B, T, K, D).transpose(1, 2)
    v = attn.v_proj(x).view(B, T, K, D).transpose(1, 2)
    cos, sin = attn.rope.tables_for(None, 0, T)
    q, k = rope_op.rotate(q, cos, sin, "half"), rope_op.rotate(k, cos, sin, "half")
    scores = q @ k.transpose(-1, -2) / D**0.5  # (B, H, T, T)
    causal = torch.ones(T, T, dtype=torch.bool).triu_(1)
    weights = scores.masked_fill(causal, float("-inf")).softmax(-1)
    y = (weights @ v).transpose(1, 2).reshape(B, T, H * D)
    return attn.o_proj(y)


def _attention_scaling(torch, cfg: dict, notes: list) -> list[dict]:
    try:
        from .torch import Attention
    except ImportError as err:
        notes.append(f"attention scaling skipped: ropelab.torch.Attention is not available ({err})")
        return []
    d_model, heads = cfg["attn"]["d_model"], cfg["attn"]["heads"]
    torch.manual_seed(0)
    attn = Attention(d_model, heads, rope=RopeConfig(d_model // heads, layout="half")).eval()
    budget = 0.4 * _mem_available()
    rows = []
    with torch.no_grad():
        for T in cfg["attn_T"]:
            x = torch.randn(1, T, d_model)
            for name, fn in (("ropelab Attention (SDPA)", lambda x=x: attn(x)),
                             ("full score matrix (seed 000)", lambda x=x: _full_matrix_attention(torch, attn, x))):
                need = 3 * heads * T * T * 4  # scores, masked, softmax: float32 (H, T, T) each
                if name.startswith("full") and need > budget:
                    rows.append(dict(name=name, T=T, note=f"skipped: needs ~{need / 2**30:.1f} GiB"))
                    continue
                fn()  # warm (tables, kernels)
                reps = 3 if T <= 4096 else 1
                times, peak = [], 0
                for _ in range(reps):
                    with _PeakRSS() as mem:
                        t0 = time.perf_counter()
                        fn()
                        times.append(time.perf_counter() - t0)
                    peak = max(peak, mem.bytes)
                rows.append(dict(name=name, T=T, median_ms=statistics.median(times) * 1e3,
                                 peak_mib=peak / 2**20))
    return rows


# -- part 3: decode latency -----------------------------------------------------------------


def _decode(torch, cfg: dict, notes: list) -> list[dict]:
    from . import apply_rope_

    B, H, _, D = cfg["shape"]
    reps = cfg["decode_reps"]
    hf = _hf_apply()
    rows = []
    for ctx in cfg["decode_ctx"]:
        rope = RopeConfig(D, layout="half")
        cos64, sin64 = rope_tables(rope, np.arange(ctx + 64))
        cos, sin = torch.from_numpy(cos64).float(), torch.from_numpy(sin64).float()  # (P, D/2)
        q, k = torch.randn(B, H, 1, D), torch.randn(B, H, 1, D)
        pos = torch.tensor([ctx])
        contenders = {
            "ropelab apply_rope_ (positions)":
                lambda q=q, k=k, cos=cos, sin=sin, pos=pos: apply_rope_((q, k), cos, sin, layout="half", positions=pos)
        }
        if hf is not None:
            inv_freq = torch.from_numpy(rope.inv_freq()).float()

            def hf_step(q=q, k=k, pos=pos, inv_freq=inv_freq):  # LlamaRotaryEmbedding.forward, then apply
                freqs = pos[None, :, None].float() * inv_freq[None, None, :]
                emb = torch.cat((freqs, freqs), -1)
                hf(q, k, emb.cos(), emb.sin())

            contenders["transformers rotary + apply (eager)"] = hf_step
        times = _round_robin(contenders, reps, warmup=3)
        row = dict(context=ctx, **{f"{n} us": statistics.median(t) * 1e6 for n, t in times.items()})
        rows.append(row)
    try:
        from .torch import Attention, KVCache
    except ImportError as err:
        notes.append(f"decode attention step skipped: ropelab.torch.Attention is not available ({err})")
        return rows
    d_model, heads = cfg["attn"]["d_model"], cfg["attn"]["heads"]
    torch.manual_seed(0)
    attn = Attention(d_model, heads, rope=RopeConfig(d_model // heads, layout="half")).eval()
    hd = d_model // heads
    with torch.no_grad():
        for row in rows:
            ctx = row["context"]
            cache = KVCache(1, heads, ctx + reps + 8, hd)
            cache.update(torch.randn(1, heads, ctx, hd), torch.randn(1, heads, ctx, hd),
                         torch.arange(ctx)[None])
            x = torch.randn(1, 1, d_model)
            times = _round_robin({"step": lambda x=x, cache=cache: attn(x, cache=cache)}, reps, warmup=3)
            row["ropelab Attention step with KV cache ms"] = statistics.median(times["step"]) * 1e3
    return rows


# -- report -------------------------------------------------------------------------


def _print_table(title: str, header: list[str], body: list[list[str]]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for h in header:
            table.add_column(h, justify="left" if h == header[0] else "right")
        for row in body:
            table.add_row(*row)
        Console().print(table)
    except ImportError:
        print(f"\n{title}")
        widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
        print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
        for r in body:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


def _label(name: str) -> str:
    """A contender's name for the plot (results saved by older versions name the full
    score matrix after the exercise it comes from)."""
    return re.sub(r"\s*\(seed \d+\)", "", name)


def _token_ticks(ax, lengths) -> None:
    """Ticks at these token counts, written 1K, 2K, ... (1K = 1024)."""
    if lengths:
        ax.set_xticks(lengths, [f"{n // 1024}K" if n % 1024 == 0 else str(n) for n in lengths])
        ax.minorticks_off()


def _plot(result: dict, path: Path) -> None:
    """bench.png from a result dict (``bench.json``): four panels, each with its unit.

    RoPE throughput as time relative to ``copy_`` (bars, each labelled in ms);
    attention forward time (ms) and peak memory (MiB) against T, in panels of their
    own; decode step latency (microseconds) against the context length.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, grid = plt.subplots(2, 2, figsize=(14, 10))
    axes = grid.ravel()  # RoPE, attention time, attention memory, decode
    ax = axes[0]
    rows = [r for r in result["rope"] if "median_ms" in r]
    names = list(dict.fromkeys(r["name"] for r in rows))
    dtypes = list(dict.fromkeys(r["dtype"] for r in rows))
    width = 0.8 / max(1, len(dtypes))
    for j, dt in enumerate(dtypes):
        found = {r["name"]: r for r in rows if r["dtype"] == dt}
        y = np.arange(len(names)) + j * width
        vals = [found[n]["ratio_to_copy"] if n in found else np.nan for n in names]
        ax.barh(y, vals, height=width, label=dt)
        for yi, n in zip(y, names, strict=True):
            if n in found:
                ax.text(found[n]["ratio_to_copy"] * 1.06, yi, f"{found[n]['median_ms']:.1f} ms",
                        va="center", fontsize=7)
    ax.set_yticks(np.arange(len(names)) + width * (len(dtypes) - 1) / 2, [_label(n) for n in names], fontsize=8)
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlim(right=ax.get_xlim()[1] * 2.5)  # room for the ms labels
    ax.set_xlabel("time relative to copy_ into preallocated buffers (log scale; bars labelled in ms)")
    ax.set_title(f"RoPE on q and k {tuple(result['config']['shape'])} (B, H, T, D), half layout", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax.invert_yaxis()

    att = [r for r in result["attention"] if "median_ms" in r]
    skipped = [r for r in result["attention"] if "median_ms" not in r]
    for ax, key, unit in ((axes[1], "median_ms", "time (ms)"), (axes[2], "peak_mib", "peak memory (MiB)")):
        for name in dict.fromkeys(r["name"] for r in att):
            pts = [(r["T"], r[key]) for r in att if r["name"] == name]
            ax.plot(*zip(*pts, strict=True), "o-", label=_label(name))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        _token_ticks(ax, sorted({r["T"] for r in result["attention"]}))
        ax.set_xlabel("sequence length T (tokens)")
        ax.set_ylabel(f"{unit}, log scale")
        ax.set_title(f"attention forward: {unit}", fontsize=10)
        ax.legend(loc="upper left", fontsize=8)
        if skipped:
            ax.text(0.98, 0.03, "\n".join(f"{_label(r['name'])}, T={r['T']}: {r.get('note', 'skipped')}"
                                           for r in skipped),
                    transform=ax.transAxes, ha="right", va="bottom", fontsize=7)

    ax = axes[3]
    dec = result["decode"]
    if dec:
        ctx = [r["context"] for r in dec]
        for key in dec[0]:
            if key == "context":
                continue
            scale = 1000 if key.endswith(" ms") else 1  # every series in microseconds
            ax.plot(ctx, [r.get(key, np.nan) * scale for r in dec], "o-", label=key.rsplit(" ", 1)[0])
        ax.legend(loc="center right", fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    _token_ticks(ax, [r["context"] for r in dec])
    ax.set_xlabel("context length (tokens in the cache)")
    ax.set_ylabel("time per decode step (microseconds, log scale)")
    ax.set_title("decode step latency, one token", fontsize=10)
    machine = result.get("machine", {})
    if machine:
        fig.suptitle(f"ropelab bench on a {machine.get('cpus')}-core CPU, torch {machine.get('torch')}, "
                     f"medians of {result['config'].get('reps')} runs", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args) -> int:
    from .cli import need, output_dir

    # everything the run needs, before minutes of timing
    torch = need("torch", feature="ropelab bench")
    if not args.no_plot:
        need("matplotlib", feature="ropelab bench's bench.png (or pass --no-plot)")
    out = output_dir(args.out)
    from . import kernels

    cfg = QUICK if args.quick else FULL
    _unbuffer_malloc()  # first, so no freed heap block hides a later peak
    notes: list[str] = []
    backend = kernels.backend_note()
    print(f"ropelab bench ({'quick' if args.quick else 'full'}): {backend}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    if kernels.backend() != "numba":
        notes.append(f"fused kernels unavailable, ropelab runs its reference path: {backend}")

    rope_rows = []
    for dtype_name in ("float32", "bfloat16"):
        rope_rows += _rope_throughput(torch, dtype_name, cfg, args, notes)
    targets = _targets(rope_rows)
    attention = _attention_scaling(torch, cfg, notes)
    decode = _decode(torch, cfg, notes)
    notes = list(dict.fromkeys(notes))

    body = []
    for r in rope_rows:
        if "median_ms" in r and "ratio_to_copy" in r:
            body.append([r["name"], r["dtype"], f"{r['median_ms']:.2f}", f"{r['gb_s']:.1f}", f"{r['ratio_to_copy']:.2f}x"])
        else:
            body.append([r["name"], r["dtype"], r["note"], "", ""])
    _print_table(f"RoPE on q and k {cfg['shape']} (median of {args.reps or cfg['reps']})",
                 ["contender", "dtype", "ms", "GB/s", "/ copy_"], body)
    _print_table("targets (issue 5)", ["dtype", "ratio", "value", "target", "met"],
                 [[t["dtype"], t["check"], f"{t['value']:.2f}", t["target"], "yes" if t["met"] else "NO"] for t in targets])
    if attention:
        _print_table("attention forward (no grad)", ["contender", "T", "ms", "peak MiB"],
                     [[r["name"], str(r["T"]), *((f"{r['median_ms']:.1f}", f"{r['peak_mib']:.0f}") if "median_ms" in r else (r["note"], ""))]
                      for r in attention])
    if decode:
        keys = [k for k in decode[0] if k != "context"]
        _print_table("decode step latency", ["context", *keys],
                     [[str(r["context"]), *(f"{r[k]:.1f}" if k in r else "" for k in keys)] for r in decode])
    for note in notes:
        print(f"note: {note}")

    result = dict(
        backend=kernels.backend(), backend_note=backend, quick=bool(args.quick),
        machine=dict(cpus=os.cpu_count(), processor=platform.processor() or platform.machine(),
                     torch=torch.__version__, torch_threads=torch.get_num_threads()),
        config=dict(shape=list(cfg["shape"]), layout="half", reps=args.reps or cfg["reps"]),
        rope=rope_rows, targets=targets, attention=attention, decode=decode, notes=notes,
        time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    (out / "bench.json").write_text(json.dumps(result, indent=2))
    written = [str(out / "bench.json")]
    if not args.no_plot:
        _plot(result, out / "bench.png")
        written.append(str(out / "bench.png"))
    print("wrote " + ", ".join(written))
    return 0
