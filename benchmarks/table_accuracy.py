"""How exact are ropelab's cos/sin rows in each front end, at every position range?

For each front end the rows of ``ropelab.rope_tables`` (NumPy float64; torch and jax
float32 computed on the positions' device, eager and compiled; the Flax NNX attention's
rows under ``jax.jit``) are compared with the truth: ``cos(p * f)`` and ``sin(p * f)``
at 120 bits (mpmath), ``f`` the float64 ``inv_freq`` the scheme defines converted
exactly, times the scheme's attention factor. As a contrast, the usual float32 recipe
(float32 positions times float32 ``inv_freq``, then cos/sin in float32, as most
libraries build their tables) is measured on the same positions.

Positions per range: the two ends plus ``--samples`` drawn uniformly (fixed draw), all
pairs of the head. Printed: a markdown table per config of the largest absolute error
of cos and sin. ``benchmarks/table_precision.py`` is the companion measurement against
the mathematical frequencies ``theta ** (-2i / R)`` instead of the float64 ones.

Run: python benchmarks/table_accuracy.py [--samples 2000] [--out results.json] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # before jax is first imported

import mpmath  # noqa: E402
import numpy as np  # noqa: E402

import ropelab  # noqa: E402
from ropelab import scaling  # noqa: E402

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
#: name -> (low, high), both included
RANGES = {
    "0..4096": (0, 4096),
    "0..10^6": (0, 10**6),
    "0..2^31-1": (0, INT32_MAX),
    "-2^31..-1": (INT32_MIN, -1),
}
CONFIGS = {
    "Llama-like: head_dim 128, theta 500000": ropelab.RopeConfig(128, theta=500000.0, layout="half"),
    "YaRN x4 of 32768, head_dim 128, theta 1000000": ropelab.RopeConfig(
        128, theta=1e6, layout="half", scaling=scaling.YaRN(4.0, 32768)
    ),
}
FLOAT32_RECIPE = "float32 recipe (p * inv_freq in float32)"


def sample_positions(low: int, high: int, samples: int, rng) -> np.ndarray:
    """The two ends and ``samples`` uniform draws in ``[low, high]``, int64, sorted."""
    drawn = rng.integers(low, high, size=samples, endpoint=True, dtype=np.int64)
    return np.unique(np.concatenate([[low, high], drawn]))


def truth(config, positions):
    """(cos, sin) ``(P, R/2)`` float64 from 120-bit products ``p * f``, times the factor."""
    factor = config.attention_factor
    cos = np.empty((positions.size, config.num_pairs))
    sin = np.empty_like(cos)
    with mpmath.workprec(120):
        freqs = [mpmath.mpf(float(f)) for f in config.inv_freq()]  # exact: 53 bits
        for i, p in enumerate(positions.tolist()):
            big = mpmath.mpf(p)
            for j, f in enumerate(freqs):
                c, s = mpmath.mp.cos_sin(big * f)  # the product is exact: 53 + 32 bits
                cos[i, j], sin[i, j] = float(c), float(s)
    return cos * factor, sin * factor


def front_ends(smoke: bool):
    """name -> function(config, int64 positions) -> (cos, sin) of any array kind; those
    whose framework is missing are left out (with a note)."""
    ends = {"NumPy rope_tables (float64)": lambda config, p: ropelab.rope_tables(config, p)}
    notes = []
    try:
        import torch
    except ImportError:
        torch = None
        notes.append("torch not installed: its rows are left out")
    if torch is not None:
        ends["torch eager (float32)"] = lambda config, p: ropelab.rope_tables(config, torch.from_numpy(p))
        from ropelab.torch import RotaryEmbedding

        # the rows RotaryEmbedding rotates by: on the CPU, eager, its numba loop (polynomial sin/cos)
        ends["torch RotaryEmbedding rows, CPU eager (float32)"] = (
            lambda config, p: RotaryEmbedding(config).rows(torch.from_numpy(p))
        )
        compiled = {}
        # --smoke traces with dynamo but skips inductor's C++ build (seconds, not tens)
        backend = "eager" if smoke else "inductor"

        def torch_compiled(config, p):
            if config not in compiled:
                compiled[config] = torch.compile(
                    lambda q: tuple(ropelab.rope_tables(config, q)), fullgraph=True, dynamic=True, backend=backend
                )
            return compiled[config](torch.from_numpy(p))

        ends["torch.compile, dynamic (float32)" + (" [smoke: traced only]" if smoke else "")] = torch_compiled
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        jax = None
        notes.append("jax not installed: its rows are left out")
    if jax is not None:
        as_int32 = lambda p: jnp.asarray(p, dtype=jnp.int32)  # noqa: E731 (jax keeps int32)
        ends["jax eager (float32)"] = lambda config, p: ropelab.rope_tables(config, as_int32(p))
        jitted = {}

        def jax_jit(config, p):
            if config not in jitted:
                jitted[config] = jax.jit(lambda q: tuple(ropelab.rope_tables(config, q)))
            return jitted[config](as_int32(p))

        ends["jax.jit (float32)"] = jax_jit
        try:
            from ropelab.nnx.attention import rope_for
        except ImportError:
            notes.append("flax not installed: the NNX attention's rows are left out")
        else:
            nnx_jitted = {}

            def nnx_rows(config, p):
                if config not in nnx_jitted:  # the rows Attention rotates by, positions traced
                    nnx_jitted[config] = jax.jit(lambda q: rope_for(config, q[None], 1, q.shape[0]))
                cos, sin = nnx_jitted[config](as_int32(p))  # (1, P, 1, R/2)
                return cos[0, :, 0], sin[0, :, 0]

            ends["ropelab.nnx.Attention rows, jit (float32)"] = nnx_rows

    def float32_recipe(config, p):
        angles = p.astype(np.float32)[:, None] * config.inv_freq().astype(np.float32)  # (P, R/2) float32
        factor = np.float32(config.attention_factor)
        return np.cos(angles) * factor, np.sin(angles) * factor

    ends[FLOAT32_RECIPE] = float32_recipe
    return ends, notes


def max_error(rows, want) -> float:
    return max(
        float(np.max(np.abs(np.asarray(got, dtype=np.float64).reshape(w.shape) - w)))
        for got, w in zip(rows, want, strict=True)
    )


def measure(samples: int, smoke: bool, configs=CONFIGS) -> dict:
    """{config name: {front end: {range: max abs error}}} and the notes."""
    rng = np.random.default_rng(0)
    ends, notes = front_ends(smoke)
    results = {}
    for config_name, config in configs.items():
        table = {name: {} for name in ends}
        for range_name, (low, high) in RANGES.items():
            positions = sample_positions(low, high, samples, rng)
            want = truth(config, positions)
            for name, rows_of in ends.items():
                table[name][range_name] = max_error(rows_of(config, positions), want)
        results[config_name] = table
    return {"errors": results, "notes": notes}


def markdown(results: dict) -> str:
    lines = []
    for config_name, table in results["errors"].items():
        lines += [f"**{config_name}**", ""]
        lines.append("| front end | " + " | ".join(RANGES) + " |")
        lines.append("|---|" + "---:|" * len(RANGES))
        for name, errors in table.items():
            lines.append(f"| {name} | " + " | ".join(f"{errors[r]:.1e}" for r in RANGES) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000, help="random positions per range (plus its ends)")
    parser.add_argument("--out", help="also write the errors as JSON to this file")
    parser.add_argument("--smoke", action="store_true", help="a few positions and a small head: seconds")
    args = parser.parse_args(argv)
    configs = CONFIGS
    samples = args.samples
    if args.smoke:
        samples = 8
        configs = {"smoke: head_dim 16, theta 500000": ropelab.RopeConfig(16, theta=500000.0, layout="half")}
    start = time.perf_counter()
    results = measure(samples, args.smoke, configs)
    cpus = os.cpu_count() or 1
    print(
        f"max |error| of cos and sin vs 120-bit mpmath (p * float64 inv_freq, times the attention "
        f"factor), {samples} random positions per range plus its ends, all pairs; "
        f"a {cpus}-core CPU ({platform.machine()}), {time.perf_counter() - start:.0f} s"
    )
    for note in results["notes"]:
        print(f"note: {note}")
    print()
    print(markdown(results))
    results["settings"] = {
        "samples_per_range": samples,
        "ranges": {k: list(v) for k, v in RANGES.items()},
        "smoke": args.smoke,
        "machine": {"cpus": cpus, "processor": platform.machine(), "python": sys.version.split()[0]},
    }
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=2)
    return results


if __name__ == "__main__":
    main()
