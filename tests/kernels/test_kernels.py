"""The fused kernels (ropelab.kernels) against the float64 reference and the eager path.

Shapes: B batch, H heads, T time, D head dim, R rotary dim.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import ropelab
from ropelab import RopeConfig, apply_rope, apply_rope_, kernels, rope_tables

torch = pytest.importorskip("torch")

numba_only = pytest.mark.skipif(kernels.backend() != "numba", reason="numba kernels not available")


def ref64(x, cos, sin, layout, positions=None):
    """float64 rotation through complex multiplication: an independent reference."""
    x = np.asarray(x, dtype=np.float64)
    cos, sin = np.asarray(cos, np.float64), np.asarray(sin, np.float64)
    if positions is not None:
        cos, sin = cos[np.asarray(positions)], sin[np.asarray(positions)]
    half = cos.shape[-1]
    rot = 2 * half
    if layout == "interleaved":
        z = x[..., 0:rot:2] + 1j * x[..., 1:rot:2]
    else:
        z = x[..., :half] + 1j * x[..., half:rot]
    z = z * (cos + 1j * sin)
    out = x.copy()
    if layout == "interleaved":
        out[..., 0:rot:2], out[..., 1:rot:2] = z.real, z.imag
    else:
        out[..., :half], out[..., half:rot] = z.real, z.imag
    return out


def _x(kind, shape, dtype, seed=0):
    data = np.random.default_rng(seed).standard_normal(shape)
    if kind == "numpy":
        return data.astype(dtype)
    return torch.from_numpy(data).to(getattr(torch, dtype))


def _np64(x):
    if isinstance(x, np.ndarray):
        return x.astype(np.float64)
    return x.detach().double().numpy()


# float32 agreement <= 1e-6 with the reference path; half precisions within one rounding
TOL = {"float32": 1e-6, "float64": 1e-12, "bfloat16": 2.0**-7, "float16": 2.0**-10}


def _close_to_reference(got, want_ref, want64, dtype):
    got, want_ref = _np64(got), _np64(want_ref)
    scale = np.maximum(1.0, np.abs(want64))
    # fused vs the eager reference path: both round the same float32 result once
    assert np.max(np.abs(got - want_ref) / scale) <= TOL[dtype]
    # and both are the exact rotation, to the storage dtype's precision
    assert np.max(np.abs(got - want64) / scale) <= max(TOL[dtype], 2e-6)


CASES = [
    # kind, x dtype, table dtype
    ("numpy", "float32", np.float64),
    ("numpy", "float32", np.float32),
    ("numpy", "float64", np.float64),
    ("numpy", "float16", np.float32),
    ("torch", "float32", np.float64),
    ("torch", "float32", np.float32),
    ("torch", "float64", np.float64),
    ("torch", "bfloat16", np.float32),
    ("torch", "float16", np.float64),
]


@numba_only
@pytest.mark.parametrize("kind,dtype,table_dtype", CASES)
@pytest.mark.parametrize("layout", ["interleaved", "half"])
@pytest.mark.parametrize("rotary_dim", [16, 10])
@pytest.mark.parametrize("inplace", [True, False])
def test_fused_matches_reference(fused_calls, kind, dtype, table_dtype, layout, rotary_dim, inplace):
    B, H, T, D = 2, 3, 5, 16
    cfg = RopeConfig(D, rotary_dim=rotary_dim, layout=layout)
    cos, sin = (t.astype(table_dtype) for t in rope_tables(cfg, np.arange(T) + 7))
    x = _x(kind, (B, H, T, D), dtype)
    want64 = ref64(_np64(x), cos, sin, layout)
    want_ref = kernels.reference.rotate(x, cos, sin, layout=layout)
    if inplace:
        y = x.copy() if kind == "numpy" else x.clone()
        out = apply_rope_(y, cos, sin, layout=layout, rotary_dim=cfg.rotary_dim)
        assert out is y
    else:
        before = _np64(x)
        y = apply_rope(x, cos, sin, layout=layout, rotary_dim=cfg.rotary_dim)
        assert y.dtype == x.dtype and tuple(y.shape) == tuple(x.shape)
        np.testing.assert_array_equal(_np64(x), before)  # input untouched
    assert fused_calls, "the fused kernel did not run"
    _close_to_reference(y, want_ref, want64, dtype)
    # features past R pass through bit for bit
    np.testing.assert_array_equal(_np64(y)[..., rotary_dim:], _np64(x)[..., rotary_dim:])


@numba_only
@pytest.mark.parametrize(
    "table_shape",
    [(5, 4), (1, 5, 4), (2, 1, 5, 4), (2, 3, 5, 4), (1, 3, 5, 4), (3, 1, 4)],
    ids=["T", "1T", "B1T", "BHT", "1HT", "H-broadcast-T"],
)
@pytest.mark.parametrize("inplace", [True, False])
def test_broadcast_tables(fused_calls, table_shape, inplace):
    """Tables broadcast over batch/heads/tokens are read in place, never materialised."""
    B, H, T, D = 2, 3, 5, 8
    rng = np.random.default_rng(1)
    angle = rng.uniform(-3, 3, table_shape)
    cos, sin = np.cos(angle), np.sin(angle)
    x = _x("torch", (B, H, T, D), "float32")
    want = ref64(_np64(x), np.broadcast_to(cos, (B, H, T, 4)), np.broadcast_to(sin, (B, H, T, 4)), "half")
    if inplace:
        y = apply_rope_(x.clone(), cos, sin, layout="half")
    else:
        y = apply_rope(x, cos, sin, layout="half")
    assert fused_calls
    np.testing.assert_allclose(_np64(y), want, atol=1e-6)


@numba_only
def test_expanded_torch_tables_are_used_as_views(fused_calls):
    B, H, T, D = 2, 4, 6, 8
    cfg = RopeConfig(D, layout="half")
    cos, sin = (torch.from_numpy(t).float() for t in rope_tables(cfg, np.arange(T)))
    cos_e, sin_e = cos.expand(B, 1, T, D // 2), sin.expand(B, 1, T, D // 2)  # zero strides
    x = _x("torch", (B, H, T, D), "float32")
    y = apply_rope(x, cos_e, sin_e, layout="half")
    assert fused_calls
    np.testing.assert_allclose(_np64(y), ref64(_np64(x), cos.numpy(), sin.numpy(), "half"), atol=1e-6)


@numba_only
@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_non_contiguous_x_in_place(fused_calls, layout):
    """q projected as (B, T, H, D) and viewed (B, H, T, D) is rotated where it lies."""
    B, T, H, D = 2, 7, 3, 8
    base = _x("torch", (B, T, H, D), "float32")
    q = base.transpose(1, 2)  # (B, H, T, D), not contiguous
    cfg = RopeConfig(D, layout=layout)
    cos, sin = rope_tables(cfg, np.arange(T))
    want = ref64(_np64(q), cos, sin, layout)
    ptr = q.data_ptr()
    apply_rope_(q, cos, sin, layout=layout)
    assert fused_calls and q.data_ptr() == ptr
    np.testing.assert_allclose(_np64(q), want, atol=1e-6)
    np.testing.assert_allclose(_np64(base.transpose(1, 2)), want, atol=1e-6)


@numba_only
def test_five_dim_x_is_merged(fused_calls):
    x = _x("numpy", (2, 2, 3, 4, 8), "float32")
    cfg = RopeConfig(8)
    cos, sin = rope_tables(cfg, np.arange(4))
    y = apply_rope(x, cos, sin, layout="interleaved")
    assert fused_calls
    np.testing.assert_allclose(y, ref64(x, cos, sin, "interleaved"), atol=1e-6)


@numba_only
@pytest.mark.parametrize("layout", ["interleaved", "half"])
@pytest.mark.parametrize("pos_shape", ["T", "BT", "B1T", "decode"])
@pytest.mark.parametrize("inplace", [True, False])
def test_positions_index_the_table(fused_calls, layout, pos_shape, inplace):
    B, H, T, D, P = 2, 3, 6, 12, 50
    if pos_shape == "decode":
        T = 1
    cfg = RopeConfig(D, rotary_dim=8, layout=layout)
    cos, sin = rope_tables(cfg, np.arange(P))  # (P, R/2) float64
    rng = np.random.default_rng(3)
    positions = {
        "T": rng.integers(0, P, (T,)),
        "BT": rng.integers(0, P, (B, T)),
        "B1T": rng.integers(0, P, (B, 1, T)),
        "decode": np.array([[41], [17]]),
    }[pos_shape]
    x = _x("torch", (B, H, T, D), "float32")
    pos_b = np.broadcast_to(positions[..., None, :] if positions.ndim == 2 else positions, (B, H, T))
    want = ref64(_np64(x), cos[pos_b], sin[pos_b], layout)
    if positions.ndim == 2:
        positions = positions[:, None, :]  # (B, 1, T) against x's (B, H, T)
    pos_t = torch.from_numpy(positions)
    if inplace:
        y = apply_rope_(x.clone(), cos, sin, layout=layout, rotary_dim=cfg.rotary_dim, positions=pos_t)
    else:
        y = apply_rope(x, cos, sin, layout=layout, rotary_dim=cfg.rotary_dim, positions=pos_t)
    assert fused_calls
    np.testing.assert_allclose(_np64(y), want, atol=1e-6)
    # the eager path (positions gathered) says the same
    ref = kernels.reference.rotate(x, cos, sin, layout=layout, positions=pos_t)
    np.testing.assert_allclose(_np64(y), _np64(ref), atol=1e-6)


@numba_only
@pytest.mark.parametrize("inplace", [True, False])
def test_q_and_k_in_one_call(fused_calls, inplace):
    B, H, K, T, D = 1, 4, 2, 5, 8
    cfg = RopeConfig(D, layout="half")
    cos, sin = rope_tables(cfg, np.arange(T))
    q, k = _x("torch", (B, H, T, D), "bfloat16", 1), _x("torch", (B, K, T, D), "bfloat16", 2)
    if inplace:
        q2, k2 = q.clone(), k.clone()
        out = apply_rope_((q2, k2), cos, sin, layout="half")
        assert out[0] is q2 and out[1] is k2
    else:
        q2, k2 = apply_rope((q, k), cos, sin, layout="half")
    assert len(fused_calls) == 2
    for got, src in ((q2, q), (k2, k)):
        _close_to_reference(got, kernels.reference.rotate(src, cos, sin, layout="half"),
                            ref64(_np64(src), cos, sin, "half"), "bfloat16")


@numba_only
@pytest.mark.parametrize("inplace", [True, False])
def test_q_fused_when_k_cannot_be(fused_calls, inplace):
    """A pair the loops cannot take together is split: q through them, k (features not
    adjacent) through the reference path; nothing is rotated twice."""
    cfg = RopeConfig(8, layout="half")
    cos, sin = rope_tables(cfg, np.arange(5))
    q = _x("torch", (1, 4, 5, 8), "float32", 1)
    wide = _x("torch", (1, 2, 5, 16), "float32", 2)
    k = wide[..., ::2]
    if inplace:
        q2, k2 = q.clone(), wide.clone()[..., ::2]
        apply_rope_((q2, k2), cos, sin, layout="half")
    else:
        q2, k2 = apply_rope((q, k), cos, sin, layout="half")
    assert fused_calls == ["rope_rows_inplace_serial" if inplace else "rope_rows_out_serial"]
    np.testing.assert_allclose(_np64(q2), ref64(_np64(q), cos, sin, "half"), atol=1e-6)
    np.testing.assert_allclose(_np64(k2), ref64(_np64(k), cos, sin, "half"), atol=1e-6)


@numba_only
@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_inverse_undoes_the_rotation(fused_calls, layout):
    cfg = RopeConfig(16, layout=layout)
    cos, sin = rope_tables(cfg, np.arange(9) * 1000)
    x = _x("numpy", (2, 9, 16), "float64")
    y = kernels.rope(kernels.rope(x, cos, sin, layout=layout), cos, sin, layout=layout, inverse=True)
    assert len(fused_calls) == 2
    np.testing.assert_allclose(y, x, atol=1e-12)


@numba_only
def test_bfloat16_rounds_to_nearest_even(fused_calls):
    """Identity tables: the kernel's bf16 -> f32 -> bf16 round trip must be exact, and a
    rotation must round like torch's float32 -> bfloat16 cast (nearest even, NaN kept)."""
    # (inf would meet inf * sin(0) = NaN in any implementation, so it is left out)
    x = torch.tensor([[1.0, 3.0, float("nan"), float("nan"), -0.0, 1e-40, 3.3895e38, 7.0]]).bfloat16()
    cos, sin = np.ones((1, 4)), np.zeros((1, 4))
    y = apply_rope(x, cos, sin, layout="interleaved")
    assert torch.equal(y.view(torch.int16), x.view(torch.int16))
    angle = np.random.default_rng(0).uniform(-3, 3, (64, 4))
    x = _x("torch", (64, 8), "bfloat16")
    y = apply_rope(x, np.cos(angle), np.sin(angle), layout="half")
    want = kernels.reference.rotate(x, np.cos(angle), np.sin(angle), layout="half")
    assert torch.equal(y.view(torch.int16), want.view(torch.int16))


def test_jax_jit_is_one_fused_loop():
    """XLA turns apply_rope into a single loop fusion (one read of x, one write)."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    import re

    for layout in ("interleaved", "half"):
        for rotary_dim in (16, 8):
            cfg = RopeConfig(16, rotary_dim=rotary_dim, layout=layout)
            cos, sin = (jnp.asarray(t, jnp.float32) for t in rope_tables(cfg, np.arange(6)))
            x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3, 6, 16)), jnp.float32)
            f = jax.jit(lambda x, c, s, layout=layout, r=rotary_dim: apply_rope(x, c, s, layout=layout, rotary_dim=r))
            hlo = f.lower(x, cos, sin).compile().as_text()
            entry = hlo[hlo.index("ENTRY"):]
            assert len(re.findall(r" fusion\(", entry)) == 1, entry
            assert " concatenate(" not in entry and " copy(" not in entry, entry
            np.testing.assert_allclose(np.asarray(f(x, cos, sin)),
                                       ref64(np.asarray(x), np.asarray(cos), np.asarray(sin), layout), atol=2e-6)


# -- fallbacks ------------------------------------------------------------------------


@numba_only
def test_unsupported_inputs_fall_back(fused_calls):
    cfg = RopeConfig(8)
    cos, sin = rope_tables(cfg, np.arange(4))
    # negative strides, an expanded (self-overlapping) x out of place, autograd
    x = np.random.default_rng(0).standard_normal((4, 8))[::-1]
    np.testing.assert_allclose(apply_rope(x, cos, sin, layout="interleaved"), ref64(x, cos, sin, "interleaved"), atol=1e-12)
    leaf = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
    y = apply_rope(leaf, cos, sin, layout="interleaved")
    assert y.requires_grad
    assert not fused_calls


@numba_only
def test_expanded_x_in_place_is_refused_by_torch_not_corrupted(fused_calls):
    cfg = RopeConfig(8)
    cos, sin = rope_tables(cfg, np.arange(4))
    x = torch.randn(1, 4, 8).expand(3, 4, 8)
    with pytest.raises(RuntimeError):
        apply_rope_(x, cos, sin, layout="interleaved")
    assert not fused_calls


def test_read_only_numpy_in_place_raises():
    cfg = RopeConfig(8)
    cos, sin = rope_tables(cfg, np.arange(4))
    x = np.zeros((4, 8))
    x.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        apply_rope_(x, cos, sin, layout="interleaved")


@pytest.fixture
def no_numba(monkeypatch):
    monkeypatch.setenv(kernels.DISABLE_ENV, "1")
    kernels.reset_backend()
    yield
    monkeypatch.delenv(kernels.DISABLE_ENV)
    kernels.reset_backend()


def test_env_var_disables_numba(no_numba):
    assert kernels.backend() == "reference"
    assert kernels.DISABLE_ENV in kernels.backend_note()
    cfg = RopeConfig(16, rotary_dim=12, layout="half")
    cos, sin = rope_tables(cfg, np.arange(30))
    x = _x("torch", (2, 2, 5, 16), "bfloat16")
    pos = torch.tensor([3, 29, 0, 7, 7])
    want = ref64(_np64(x), cos, sin, "half", positions=pos.numpy())
    got = apply_rope(x, cos, sin, layout="half", rotary_dim=cfg.rotary_dim, positions=pos)
    np.testing.assert_allclose(_np64(got), want, atol=2e-2)
    y = x.clone()
    apply_rope_((y,), cos, sin, layout="half", rotary_dim=cfg.rotary_dim, positions=pos)
    assert torch.equal(y, got)


def test_missing_numba_falls_back(monkeypatch):
    """Simulate numba absent: importing the kernel module fails."""
    monkeypatch.delenv(kernels.DISABLE_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba -> ImportError
    monkeypatch.delitem(sys.modules, "ropelab.kernels._numba", raising=False)
    monkeypatch.delattr(kernels, "_numba", raising=False)
    kernels.reset_backend()
    try:
        assert kernels.backend() == "reference"
        assert "not installed" in kernels.backend_note()
        cfg = RopeConfig(8)
        cos, sin = rope_tables(cfg, np.arange(4))
        x = np.random.default_rng(0).standard_normal((3, 4, 8)).astype(np.float32)
        np.testing.assert_allclose(apply_rope(x, cos, sin, layout="interleaved"), ref64(x, cos, sin, "interleaved"), atol=1e-6)
        y = x.copy()
        apply_rope_(y, cos, sin, layout="interleaved")
        np.testing.assert_allclose(y, ref64(x, cos, sin, "interleaved"), atol=1e-6)
    finally:
        monkeypatch.undo()
        kernels.reset_backend()
    assert kernels.backend() in ("numba", "reference")


# -- compile cache -----------------------------------------------------------------------

_FRESH = """
import numpy as np, torch, ropelab
from ropelab import kernels
cos, sin = ropelab.rope_tables(ropelab.RopeConfig(16, layout="half"), np.arange(8))
x = torch.randn(2, 8, 16)
y = ropelab.apply_rope(x, cos, sin, layout="half")
ropelab.apply_rope_(x, cos, sin, layout="half")
assert torch.equal(x, y)
from ropelab.kernels import _numba
hits = sum(sum(getattr(_numba, k).stats.cache_hits.values()) for k in _numba.__all__)
print(kernels.backend(), hits)
"""


@numba_only
def test_fresh_process_loads_the_compiled_kernel_from_cache():
    """Compile cost is paid once: a second process finds the kernels in numba's disk cache."""
    env = dict(os.environ)
    env.pop(kernels.DISABLE_ENV, None)
    # the same calls here first: they compile (or load) and write numba's disk cache
    cos, sin = rope_tables(RopeConfig(16, layout="half"), np.arange(8))
    x = torch.randn(2, 8, 16)
    apply_rope(x, cos, sin, layout="half")
    apply_rope_(x, cos, sin, layout="half")
    done = subprocess.run([sys.executable, "-c", _FRESH], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    name, hits = done.stdout.split()
    assert name == "numba"
    assert int(hits) >= 2, done.stdout


# -- errors ------------------------------------------------------------------------------


def test_positions_errors():
    cfg = RopeConfig(8)
    cos, sin = rope_tables(cfg, np.arange(10))
    x = np.zeros((2, 4, 8))
    with pytest.raises(ValueError, match=r"\[0, 10\).*12"):
        apply_rope(x, cos, sin, layout="interleaved", positions=np.array([0, 1, 2, 12]))
    with pytest.raises(ValueError, match=r"-1"):
        apply_rope_(x, cos, sin, layout="interleaved", positions=np.array([0, -1, 2, 3]))
    with pytest.raises(TypeError, match="float64"):
        apply_rope(x, cos, sin, layout="interleaved", positions=np.array([0.0, 1, 2, 3]))
    with pytest.raises(TypeError, match="bool"):
        apply_rope(x, cos, sin, layout="interleaved", positions=torch.tensor([True, False, True, True]))
    with pytest.raises(ValueError, match=r"\(P, R/2\)"):
        apply_rope(x, cos[None], sin[None], layout="interleaved", positions=np.arange(4))
    with pytest.raises(ValueError, match=r"\(5,\).*\(2, 4\)"):
        apply_rope(x, cos, sin, layout="interleaved", positions=np.arange(5))
    with pytest.raises(ValueError, match="same shape"):
        apply_rope(x, cos, sin[:5], layout="interleaved", positions=np.arange(4))
    with pytest.raises(ValueError, match="rotary dim 10"):
        apply_rope(x, np.zeros((10, 5)), np.zeros((10, 5)), layout="interleaved", positions=np.arange(4))


def test_apply_rope_rejects_non_float_before_the_kernel():
    cfg = RopeConfig(8)
    cos, sin = rope_tables(cfg, np.arange(4))
    with pytest.raises(TypeError, match="int64"):
        apply_rope_(np.zeros((4, 8), dtype=np.int64), cos, sin, layout="interleaved")
    with pytest.raises(TypeError, match="int32"):
        apply_rope(torch.zeros((4, 8), dtype=torch.int32), cos, sin, layout="interleaved")


def test_backend_note_names_the_path():
    note = kernels.backend_note()
    assert ("numba" in note) if kernels.backend() == "numba" else note.startswith("reference")
    assert ropelab.apply_rope is apply_rope


@numba_only
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("layout", ["interleaved", "half"])
@pytest.mark.parametrize("inplace", [True, False])
def test_parallel_kernels_match_reference(fused_calls, dtype, layout, inplace):
    """Inputs past PARALLEL_MIN_ELEMENTS take the threaded kernels (odd T: ragged chunks)."""
    B, H, T, D = 1, 4, 131, 128
    assert B * H * T * D >= kernels.PARALLEL_MIN_ELEMENTS
    cfg = RopeConfig(D, rotary_dim=96, layout=layout)
    cos, sin = rope_tables(cfg, np.arange(T))
    x = _x("torch", (B, H, T, D), dtype)
    if inplace:
        y = apply_rope_(x.clone(), cos, sin, layout=layout, rotary_dim=cfg.rotary_dim)
    else:
        y = apply_rope(x, cos, sin, layout=layout, rotary_dim=cfg.rotary_dim)
    assert fused_calls == ["rope_rows_inplace" if inplace else "rope_rows_out"]
    _close_to_reference(y, kernels.reference.rotate(x, cos, sin, layout=layout), ref64(_np64(x), cos, sin, layout), dtype)


@numba_only
def test_in_place_write_is_seen_by_autograd(fused_calls):
    """Rotating in place a tensor that a graph saved must raise at backward, as any
    in-place op would, rather than feed the rotated values to the gradient."""
    cos, sin = rope_tables(RopeConfig(8), np.arange(4))
    w = torch.randn(8, 8, requires_grad=True)
    x = torch.randn(4, 8)
    y = x @ w  # y is not saved, but x is (for w's gradient)
    apply_rope_(x, cos, sin, layout="interleaved")
    assert fused_calls
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


# -- into a given buffer (apply_rope(..., out=)) ---------------------------------------


@numba_only
@pytest.mark.parametrize("kind,dtype", [("numpy", "float32"), ("numpy", "float16"), ("torch", "bfloat16"),
                                        ("torch", "float32")])
@pytest.mark.parametrize("rotary_dim", [16, 10])
def test_out_goes_through_the_loops(fused_calls, kind, dtype, rotary_dim):
    """q and k into buffers, one a (B, T, H, D) array seen as (B, H, T, D): the out-of-place
    loops write them directly, bit for bit what apply_rope returns."""
    cfg = RopeConfig(16, rotary_dim=rotary_dim, layout="half")
    tables = rope_tables(cfg, np.arange(5) * 1000)
    q, k = _x(kind, (2, 4, 5, 16), dtype, 1), _x(kind, (2, 2, 5, 16), dtype, 2)
    want = apply_rope((q, k), tables)
    fused_calls.clear()
    bq = _x(kind, (2, 5, 4, 16), dtype, 3).swapaxes(1, 2)
    bk = _x(kind, (2, 2, 5, 16), dtype, 4)
    apply_rope((q, k), tables, out=(bq, bk))
    assert fused_calls == ["rope_rows_out_serial"] * 2
    for got, w in zip((bq, bk), want, strict=True):
        assert np.array_equal(_np64(got), _np64(w))


@numba_only
def test_out_parallel_loops_and_positions(fused_calls):
    """Above the parallel threshold, with per-token positions: the same numbers."""
    cfg = RopeConfig(64, layout="interleaved")
    cos, sin = rope_tables(cfg, np.arange(300))
    pos = torch.randint(0, 300, (2, 1, 128), generator=torch.Generator().manual_seed(0))
    x = _x("torch", (2, 8, 128, 64), "float32")
    want = apply_rope(x, cos, sin, layout="interleaved", positions=pos)
    fused_calls.clear()
    out = torch.empty_like(x)
    apply_rope(x, cos, sin, layout="interleaved", positions=pos, out=out)
    assert fused_calls == ["rope_rows_out"]
    assert torch.equal(out, want)


def test_out_buffers_the_loops_cannot_write_get_a_copy():
    """A buffer with negative strides (declined by the loops) gets the rotated values
    copied in; so does every buffer without numba."""
    cfg = RopeConfig(16, layout="half")
    cos, sin = rope_tables(cfg, np.arange(5))
    x = _x("numpy", (2, 3, 5, 16), "float32")
    want = apply_rope(x, cos, sin, layout="half")
    out = np.full((2, 3, 5, 16), np.nan, np.float32)[:, ::-1]
    apply_rope(x, cos, sin, layout="half", out=out)
    assert np.array_equal(out, want)


def test_out_without_numba(no_numba):
    cfg = RopeConfig(16, rotary_dim=10, layout="interleaved")
    tables = rope_tables(cfg, np.arange(5))
    for kind, dtype in (("numpy", "float32"), ("torch", "bfloat16")):
        x = _x(kind, (2, 3, 5, 16), dtype)
        want = apply_rope(x, tables)
        out = np.empty_like(x) if kind == "numpy" else torch.empty_like(x)
        assert apply_rope(x, tables, out=out) is out
        assert np.array_equal(_np64(out), _np64(want))
