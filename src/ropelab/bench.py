"""``ropelab bench``: this machine's RoPE speed against the memory limit and the peers.

RoPE is memory bound: the least it can cost is one read and one write of q and k, which
is what ``copy_`` into preallocated buffers costs (the "memory limit" here). Three parts:

1. RoPE throughput, q and k ``(B, H, T, D) = (1, 32, 4096, 128)``, half layout, float32
   and bfloat16: median time, GB/s (2 x bytes of q and k over the time) and the ratio
   to ``copy_`` for ``copy_``, ``clone()``, ropelab in place / out of place / into given
   buffers (``out=``) / its op under ``torch.compile``, transformers' eager
   ``apply_rotary_pos_emb``, rotary-embedding-torch (when installed) and
   ``jax.jit(ropelab.apply_rope)`` (in a process of its own).
2. Attention scaling (:func:`attention_scaling`, also behind
   ``benchmarks/bench_attention.py``): time and peak memory against T for
   :class:`ropelab.torch.Attention` (SDPA, no T x T matrix), the same attention written
   plainly (Llama's rotary and SDPA) and attention with a full T x T score matrix, all
   with the same weights, each variant in a fresh process so its peak is its own.
3. Decode (:func:`decode_steps`): one-token latency against the context length (RoPE
   alone, and a whole :class:`ropelab.torch.Attention` step over a KV cache).

Every time comes from :mod:`ropelab.timing`: warm-up calls first and never counted, then
medians over repetitions, the contenders interleaved repetition by repetition (so drift
in the machine's load hits all alike). The report names the machine: cores, load
average, torch's threads. With ``--out DIR`` it writes ``bench.json`` and ``bench.png``.
Shapes: B batch, H heads, T time, D head dim.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import time
from pathlib import Path

import numpy as np

from . import timing
from .config import RopeConfig
from .tables import rope_tables

# warmup: untimed calls before the timed ones; decode_calls: calls per timed repetition
FULL = dict(shape=(1, 32, 4096, 128), reps=15, warmup=2, attn_T=(1024, 2048, 4096, 8192, 16384),
            attn=dict(d_model=512, heads=8), decode_ctx=(1024, 2048, 4096, 8192, 16384),
            decode_reps=30, decode_calls=20)
QUICK = dict(shape=(1, 4, 256, 64), reps=5, warmup=2, attn_T=(128, 256), attn=dict(d_model=64, heads=2),
             decode_ctx=(128, 256), decode_reps=5, decode_calls=10)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="small shapes, few repetitions: checks that everything runs (its times "
                             "do not compare with a full run's)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="write bench.json and bench.png there (default: print only)")
    parser.add_argument("--reps", type=_positive_int, default=None,
                        help="timed repetitions per RoPE contender (>= 1; warm-up calls come on top)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile contender")
    parser.add_argument("--no-jax", action="store_true", help="skip the jax contender")
    parser.add_argument("--no-plot", action="store_true", help="with --out, write bench.json only")


# -- part 1: RoPE throughput ---------------------------------------------------------

COPY = "copy_ (memory limit)"
INTO = "ropelab into a given buffer (out=)"


def _hf_apply():
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb
    except ImportError:
        return None
    return apply_rotary_pos_emb


def _into_buffers(torch, apply_rope, q, k, cos, sin, bq, bk):
    """A call rotating q and k into the buffers bq and bk with ``apply_rope(..., out=)``,
    or None when this ropelab's ``apply_rope`` takes no ``out=``.

    Tried on a tiny input first, as one call for both tensors and then one call each,
    and kept only if it writes the buffers with what ``apply_rope`` returns without them.
    """
    try:
        if "out" not in inspect.signature(apply_rope).parameters:
            return None
    except (TypeError, ValueError):
        return None
    tq, tk = q[..., :2, :].contiguous(), k[..., :2, :].contiguous()  # 2 tokens
    tc, ts = cos[:2], sin[:2]
    want = apply_rope((tq, tk), tc, ts, layout="half")
    forms = (
        lambda q, k, bq, bk, c, s: apply_rope((q, k), c, s, layout="half", out=(bq, bk)),
        lambda q, k, bq, bk, c, s: (apply_rope(q, c, s, layout="half", out=bq),
                                    apply_rope(k, c, s, layout="half", out=bk)),
    )
    for form in forms:
        oq, ok = torch.empty_like(tq), torch.empty_like(tk)
        try:
            form(tq, tk, oq, ok, tc, ts)
        except (TypeError, ValueError, RuntimeError):  # this form is not supported
            continue
        if torch.equal(oq, want[0]) and torch.equal(ok, want[1]):
            return lambda form=form: form(q, k, bq, bk, cos, sin)
    return None


def _rope_throughput(torch, dtype_name: str, cfg: dict, args, notes: list) -> list[dict]:
    from . import apply_rope, apply_rope_
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
        COPY: lambda: (bq.copy_(q), bk.copy_(k)),
        "clone()": lambda: (q.clone(), k.clone()),
        "ropelab in place": lambda: apply_rope_((q, k), cos, sin, layout="half"),
        "ropelab out of place": lambda: apply_rope((q, k), cos, sin, layout="half"),
    }
    into = _into_buffers(torch, apply_rope, q, k, cos, sin, bq, bk)
    if into is not None:
        contenders[INTO] = into
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

    times = timing.round_robin(contenders, reps=reps, warmup=cfg["warmup"])
    copy_t = times[COPY].median
    rows = []
    for name, t in times.items():
        rows.append(dict(name=name, dtype=dtype_name, median_ms=t.median * 1e3, min_ms=t.min * 1e3,
                         gb_s=moved / t.median / 1e9, ratio_to_copy=t.median / copy_t, reps=t.reps,
                         warmup=t.warmup))
    if ret is None:
        rows.append(dict(name="rotary-embedding-torch", dtype=dtype_name, note="not installed"))
    if not args.no_jax:
        rows.append(_jax_throughput(dtype_name, cfg["shape"], reps, cfg["warmup"], moved, copy_t))
    return rows


def jax_rope_child(dtype_name: str, shape: list, reps: int, warmup: int) -> dict:
    """``jax.jit(apply_rope)`` on q and k timed in this process (run it in a fresh one:
    see :func:`_jax_throughput`); the HLO's fusion count says how many loops XLA made."""
    import jax
    import jax.numpy as jnp

    from . import apply_rope

    B, H, T, D = shape
    cos, sin = (jnp.asarray(t, jnp.float32) for t in rope_tables(RopeConfig(D, layout="half"), np.arange(T)))
    rng = np.random.default_rng(0)
    dt = jnp.float32 if dtype_name == "float32" else jnp.bfloat16
    q = jnp.asarray(rng.standard_normal(shape, dtype=np.float32), dt)
    k = jnp.asarray(rng.standard_normal(shape, dtype=np.float32), dt)
    f = jax.jit(lambda q, k, c, s: (apply_rope(q, c, s, layout="half"), apply_rope(k, c, s, layout="half")))
    hlo = f.lower(q, k, cos, sin).compile().as_text()
    fusions = hlo[hlo.index("ENTRY"):].count(" fusion(")  # one loop per output: q and k
    t = timing.time_calls(lambda: jax.block_until_ready(f(q, k, cos, sin)), reps=reps, warmup=max(1, warmup))
    return dict(median=t.median, min=t.min, reps=t.reps, warmup=t.warmup, version=jax.__version__,
                fusions=fusions)


def _jax_throughput(dtype_name: str, shape, reps: int, warmup: int, moved: int, copy_t: float) -> dict:
    """jax.jit(apply_rope) timed in a fresh process: XLA's spinning thread pool would
    otherwise steal the cores from every torch contender timed after it."""
    import importlib.util

    name = "jax.jit(ropelab.apply_rope)"
    try:
        if importlib.util.find_spec("jax") is None:
            return dict(name=name, dtype=dtype_name, note="not installed")
    except ValueError:
        return dict(name=name, dtype=dtype_name, note="not installed")
    try:
        got = timing.run_isolated("ropelab.bench:jax_rope_child", timeout=600, dtype_name=dtype_name,
                                  shape=list(shape), reps=reps, warmup=warmup)
    except RuntimeError as err:
        return dict(name=name, dtype=dtype_name, note=f"failed: {str(err).splitlines()[-1]}")
    med = got["median"]
    return dict(name=name, dtype=dtype_name, median_ms=med * 1e3, min_ms=got["min"] * 1e3,
                gb_s=moved / med / 1e9, ratio_to_copy=med / copy_t, reps=got["reps"], warmup=got["warmup"],
                hlo_fusions=got["fusions"],
                note=f"jax {got['version']} in its own process; XLA fused q and k into "
                     f"{got['fusions']} loop(s); ratio against this process's copy_")


# -- part 2: attention scaling -----------------------------------------------------------

#: variant -> its name in reports; the same four projection weights in every variant
ATTENTION_VARIANTS = {
    "ropelab": "ropelab Attention (SDPA)",
    "plain": "plain PyTorch: Llama's rotary + SDPA",
    "full": "attention with a full T x T score matrix",
}


def _projections(attn, x):
    """q, k, v of ``attn``'s weights: ``(B, H, T, D)``, ``(B, K, T, D)`` twice."""
    B, T, _ = x.shape
    H, K, D = attn.num_heads, attn.num_kv_heads, attn.head_dim
    q = attn.q_proj(x).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
    k = attn.k_proj(x).view(B, T, K, D).transpose(1, 2)  # (B, K, T, D)
    v = attn.v_proj(x).view(B, T, K, D).transpose(1, 2)
    return q, k, v


def _full_matrix_attention(torch, attn, x):
    """Causal attention the textbook way: the whole (B, H, T, T) score matrix, masked,
    softmaxed, times V (the NumPy NoPE/iRoPE attention exercise's algorithm)."""
    from . import apply_rope

    B, T, _ = x.shape
    q, k, v = _projections(attn, x)
    config = attn.rope.config
    cos, sin = (torch.from_numpy(t).to(x.device, torch.float32) for t in rope_tables(config, np.arange(T)))
    q, k = apply_rope((q, k), cos, sin, layout=config.layout)
    scores = q @ k.transpose(-1, -2) / attn.head_dim**0.5  # (B, H, T, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=x.device).triu_(1)
    weights = scores.masked_fill(causal, float("-inf")).softmax(-1)
    y = (weights @ v).transpose(1, 2).reshape(B, T, attn.num_heads * attn.head_dim)
    return attn.o_proj(y)


def _plain_attention(torch, attn, x):
    """The same attention written as Hugging Face's Llama writes it: float32 angles,
    ``rotate_half``, then ``scaled_dot_product_attention(is_causal=True)``."""
    B, T, _ = x.shape
    q, k, v = _projections(attn, x)
    D = attn.head_dim
    inv_freq = 1.0 / (attn.rope.config.theta ** (torch.arange(0, D, 2, device=x.device).float() / D))
    angles = torch.arange(T, device=x.device).float()[:, None] * inv_freq  # (T, D/2)
    emb = torch.cat((angles, angles), dim=-1)  # (T, D)
    cos, sin = emb.cos(), emb.sin()

    def rotate_half(u):
        return torch.cat((-u[..., D // 2:], u[..., : D // 2]), dim=-1)

    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    return attn.o_proj(y.transpose(1, 2).reshape(B, T, attn.num_heads * D))


def attention_variant(variant: str, T: int, *, d_model: int, heads: int, reps: int,
                      device: str = "cpu") -> dict:
    """Time and peak memory of one attention variant at length T, in this process.

    Meant for a fresh process (:func:`attention_scaling` runs it so): a 16-token pass
    first (kernel JIT, lazy imports, allocator pools are one-time costs), then one pass
    at length T whose peak memory is measured (the first large pass sets the process's
    high-water mark), then ``reps`` timed passes. float32, no grad, batch 1.
    """
    import torch

    from .torch import Attention

    torch.manual_seed(0)
    attn = Attention(d_model, heads, rope=RopeConfig(d_model // heads, layout="half")).to(device).eval()
    fn = {"ropelab": attn, "plain": lambda x: _plain_attention(torch, attn, x),
          "full": lambda x: _full_matrix_attention(torch, attn, x)}[variant]
    x = torch.randn(1, T, d_model, device=device)
    sync = timing.cuda_sync(device)
    with torch.no_grad():
        fn(x[:, :16])
        if sync:
            sync()
        with timing.PeakMemory(device=device) as mem:
            out = fn(x)
        mean_square = float(out.double().square().mean())  # the variants agree on it
        del out
        t = timing.time_calls(lambda: fn(x), reps=reps, warmup=0, sync=sync)  # warmed by the passes above
    return dict(name=ATTENTION_VARIANTS[variant], variant=variant, T=T, device=str(device),
                median_ms=t.median * 1e3, min_ms=t.min * 1e3, seconds=list(t.seconds),
                peak_mib=mem.bytes / 2**20, mean_square=mean_square, threads=torch.get_num_threads())


def attention_scaling(lengths, *, variants=tuple(ATTENTION_VARIANTS), d_model: int = 512, heads: int = 8,
                      reps=None, rounds: int = 1, device: str = "cpu", isolate: bool = True) -> list[dict]:
    """Each attention variant at each length: one row ``{name, T, median_ms, min_ms,
    peak_mib, ...}`` per (T, variant), or ``{name, T, note}`` when it was skipped.

    ``reps``: timed passes per process (default 3 up to T = 4096, then 1); ``rounds``:
    processes per variant, interleaved, so load from other processes falls on every
    variant alike (time: median over all passes; memory: median over the processes).
    ``isolate=False`` runs everything in this process (quicker; its peaks are less
    exact). The full score matrix is skipped where it needs more than 40% of the free
    memory (CPU).
    """
    for v in variants:
        if v not in ATTENTION_VARIANTS:
            raise ValueError(f"variants must be among {', '.join(map(repr, ATTENTION_VARIANTS))}; got {v!r}")
    rows = []
    for T in lengths:
        n = reps or (3 if T <= 4096 else 1)
        found: dict[str, dict] = {}  # variant -> its row
        runs: dict[str, list[dict]] = {}
        for v in variants:
            need = 3 * heads * T * T * 4  # scores, masked, softmax: float32 (H, T, T) each
            if v == "full" and timing.cuda_sync(device) is None and need > 0.4 * timing.available_memory():
                found[v] = dict(name=ATTENTION_VARIANTS[v], variant=v, T=T,
                                note=f"skipped: needs ~{need / 2**30:.1f} GiB")
            else:
                runs[v] = []
        for _ in range(rounds):
            for v in list(runs):
                kwargs = dict(variant=v, T=T, d_model=d_model, heads=heads, reps=n, device=device)
                try:
                    if isolate:
                        runs[v].append(timing.run_isolated("ropelab.bench:attention_variant", **kwargs))
                    else:
                        runs[v].append(attention_variant(**kwargs))
                except RuntimeError as err:  # out of memory, most likely: say so and go on
                    del runs[v]
                    found[v] = dict(name=ATTENTION_VARIANTS[v], variant=v, T=T,
                                    note=f"failed: {str(err).splitlines()[-1]}")
        for v, got in runs.items():
            seconds = [s for r in got for s in r["seconds"]]
            found[v] = dict(got[0], median_ms=float(np.median(seconds)) * 1e3, min_ms=min(seconds) * 1e3,
                            seconds=seconds, reps=len(seconds), processes=len(got),
                            peak_mib=float(np.median([r["peak_mib"] for r in got])))
        rows += [found[v] for v in variants]
    return rows


# -- part 3: decode latency -----------------------------------------------------------------


def decode_steps(torch, cfg: dict, notes: list) -> list[dict]:
    """One-token decode latency per context length: RoPE on q and k ``(B, H, 1, D)`` at
    position = context (ropelab's module and kernel path, transformers' rotary module and
    apply), and a whole ropelab Attention step over a KV cache holding the context."""
    from . import apply_rope_
    from .torch import RotaryEmbedding

    B, H, _, D = cfg["shape"]
    reps, calls, warmup = cfg["decode_reps"], cfg["decode_calls"], cfg["decode_calls"]
    hf = _hf_apply()
    hf_rotary = None
    if hf is not None:
        from transformers import LlamaConfig
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        hf_rotary = LlamaRotaryEmbedding(LlamaConfig(hidden_size=H * D, num_attention_heads=H, head_dim=D,
                                                     max_position_embeddings=max(cfg["decode_ctx"]) + 1))
    rope = RopeConfig(D, layout="half")
    module = RotaryEmbedding(rope)
    rows = []
    with torch.no_grad():
        for ctx in cfg["decode_ctx"]:
            cos64, sin64 = rope_tables(rope, np.arange(ctx + 1))
            cos, sin = torch.from_numpy(cos64).float(), torch.from_numpy(sin64).float()  # (P, D/2)
            q, k = torch.randn(B, H, 1, D), torch.randn(B, H, 1, D)
            pos = torch.tensor([ctx])
            contenders = {
                "ropelab RotaryEmbedding (positions)":
                    lambda q=q, k=k, pos=pos: module(q, k, positions=pos),
                "ropelab apply_rope_ (positions)":
                    lambda q=q, k=k, cos=cos, sin=sin, pos=pos: apply_rope_((q, k), cos, sin, layout="half",
                                                                          positions=pos),
            }
            if hf_rotary is not None:
                def hf_step(q=q, k=k, pos=pos[None]):  # the module's tables for this step, then apply
                    c, s = hf_rotary(q, pos)
                    return hf(q, k, c, s)

                contenders["transformers rotary + apply (eager)"] = hf_step
            times = timing.round_robin(contenders, reps=reps, warmup=warmup, calls=calls)
            rows.append(dict(context=ctx, **{f"{n} us": t.median * 1e6 for n, t in times.items()}))
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
            cache = KVCache(1, heads, ctx + 1, hd)
            cache.update(torch.randn(1, heads, ctx, hd), torch.randn(1, heads, ctx, hd), torch.arange(ctx)[None])
            x = torch.randn(1, 1, d_model)

            def step(x=x, cache=cache, ctx=ctx):  # every step sees the same context: drop the last token
                cache.length = ctx
                return attn(x, cache=cache)

            t = timing.time_calls(step, reps=reps, warmup=warmup, calls=calls)
            row["ropelab Attention step with KV cache ms"] = t.median * 1e3
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




def _load(info: dict) -> str:
    load = info.get("load_average")
    return " / ".join(f"{x:.2f}" for x in load) if load else "unknown"


def run(args) -> int:
    from .cli import need, output_dir

    # everything the run needs, before minutes of timing
    torch = need("torch", feature="ropelab bench")
    out = None
    if args.out is not None:
        if not args.no_plot:
            need("matplotlib", feature="ropelab bench's bench.png (or pass --no-plot)")
        out = output_dir(args.out)
    from . import kernels

    cfg = QUICK if args.quick else FULL
    reps = args.reps or cfg["reps"]
    timing.unbuffer_malloc()  # first, so no freed heap block hides a later peak
    notes: list[str] = []
    backend = kernels.backend_note()
    machine = timing.machine()
    if args.quick:
        print("ropelab bench --quick: small shapes and few repetitions, to check that everything runs; "
              "its times do not compare with a full run's")
    else:
        print("ropelab bench")
    print(f"machine: {timing.machine_line(machine)}")
    print(f"kernels: {backend}")
    print(f"timing: medians of {reps} timed runs after {cfg['warmup']} warm-up runs (not counted), "
          f"contenders interleaved run by run")
    load = machine.get("load_average")
    if load and load[0] >= (machine.get("usable_cpus") or 1):
        print(f"note: other processes keep the cores busy (load {load[0]:.2f} on {machine.get('usable_cpus')} "
              f"cores): times run long; the ratios within this run remain comparable")
    if kernels.backend() != "numba":
        notes.append(f"fused kernels unavailable, ropelab runs its reference path: {backend}")

    rope_rows = []
    for dtype_name in ("float32", "bfloat16"):
        rope_rows += _rope_throughput(torch, dtype_name, cfg, args, notes)
    attention = attention_scaling(cfg["attn_T"], **cfg["attn"])
    decode = decode_steps(torch, cfg, notes)
    notes = list(dict.fromkeys(notes))

    body = []
    for r in rope_rows:
        if "median_ms" in r and "ratio_to_copy" in r:
            body.append([r["name"], r["dtype"], f"{r['median_ms']:.3g}", f"{r['gb_s']:.3g}", f"{r['ratio_to_copy']:.2f}x"])
        else:
            body.append([r["name"], r["dtype"], r["note"], "", ""])
    B, H, T, D = cfg["shape"]
    _print_table(f"RoPE on q and k (B, H, T, D) = {cfg['shape']}, half layout", ["contender", "dtype", "ms", "GB/s", "/ copy_"], body)
    if attention:
        _print_table(f"causal attention forward, float32, no grad, d_model {cfg['attn']['d_model']}, "
                     f"{cfg['attn']['heads']} heads, each variant in its own process",
                     ["variant", "T", "ms", "peak MiB"],
                     [[r["name"], str(r["T"]), *((f"{r['median_ms']:.3g}", f"{r['peak_mib']:.1f}") if "median_ms" in r else (r["note"], ""))]
                      for r in attention])
    if decode:
        keys = list(dict.fromkeys(k for r in decode for k in r if k != "context"))
        body = []
        for key in keys:  # every series in microseconds
            name, unit = key.rsplit(" ", 1)
            scale = 1000 if unit == "ms" else 1
            body.append([name, *(f"{r[key] * scale:.3g}" if key in r else "" for r in decode)])
        _print_table(f"decode step, microseconds: one token at position = context, q and k {(B, H, 1, D)}; "
                     f"medians of {cfg['decode_reps']} runs of {cfg['decode_calls']} calls",
                     ["contender / context (tokens)", *(str(r["context"]) for r in decode)], body)
    for note in notes:
        print(f"note: {note}")
    end = timing.machine()
    print(f"load average at the end: {_load(end)} (1, 5, 15 min; at the start {_load(machine)})")
    if out is None:
        return 0

    result = dict(
        backend=kernels.backend(), backend_note=backend, quick=bool(args.quick),
        machine=dict(machine, load_average_end=end.get("load_average")),
        config=dict(shape=list(cfg["shape"]), layout="half", reps=reps, warmup=cfg["warmup"],
                    decode_reps=cfg["decode_reps"], decode_calls=cfg["decode_calls"]),
        rope=rope_rows, attention=attention, decode=decode, notes=notes,
        time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    (out / "bench.json").write_text(json.dumps(result, indent=2))
    written = [str(out / "bench.json")]
    if not args.no_plot:
        _plot(result, out / "bench.png")
        written.append(str(out / "bench.png"))
    print("wrote " + ", ".join(written))
    return 0
