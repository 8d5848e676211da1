"""ropelab.attention_spec: the options' validation, the keep-mask, the temperature and
the repr, written once for both front ends.

The first part needs no array library at all. The keep-mask is then held to explicit
loops over (b, i, j) of its definition on numpy arrays, and, where torch or jax is
installed, the same call on their arrays (eager and traced) must give the same mask.

Shapes: B batch, T queries, S keys.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import subprocess
import sys
import textwrap

import pytest

from ropelab.attention_spec import AttentionSpec, SpecField

# --- no framework, no numpy --------------------------------------------------------------


def test_import_loads_no_framework():
    code = textwrap.dedent(
        """
        import json, sys
        import ropelab.attention_spec
        print(json.dumps([m for m in ("torch", "jax", "flax") if m in sys.modules]))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_defaults_are_resolved():
    spec = AttentionSpec(64, 8)
    assert (spec.num_kv_heads, spec.head_dim) == (8, 8)
    spec = AttentionSpec(64, 8, num_kv_heads=2, head_dim=16, temperature_tuning=[0.1, 8192])
    assert (spec.num_kv_heads, spec.head_dim) == (2, 16)
    assert spec.temperature_tuning == (0.1, 8192.0)  # a tuple of floats: hashable, as jit needs
    assert hash(spec) == hash(dataclasses.replace(spec))


ERRORS = [
    # (arguments, error type, message): a wrong type is a TypeError, a wrong value a ValueError
    (dict(d_model=0), ValueError, "d_model must be an integer >= 1, got 0"),
    (dict(d_model=64.0), TypeError, "d_model must be an integer, got 64.0"),
    (dict(num_heads=True), TypeError, r"num_heads must be an integer, got True \(bool\)"),
    (dict(d_model=60, num_heads=8), ValueError, "d_model=60 is not divisible by num_heads=8"),
    (dict(head_dim=-4), ValueError, "head_dim must be an integer >= 1 and <= 65536, got -4"),
    (dict(num_kv_heads=3), ValueError, "num_heads=4 is not divisible by num_kv_heads=3"),
    (dict(num_kv_heads=0), ValueError, "num_kv_heads must be an integer >= 1, got 0"),
    (dict(causal=1), TypeError, "causal must be True or False, got 1"),
    (dict(bias="yes"), TypeError, "bias must be True or False, got 'yes'"),
    (dict(qk_norm=None), TypeError, "qk_norm must be True or False, got None"),
    (dict(chunk_size=0), ValueError, "chunk_size must be an integer >= 1, got 0"),
    (dict(window=2.5), TypeError, "window must be an integer, got 2.5"),
    (dict(window=False), TypeError, "window must be an integer, got False"),
    (dict(qk_norm_eps=0), ValueError, "qk_norm_eps must be a finite number > 0, got 0"),
    (dict(qk_norm_eps=True), TypeError, "qk_norm_eps must be a number, got True"),
    (dict(qk_norm_eps=float("nan")), ValueError, "qk_norm_eps must be a finite number > 0, got nan"),
    (dict(temperature_tuning=(0.1,)), ValueError, r"temperature_tuning must be a pair \(attn_scale, floor_scale\), got 1 values"),
    (dict(temperature_tuning="ab"), TypeError, r"temperature_tuning must be a pair \(attn_scale, floor_scale\) or None, got 'ab'"),
    (dict(temperature_tuning=(0.1, 0.0)), ValueError, "temperature_tuning's floor_scale must be a finite number > 0, got 0.0"),
    (dict(temperature_tuning=(math.inf, 8.0)), ValueError, "temperature_tuning's attn_scale must be a finite number, got inf"),
    (dict(temperature_tuning=("0.1", 8.0)), TypeError, "temperature_tuning's attn_scale must be a number, got '0.1'"),
]


@pytest.mark.parametrize("kwargs,error,message", ERRORS)
def test_errors_name_the_argument(kwargs, error, message):
    args = {"d_model": 64, "num_heads": 4, **kwargs}
    with pytest.raises(error, match=message):
        AttentionSpec(args.pop("d_model"), args.pop("num_heads"), **args)


def test_replace_validates_again():
    spec = AttentionSpec(64, 4, chunk_size=8)
    assert dataclasses.replace(spec, chunk_size=None).chunk_size is None
    with pytest.raises(ValueError, match="chunk_size must be an integer >= 1, got -1"):
        dataclasses.replace(spec, chunk_size=-1)


def test_check_rope():
    class Rope:
        head_dim = 8

    AttentionSpec(32, 4).check_rope(Rope())
    with pytest.raises(ValueError, match="rope.head_dim=8 does not match the attention head_dim=16"):
        AttentionSpec(64, 4).check_rope(Rope())


def test_plain_means_causality_alone():
    assert AttentionSpec(64, 4).plain(padded=False)
    assert AttentionSpec(64, 4, causal=False, qk_norm=True, temperature_tuning=(1, 2)).plain(padded=False)
    assert not AttentionSpec(64, 4).plain(padded=True)
    assert not AttentionSpec(64, 4, chunk_size=8).plain(padded=False)
    assert not AttentionSpec(64, 4, window=8).plain(padded=False)


def test_query_scale_is_llama4s_formula():
    spec = AttentionSpec(64, 4, temperature_tuning=(0.1, 8192.0))  # Llama 4 Scout's values
    assert spec.query_scale(0.0, math) == 1.0  # no scaling inside the first floor_scale tokens
    assert spec.query_scale(8190.0, math) == 1.0
    assert spec.query_scale(8191.0, math) == pytest.approx(1 + 0.1 * math.log(2), rel=1e-15)
    assert spec.query_scale(5 * 8192.0 - 1, math) == pytest.approx(1 + 0.1 * math.log(6), rel=1e-15)
    with pytest.raises(ValueError, match="needs a spec with temperature_tuning"):
        AttentionSpec(64, 4).query_scale(0.0, math)


def test_summary_lists_the_options_that_are_set():
    assert AttentionSpec(64, 4).summary() == "d_model=64, heads=4, kv_heads=4, head_dim=16, causal=True"
    spec = AttentionSpec(
        64, 4, num_kv_heads=2, causal=False, chunk_size=8, window=3, qk_norm=True,
        qk_norm_eps=1e-5, temperature_tuning=(0.5, 2.0),
    )
    assert spec.summary() == (
        "d_model=64, heads=4, kv_heads=2, head_dim=16, causal=False, chunk_size=8, window=3, "
        "temperature_tuning=(0.5, 2.0), qk_norm_eps=1e-05"
    )


class _Module:
    """A stand-in front end: the descriptors need only a ``spec`` attribute."""

    chunk_size = SpecField()
    num_heads = SpecField()

    def __init__(self):
        self.spec = AttentionSpec(64, 4)


def test_spec_field_reads_and_validates_writes():
    module = _Module()
    assert (module.chunk_size, module.num_heads) == (None, 4)
    module.chunk_size = 8
    assert module.spec.chunk_size == 8 and module.chunk_size == 8
    with pytest.raises(ValueError, match="chunk_size must be an integer >= 1, got 0"):
        module.chunk_size = 0
    assert module.chunk_size == 8  # a refused value changes nothing
    with pytest.raises(AttributeError, match="num_heads is fixed by the projection weights"):
        module.num_heads = 2
    assert isinstance(_Module.chunk_size, SpecField)


# --- the keep-mask against its definition (numpy) -----------------------------------------

np = pytest.importorskip("numpy")


def _keep_loops(spec, q_slot, k_slot, q_pos, k_pos, key_valid, filled):
    """The keep-mask from its definition, one (b, i, j) at a time: (B, 1, T, S) bool."""
    batch = max(len(q_pos), 1 if key_valid is None else len(key_valid))
    t, s = len(q_slot), len(k_slot)
    out = np.zeros((batch, 1, t, s), bool)
    for b, i, j in itertools.product(range(batch), range(t), range(s)):
        qp, kp = q_pos[min(b, len(q_pos) - 1)][i], k_pos[min(b, len(k_pos) - 1)][j]
        seen = True
        if spec.causal:
            seen &= k_slot[j] <= q_slot[i]
        if spec.chunk_size is not None:
            seen &= qp // spec.chunk_size == kp // spec.chunk_size
        if spec.window is not None:
            seen &= qp - kp < spec.window and (spec.causal or kp - qp < spec.window)
        if key_valid is not None:
            seen &= bool(key_valid[b][j])
        if filled is not None:
            seen &= bool(filled[j])
        out[b, 0, i, j] = seen
    for b, i in itertools.product(range(batch), range(t)):
        if not out[b, 0, i].any():  # a row that sees nothing sees every filled key
            out[b, 0, i] = True if filled is None else filled
    return out


def _case(padded, cached, seed=0):
    """Slots, positions, padding and fill of 2 rows: 3 cached + 4 new keys of 8 slots
    (or 6 new keys and no cache); row 0 left-padded when ``padded``, so that its first
    queries see no token (the rows the empty-row rule is for)."""
    rng = np.random.default_rng(seed)
    past, t, capacity = (3, 4, 8) if cached else (0, 6, 6)
    valid = np.ones((2, capacity), bool)
    if padded:
        valid[0, : past + 2] = False
    valid[:, past + t :] = False
    k_pos = np.maximum(np.cumsum(valid, axis=1) - 1, 0) + rng.integers(0, 3, (2, 1))
    k_slot = np.arange(capacity)
    q_slot = np.arange(past, past + t)
    filled = k_slot < past + t if cached else None
    key_valid = valid if (padded or cached) else None
    return q_slot, k_slot, k_pos[:, past : past + t], k_pos, key_valid, filled


SPECS = {
    "causal": dict(),
    "bidirectional": dict(causal=False),
    "chunk": dict(chunk_size=3),
    "window": dict(window=2),
    "window-bidirectional": dict(window=2, causal=False),
    "chunk-window-bidirectional": dict(chunk_size=4, window=2, causal=False),
}


@pytest.mark.parametrize("cached", [False, True])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("name", sorted(SPECS))
def test_keep_equals_its_definition(name, padded, cached):
    spec = AttentionSpec(16, 2, **SPECS[name])
    args = _case(padded, cached)
    keep = spec.keep(*args[:4], key_valid=args[4], filled=args[5])
    if keep is None:  # nothing restricts: only a plain bidirectional call without padding
        assert not spec.causal and spec.plain(padded=False) and args[4] is None and args[5] is None
        return
    want = _keep_loops(spec, *args)
    assert keep.dtype == bool and keep.ndim == 4  # (B or 1, 1, T or 1, S): broadcasts over heads
    np.testing.assert_array_equal(np.broadcast_to(keep, want.shape), want)


def test_keep_literal_chunked_causal():
    keep = AttentionSpec(16, 2, chunk_size=2).keep(np.arange(4), np.arange(4), np.arange(4)[None], np.arange(4)[None])
    want = [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]
    np.testing.assert_array_equal(keep[0, 0], np.array(want, bool))


def test_keep_is_none_when_nothing_restricts():
    spec = AttentionSpec(16, 2, causal=False)
    assert spec.keep(np.arange(3), np.arange(3), None, None) is None


# --- one mask on every array kind ----------------------------------------------------------


def _all_cases():
    for name, padded, cached in itertools.product(sorted(SPECS), (False, True), (False, True)):
        yield AttentionSpec(16, 2, **SPECS[name]), _case(padded, cached, seed=1)


def _convert(args, to):
    return [None if a is None else to(a) for a in args]


def test_keep_on_torch_tensors_equals_numpy():
    torch = pytest.importorskip("torch")
    for spec, args in _all_cases():
        want = spec.keep(*args[:4], key_valid=args[4], filled=args[5])
        got = spec.keep(*(targs := _convert(args, torch.from_numpy))[:4], key_valid=targs[4], filled=targs[5])
        assert (want is None) == (got is None), spec
        if want is not None:
            assert got.dtype == torch.bool
            np.testing.assert_array_equal(got.numpy(), want)


def test_keep_on_jax_arrays_equals_numpy_eager_and_under_jit():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    for spec, args in _all_cases():
        want = spec.keep(*args[:4], key_valid=args[4], filled=args[5])
        jargs = _convert(args, jnp.asarray)
        eager = spec.keep(*jargs[:4], key_valid=jargs[4], filled=jargs[5])
        traced = jax.jit(lambda a, b, c, d, e, f, spec=spec: spec.keep(a, b, c, d, key_valid=e, filled=f))(*jargs)
        assert (want is None) == (eager is None) == (traced is None), spec
        if want is not None:
            np.testing.assert_array_equal(np.asarray(eager), want)
            np.testing.assert_array_equal(np.asarray(traced), want)


def test_query_scale_on_every_array_kind():
    spec = AttentionSpec(64, 4, temperature_tuning=(0.3, 3.0))
    positions = np.array([[0, 1, 2, 5, 8, 100, 10_000]], np.float32)
    want = np.array([[spec.query_scale(float(p), math) for p in positions[0]]])
    np.testing.assert_allclose(spec.query_scale(positions, np), want, rtol=1e-6)
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        got = spec.query_scale(torch.from_numpy(positions), torch)
        assert got.dtype == torch.float32
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
    try:
        import jax.numpy as jnp
    except ImportError:
        jnp = None
    if jnp is not None:
        got = spec.query_scale(jnp.asarray(positions), jnp)
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)


def test_query_scale_refuses_negative_positions_it_can_read():
    """Llama 4's temperature is defined for positions >= 0: a negative one is a
    ValueError for a number, numpy, and CPU torch and jax arrays outside a trace; under
    jit the values are not read and the factor is NaN (as documented)."""
    spec = AttentionSpec(64, 4, temperature_tuning=(0.3, 3.0))
    positions = np.array([[0.0, 4.0, -5.0]], np.float32)
    message = r"temperature_tuning is defined for positions >= 0 \(Llama 4\), got position -5"
    with pytest.raises(ValueError, match=message):
        spec.query_scale(positions, np)
    with pytest.raises(ValueError, match=r"got position -1"):
        spec.query_scale(-1.0, math)
    assert spec.query_scale(np.zeros((0, 3), np.float32), np).shape == (0, 3)
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        with pytest.raises(ValueError, match=message):
            spec.query_scale(torch.from_numpy(positions), torch)
    try:
        import jax
    except ImportError:
        jax = None
    if jax is not None:
        jnp = jax.numpy
        with pytest.raises(ValueError, match=message):
            spec.query_scale(jnp.asarray(positions), jnp)
        traced = jax.jit(lambda p: spec.query_scale(p, jnp))(jnp.asarray(positions))
        assert np.isnan(np.asarray(traced)[0, 2]) and np.all(np.isfinite(np.asarray(traced)[0, :2]))
