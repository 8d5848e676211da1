"""apply_rope / apply_rope_: one meaning in numpy, torch and jax, held to a float64 loop reference.

Shapes: x (B, H, T, D); tables (T, R/2) or per-token (B, 1, T, R/2) broadcast over heads.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from ropelab_testing import reference_inv_freq, reference_rope

import ropelab
from ropelab import RopeConfig, apply_rope, apply_rope_, rope_tables

torch = pytest.importorskip("torch")

LAYOUTS = ["interleaved", "half"]


def _setup(rng, *, head_dim=16, rotary_dim=None, theta=1e4, shape=(2, 3, 5), per_token=False):
    """x (B, H, T, D) float64, positions, tables and the float64 reference output."""
    B, H, T = shape
    cfg = RopeConfig(head_dim, theta=theta, rotary_dim=rotary_dim)
    x = rng.standard_normal((B, H, T, head_dim))
    if per_token:  # each row its own arbitrary positions (offsets, packing, KV-cache steps)
        positions = rng.integers(0, 10**6, size=(B, 1, T))
    else:
        positions = rng.integers(0, 5000, size=(T,))
    cos, sin = rope_tables(cfg, positions)
    return cfg, x, positions, cos, sin


# ---------------------------------------------------------------- float64 reference


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("rotary_dim", [None, 8, 2])
@pytest.mark.parametrize("per_token", [False, True])
def test_numpy_matches_loop_reference(rng, layout, rotary_dim, per_token):
    cfg, x, positions, cos, sin = _setup(rng, rotary_dim=rotary_dim, per_token=per_token)
    out = apply_rope(x, cos, sin, layout=layout, rotary_dim=cfg.rotary_dim)
    ref = reference_rope(x, positions, reference_inv_freq(1e4, cfg.rotary_dim), layout=layout)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64 and out.shape == x.shape
    # the loop reference forms p * f with one float64 rounding: ~1e-10 rad off at p ~ 1e6
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-9 if per_token else 1e-12)
    # features past rotary_dim pass through bit for bit
    np.testing.assert_array_equal(out[..., cfg.rotary_dim :], x[..., cfg.rotary_dim :])


def test_layouts_are_a_permutation_of_each_other(rng):
    cfg, x, _, cos, sin = _setup(rng)
    half = cfg.rotary_dim // 2
    order = np.concatenate([np.arange(0, cfg.rotary_dim, 2), np.arange(1, cfg.rotary_dim, 2)])
    inter = apply_rope(x, cos, sin, layout="interleaved")
    halfout = apply_rope(x[..., order], cos, sin, layout="half")
    np.testing.assert_allclose(halfout, inter[..., order], atol=1e-14)
    assert half == cos.shape[-1]


def test_attention_factor_scales_output(rng):
    cfg = RopeConfig(8, scaling=ropelab.scaling.YaRN(4.0, 64))
    x = rng.standard_normal((3, 8))
    cos, sin = rope_tables(cfg, np.arange(3))
    ref = reference_rope(
        x, np.arange(3), cfg.inv_freq(), layout="interleaved", scale=cfg.attention_factor
    )
    np.testing.assert_allclose(apply_rope(x, cos, sin, layout="interleaved"), ref, atol=1e-12)


# ---------------------------------------------------------------- across frameworks


def _jax():
    return pytest.importorskip("jax")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("rotary_dim", [None, 10])
@pytest.mark.parametrize("per_token", [False, True])
def test_numpy_torch_jax_agree_float32(rng, layout, rotary_dim, per_token):
    jax = _jax()
    jnp = jax.numpy
    cfg, x64, positions, cos, sin = _setup(
        rng, head_dim=16, rotary_dim=rotary_dim, per_token=per_token
    )
    cfg = RopeConfig(16, rotary_dim=rotary_dim, layout=layout)
    x32 = x64.astype(np.float32)
    ref = reference_rope(x32, positions, reference_inv_freq(1e4, cfg.rotary_dim), layout=layout)
    tables = rope_tables(cfg, positions)  # carrying the partial rotary width
    out_np = apply_rope(x32, cos, sin, layout=layout, rotary_dim=cfg.rotary_dim)
    out_t = apply_rope(torch.from_numpy(x32), tables, layout=layout)
    out_j = apply_rope(jnp.asarray(x32), cos, sin, layout=layout, rotary_dim=cfg.rotary_dim)
    assert out_np.dtype == np.float32
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32
    assert isinstance(out_j, jax.Array) and out_j.dtype == jnp.float32
    for out in (out_np, out_t.numpy(), np.asarray(out_j)):
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)
    np.testing.assert_allclose(out_t.numpy(), out_np, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out_j), out_np, rtol=0, atol=1e-5)


def test_framework_tables_accepted(rng):
    jax = _jax()
    cfg, x, _, cos, sin = _setup(rng)
    x32 = x.astype(np.float32)
    expect = apply_rope(x32, cos, sin, layout="half")
    got_t = apply_rope(
        torch.from_numpy(x32), torch.from_numpy(cos), torch.from_numpy(sin), layout="half"
    )
    got_j = apply_rope(
        jax.numpy.asarray(x32),
        jax.numpy.asarray(cos.astype(np.float32)),
        jax.numpy.asarray(sin.astype(np.float32)),
        layout="half",
    )
    np.testing.assert_allclose(got_t.numpy(), expect, atol=1e-6)
    np.testing.assert_allclose(np.asarray(got_j), expect, atol=1e-6)


@pytest.mark.parametrize("dtype,eps", [("bfloat16", 2**-8), ("float16", 2**-11)])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_torch_half_precision_computed_in_float32(rng, dtype, eps, layout):
    """bf16/fp16 in: rotated in float32, rounded once (not rotated in bf16 with bf16 tables)."""
    tdtype = getattr(torch, dtype)
    cfg, x, positions, cos, sin = _setup(rng, head_dim=64, rotary_dim=48, shape=(2, 4, 33))
    cos, sin = rope_tables(
        cfg, rng.integers(10**5, 10**6, size=33)
    )  # large angles: bf16 tables would be poor
    xh = torch.from_numpy(x).to(tdtype)
    out = apply_rope(xh, cos, sin, layout=layout, rotary_dim=48)
    assert out.dtype == tdtype
    expect = apply_rope(xh.float(), cos, sin, layout=layout, rotary_dim=48).to(tdtype)
    # one rounding of the float32 result: equal, or a last-place tie broken differently
    diff = (out.float() - expect.float()).abs()
    assert (diff == 0).float().mean() >= 0.99
    assert bool((diff <= eps * expect.float().abs() + 1e-30).all())
    # and close to the exact float64 rotation of the rounded input
    exact = apply_rope(xh.double().numpy(), cos, sin, layout=layout, rotary_dim=48)
    np.testing.assert_allclose(
        out.double().numpy(), exact, rtol=eps, atol=eps * np.abs(exact).max()
    )


def test_jax_bfloat16(rng):
    jax = _jax()
    jnp = jax.numpy
    _, x, _, cos, sin = _setup(rng)
    xb = jnp.asarray(x, dtype=jnp.bfloat16)
    out = apply_rope(xb, cos, sin, layout="half")
    assert out.dtype == jnp.bfloat16
    expect = apply_rope(xb.astype(jnp.float32), cos, sin, layout="half").astype(jnp.bfloat16)
    diff = np.abs(np.asarray(out, dtype=np.float32) - np.asarray(expect, dtype=np.float32))
    assert (diff == 0).mean() >= 0.99


def test_jax_jit(rng):
    jax = _jax()
    _, x, _, cos, sin = _setup(rng)
    x32 = x.astype(np.float32)
    c, s = jax.numpy.asarray(cos, dtype=np.float32), jax.numpy.asarray(sin, dtype=np.float32)
    fn = jax.jit(lambda a, c, s: apply_rope(a, c, s, layout="interleaved"))
    np.testing.assert_allclose(np.asarray(fn(x32, c, s)), apply_rope(x32, cos, sin, layout="interleaved"), atol=1e-5)


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("layout", LAYOUTS)
def test_torch_gradcheck(rng, layout):
    _, x, _, cos, sin = _setup(rng, head_dim=8, rotary_dim=6, shape=(1, 2, 3))
    xt = torch.from_numpy(x).requires_grad_(True)
    ct = torch.from_numpy(cos).requires_grad_(True)
    st = torch.from_numpy(sin).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, c, s: apply_rope(a, c, s, layout=layout, rotary_dim=6), (xt, ct, st)
    )


@pytest.mark.parametrize("layout", LAYOUTS)
def test_torch_grad_is_inverse_rotation(rng, layout):
    # d/dx sum(w * R x) = R^T w: the inverse rotation (sin -> -sin) applied to w
    _, x, _, cos, sin = _setup(rng, rotary_dim=10)
    w = rng.standard_normal(x.shape)
    xt = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    (
        apply_rope(xt, cos, sin, layout=layout, rotary_dim=10) * torch.tensor(w, dtype=torch.float32)
    ).sum().backward()
    np.testing.assert_allclose(xt.grad.numpy(), apply_rope(w, cos, -sin, layout=layout, rotary_dim=10), atol=1e-5)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_jax_grad_is_inverse_rotation(rng, layout):
    jax = _jax()
    jnp = jax.numpy
    _, x, _, cos, sin = _setup(rng, rotary_dim=10)
    w = rng.standard_normal(x.shape)
    wj = jnp.asarray(w, dtype=jnp.float32)
    grad = jax.grad(lambda a: jnp.sum(wj * apply_rope(a, cos, sin, layout=layout, rotary_dim=10)))(
        jnp.asarray(x, dtype=jnp.float32)
    )
    np.testing.assert_allclose(np.asarray(grad), apply_rope(w, cos, -sin, layout=layout, rotary_dim=10), atol=1e-5)


def test_jax_grad_matches_finite_difference(rng):
    jax = _jax()
    jnp = jax.numpy
    _, x, _, cos, sin = _setup(rng, head_dim=8, shape=(1, 1, 3))
    v = rng.standard_normal(x.shape)

    def f(a):
        out = apply_rope(a, cos, sin, layout="half")
        return (out * out * v).sum()  # non-linear, so the gradient depends on x

    grad = np.asarray(jax.grad(lambda a: f(a))(jnp.asarray(x, dtype=jnp.float32)))
    d = rng.standard_normal(x.shape)
    h = 1e-3
    fd = (float(f(x + h * d)) - float(f(x - h * d))) / (2 * h)  # numpy float64 path
    assert float((grad * d).sum()) == pytest.approx(fd, rel=1e-4, abs=1e-4)


# ---------------------------------------------------------------- into a buffer (out=)

OUT_CASES = [("numpy", "float64"), ("numpy", "float32"), ("torch", "float32"), ("torch", "bfloat16"),
             ("torch", "float16")]


def _of(kind, dtype, a):
    if kind == "numpy":
        return np.asarray(a, dtype=dtype)
    return torch.from_numpy(np.asarray(a)).to(getattr(torch, dtype))


def _nan_like(x):
    """A buffer of x's kind, shape and dtype full of NaN: every element must be written."""
    if isinstance(x, np.ndarray):
        return np.full_like(x, np.nan)
    return torch.full_like(x, float("nan"))


def _equal(a, b):
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b)
    return a.dtype == b.dtype and torch.equal(a, b)


@pytest.mark.parametrize("kind,dtype", OUT_CASES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("rotary_dim", [None, 10])
@pytest.mark.parametrize("form", ["bare", "tables", "positions"])
def test_out_equals_apply_rope_exactly(rng, kind, dtype, layout, rotary_dim, form):
    """Written into the buffer (the features past R copied), bit for bit what apply_rope
    returns without it; the buffer itself is returned."""
    cfg = RopeConfig(16, rotary_dim=rotary_dim, layout=layout)
    x = _of(kind, dtype, rng.standard_normal((2, 3, 5, 16)))
    if form == "positions":
        cos, sin = rope_tables(cfg, np.arange(40))
        args, kwargs = (cos, sin), dict(layout=layout, rotary_dim=rotary_dim, positions=np.array([3, 39, 0, 7, 7]))
    elif form == "tables":
        args, kwargs = (rope_tables(cfg, np.arange(5) * 1000),), {}
    else:
        args, kwargs = rope_tables(cfg, np.arange(5) * 1000), dict(layout=layout, rotary_dim=rotary_dim)
    want = apply_rope(x, *args, **kwargs)
    out = _nan_like(x)
    assert apply_rope(x, *args, **kwargs, out=out) is out
    assert _equal(out, want)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_out_for_q_and_k(rng, kind):
    """A tuple (q, k) of different head counts into a tuple of buffers, returned as given."""
    cfg = RopeConfig(16, layout="half")
    cos, sin = rope_tables(cfg, np.arange(5))
    q = _of(kind, "float32", rng.standard_normal((2, 4, 5, 16)))
    k = _of(kind, "float32", rng.standard_normal((2, 2, 5, 16)))
    want = apply_rope((q, k), cos, sin, layout="half")
    out = (_nan_like(q), _nan_like(k))
    assert apply_rope((q, k), cos, sin, layout="half", out=out) is out
    assert _equal(out[0], want[0]) and _equal(out[1], want[1])


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_out_is_x_rotates_in_place(rng, kind):
    """out=x (the same view of the same memory) is the in-place rotation; in a tuple, one
    buffer may be its input while the other is fresh."""
    cfg = RopeConfig(16, rotary_dim=10, layout="interleaved")
    tables = rope_tables(cfg, np.arange(5) * 77)
    q = _of(kind, "float32", rng.standard_normal((2, 4, 5, 16)))
    k = _of(kind, "float32", rng.standard_normal((2, 2, 5, 16)))
    want_q, want_k = apply_rope((q, k), tables)
    q1 = q.copy() if kind == "numpy" else q.clone()
    assert apply_rope(q1, tables, out=q1) is q1
    assert _equal(q1, want_q)
    k_view = k[:]  # another view of the same memory, with the same strides: in place too
    fresh = _nan_like(q)
    out = apply_rope((q, k), tables, out=(fresh, k_view))
    assert out[0] is fresh and out[1] is k_view
    assert _equal(fresh, want_q) and _equal(k, want_k)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_out_strided_buffers(rng, kind):
    """Buffers that are views: heads of a (B, T, H, D) array seen as (B, H, T, D), a slice
    of a wider one, and x and out interleaved in one array (disjoint elements). Only the
    buffer's elements are written."""
    cfg = RopeConfig(16, layout="half")
    cos, sin = rope_tables(cfg, np.arange(5))
    x = _of(kind, "float32", rng.standard_normal((2, 3, 5, 16)))
    want = apply_rope(x, cos, sin, layout="half")
    bthd = _nan_like(_of(kind, "float32", np.zeros((2, 5, 3, 16))))
    out = bthd.swapaxes(1, 2)  # (B, H, T, D) view of (B, T, H, D) memory
    apply_rope(x, cos, sin, layout="half", out=out)
    assert _equal(out, want)
    wide = _of(kind, "float32", np.zeros((2, 3, 5, 32)))
    apply_rope(x, cos, sin, layout="half", out=wide[..., :16])
    assert _equal(wide[..., :16], want) and not wide[..., 16:].any()
    both = _of(kind, "float32", np.zeros((2, 3, 5, 2, 16)))  # x at [..., 0, :], out at [..., 1, :]
    both[..., 0, :] = x
    apply_rope(both[..., 0, :], cos, sin, layout="half", out=both[..., 1, :])
    assert _equal(both[..., 1, :], want) and _equal(both[..., 0, :], x)


def test_out_torch_bumps_the_version_and_runs_under_no_grad(rng):
    """A written buffer's version counter moves (a graph that saved it raises); x that
    requires grad is fine where nothing is recorded."""
    cfg = RopeConfig(16, layout="half")
    cos, sin = rope_tables(cfg, np.arange(5))
    x = torch.from_numpy(rng.standard_normal((2, 3, 5, 16))).float().requires_grad_(True)
    out = torch.empty_like(x, requires_grad=False)
    before = out._version
    with torch.no_grad():
        apply_rope(x, cos, sin, layout="half", out=out)
        want = apply_rope(x, cos, sin, layout="half")
    assert out._version > before
    assert torch.equal(out, want)


# ---------------------------------------------------------------- in place


@pytest.mark.parametrize("layout", LAYOUTS)
def test_apply_rope_inplace(rng, layout):
    _, x, _, cos, sin = _setup(rng, rotary_dim=12)
    expect = apply_rope(x, cos, sin, layout=layout, rotary_dim=12)
    xn = x.copy()
    assert apply_rope_(xn, cos, sin, layout=layout, rotary_dim=12) is xn
    np.testing.assert_allclose(xn, expect, atol=1e-12)
    xt = torch.from_numpy(x.astype(np.float32))
    assert apply_rope_(xt, cos, sin, layout=layout, rotary_dim=12) is xt
    np.testing.assert_allclose(xt.numpy(), expect, atol=1e-5)


def test_apply_rope_inplace_rejects_jax(rng):
    jax = _jax()
    _, x, _, cos, sin = _setup(rng)
    with pytest.raises(TypeError, match=r"jax arrays are immutable"):
        apply_rope_(jax.numpy.asarray(x), cos, sin, layout="half")


# ---------------------------------------------------------------- in place under autograd (torch's rules)


def _graph_input(x):
    """A float64 leaf that requires grad and a non-leaf of it (what a layer hands on)."""
    leaf = torch.from_numpy(x).clone().requires_grad_(True)
    return leaf, leaf * 1.0


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("rotary_dim", [None, 6])
def test_inplace_under_autograd_gradcheck(rng, layout, rotary_dim):
    """The recorded backward is the inverse rotation: gradcheck in float64, x and tables."""
    cfg, x, _, cos, sin = _setup(rng, head_dim=8, rotary_dim=rotary_dim, shape=(1, 2, 3))
    r = cfg.rotary_dim

    def rotate_in_place(a, c, s):
        y = a * 1.0  # a non-leaf, as inside a model
        apply_rope_(y, c, s, layout=layout, rotary_dim=r)
        return y

    xt = torch.from_numpy(x).requires_grad_(True)
    ct = torch.from_numpy(cos).requires_grad_(True)
    st = torch.from_numpy(sin).requires_grad_(True)
    assert torch.autograd.gradcheck(rotate_in_place, (xt, ct, st))
    assert torch.autograd.gradcheck(lambda a: rotate_in_place(a, cos, sin), (xt,))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_inplace_under_autograd_equals_out_of_place(rng, layout):
    _, x, _, cos, sin = _setup(rng)
    w = torch.from_numpy(rng.standard_normal(x.shape))
    leaf, y = _graph_input(x)
    version = y._version
    assert apply_rope_(y, cos, sin, layout=layout) is y
    assert y._version > version  # autograd and any saved view see the write
    (y * w).sum().backward()
    leaf2 = torch.from_numpy(x).requires_grad_(True)
    (apply_rope(leaf2, cos, sin, layout=layout) * w).sum().backward()
    torch.testing.assert_close(y.detach(), apply_rope(torch.from_numpy(x), cos, sin, layout=layout), rtol=0, atol=1e-12)
    torch.testing.assert_close(leaf.grad, leaf2.grad, rtol=0, atol=1e-12)
    np.testing.assert_allclose(leaf.grad.numpy(), apply_rope(w.numpy(), cos, -sin, layout=layout), atol=1e-12)


def test_inplace_under_autograd_q_and_k(rng):
    _, x, _, cos, sin = _setup(rng)
    leaf_q, q = _graph_input(x)
    leaf_k, k = _graph_input(x[:, :1])
    apply_rope_((q, k), cos, sin, layout="half")
    (q.sum() + 2 * k.sum()).backward()
    ones = np.ones_like(x)
    np.testing.assert_allclose(leaf_q.grad.numpy(), apply_rope(ones, cos, -sin, layout="half"), atol=1e-12)
    np.testing.assert_allclose(leaf_k.grad.numpy(), apply_rope(2 * ones[:, :1], cos, -sin, layout="half"), atol=1e-12)


def test_inplace_on_a_leaf_that_requires_grad_raises(rng):
    _, x, _, cos, sin = _setup(rng)
    leaf = torch.from_numpy(x).requires_grad_(True)
    before = leaf.detach().clone()
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad is being used in an in-place operation"):
        apply_rope_(leaf, cos, sin, layout="half")
    assert torch.equal(leaf.detach(), before)  # untouched
    with torch.no_grad():  # as torch allows: an update autograd is not asked to record
        apply_rope_(leaf, cos, sin, layout="half")
    torch.testing.assert_close(leaf.detach(), apply_rope(before, cos, sin, layout="half"), rtol=0, atol=1e-12)


def test_inplace_after_a_graph_saved_x_raises_on_backward(rng):
    _, x, _, cos, sin = _setup(rng)
    _, y = _graph_input(x)
    z = (y * y).sum()  # saves y
    apply_rope_(y, cos, sin, layout="half")
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        z.backward()


def test_inplace_with_tables_that_require_grad(rng):
    """Learned frequencies: x needs no grad, the tables do; the write is recorded."""
    _, x, _, cos, sin = _setup(rng)
    ct = torch.from_numpy(cos).requires_grad_(True)
    st = torch.from_numpy(sin).requires_grad_(True)
    y = torch.from_numpy(x).clone()
    apply_rope_(y, ct, st, layout="interleaved")
    assert y.requires_grad
    y.sum().backward()
    ct2 = torch.from_numpy(cos).requires_grad_(True)
    st2 = torch.from_numpy(sin).requires_grad_(True)
    apply_rope(torch.from_numpy(x), ct2, st2, layout="interleaved").sum().backward()
    torch.testing.assert_close(ct.grad, ct2.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(st.grad, st2.grad, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- the layout is never guessed


def test_bare_tables_need_a_layout(rng):
    _, x, _, cos, sin = _setup(rng)
    for fn in (apply_rope, apply_rope_):
        with pytest.raises(TypeError, match=r"needs layout=.*layout='half' for Llama.*layout='interleaved' for GPT-J"):
            fn(x.copy(), cos, sin)


def test_partial_rotary_with_bare_tables_is_said_not_guessed(rng):
    """Tables for head_dim 64 on x of width 96 are refused; rotary_dim= makes the partial
    rotary explicit and then rotates the first R features only."""
    cos, sin = rope_tables(RopeConfig(64), np.arange(4))
    x = rng.standard_normal((4, 96))
    with pytest.raises(ValueError, match=r"x has 96 features per head but cos/sin rotate 64 \(32 columns\).*rotary_dim=64"):
        apply_rope(x, cos, sin, layout="half")
    out = apply_rope(x, cos, sin, layout="half", rotary_dim=64)
    np.testing.assert_array_equal(out[:, 64:], x[:, 64:])
    np.testing.assert_allclose(out[:, :64], apply_rope(x[:, :64], cos, sin, layout="half"), atol=1e-15)


# ---------------------------------------------------------------- errors, one per case


def test_tables_wider_than_x():
    cos, sin = rope_tables(RopeConfig(16), np.arange(4))
    with pytest.raises(ValueError, match=r"8 columns, too many for x's 8 features.*rows_from_hf"):
        apply_rope(np.zeros((4, 8)), cos, sin, layout="half")
    with pytest.raises(ValueError, match=r"x.shape\[-1\]=4"):
        apply_rope(np.zeros((4, 4)), cos, sin, layout="half")


def test_tables_length_differs_from_T():
    cos, sin = rope_tables(RopeConfig(8), np.arange(4))
    with pytest.raises(ValueError, match=r"T=5"):
        apply_rope(np.zeros((5, 8)), cos, sin, layout="half")


def test_cos_sin_shapes_differ():
    cos, _ = rope_tables(RopeConfig(8), np.arange(4))
    _, sin = rope_tables(RopeConfig(8), np.arange(3))
    with pytest.raises(ValueError, match=r"\(4, 4\) and \(3, 4\)"):
        apply_rope(np.zeros((4, 8)), cos, sin, layout="half")


def test_integer_x_numpy():
    cos, sin = rope_tables(RopeConfig(8), np.arange(4))
    with pytest.raises(TypeError, match=r"int64"):
        apply_rope(np.zeros((4, 8), dtype=np.int64), cos, sin, layout="half")


def test_integer_x_torch():
    cos, sin = rope_tables(RopeConfig(8), np.arange(4))
    with pytest.raises(TypeError, match=r"int32"):
        apply_rope(torch.zeros((4, 8), dtype=torch.int32), cos, sin, layout="half")


def test_unknown_layout_in_apply():
    cos, sin = rope_tables(RopeConfig(8), np.arange(4))
    with pytest.raises(ValueError, match=r"'neox'"):
        apply_rope(np.zeros((4, 8)), cos, sin, layout="neox")


def test_x_not_an_array():
    cos, sin = rope_tables(RopeConfig(2), np.arange(1))
    with pytest.raises(TypeError, match=r"list"):
        apply_rope([[0.0, 1.0]], cos, sin, layout="half")


def test_x_without_time_axis():
    cos, sin = rope_tables(RopeConfig(8), np.arange(1))
    with pytest.raises(ValueError, match=r"\(8,\)"):
        apply_rope(np.zeros(8), cos, sin, layout="half")


# ---------------------------------------------------------------- seed 004: rope_apply


def _seed004_reference(x, base):
    """Straight from the seed's text: theta_i = base^(-2i/d), phi = pos * theta_i, interleaved."""
    T, d = len(x), len(x[0])
    out = []
    for pos in range(T):
        for i in range(d // 2):
            phi = pos * base ** (-2 * i / d)
            a, b = x[pos][2 * i], x[pos][2 * i + 1]
            out += [a * math.cos(phi) - b * math.sin(phi), a * math.sin(phi) + b * math.cos(phi)]
    return np.array(out)


def test_seed004_worked_example():
    from ropelab.exercises import rope_apply

    out = rope_apply(0, np.array([[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 1.0]]), 10000.0)
    assert out.shape == (8,)
    np.testing.assert_allclose(out[:4], 0.0, atol=0)
    # the seed's prose says 1e-4 rad for pair 1, its formula gives 10000**(-2/4) = 1e-2 rad
    expect = [math.cos(1.0), math.sin(1.0), -math.sin(1e-2), math.cos(1e-2)]
    np.testing.assert_allclose(out[4:], expect, rtol=1e-12, atol=1e-15)
    assert out[4:] == pytest.approx([0.540, 0.841, -0.01, 1.0], abs=1e-3)


@pytest.mark.parametrize("T,d,base", [(7, 8, 10000.0), (33, 64, 500000.0), (1, 2, 10.0)])
def test_seed004_against_formula(rng, T, d, base):
    from ropelab.exercises import rope_apply

    x = rng.standard_normal((T, d))
    out = rope_apply(123, x, base)
    assert out.shape == (T * d,)
    np.testing.assert_allclose(out, _seed004_reference(x.tolist(), base), rtol=0, atol=1e-12)


def test_seed004_rejects_odd_d():
    from ropelab.exercises import rope_apply

    with pytest.raises(ValueError, match=r"d=3"):
        rope_apply(0, np.zeros((2, 3)), 10000.0)


# ---------------------------------------------------------------- memory layouts and dtypes


@pytest.mark.parametrize("layout", LAYOUTS)
def test_non_contiguous_views(rng, layout):
    """(B, T, H, D) storage viewed as (B, H, T, D), as attention code does after a projection."""
    cfg = RopeConfig(16, rotary_dim=12)
    B, T, H = 2, 5, 3
    store = rng.standard_normal((B, T, H, 16))
    cos, sin = rope_tables(cfg, rng.integers(0, 10**4, size=(B, 1, T)))
    expect = apply_rope(np.ascontiguousarray(store.transpose(0, 2, 1, 3)), cos, sin, layout=layout, rotary_dim=12)
    for as_kind in (lambda a: a, lambda a: torch.from_numpy(a)):
        for dtype in (np.float64, np.float32):
            base = as_kind(store.astype(dtype))
            view = (
                base.transpose(1, 2)
                if isinstance(base, torch.Tensor)
                else base.transpose(0, 2, 1, 3)
            )
            out = apply_rope(view, cos, sin, layout=layout, rotary_dim=12)
            got = out.numpy() if isinstance(out, torch.Tensor) else out
            np.testing.assert_allclose(got, expect, atol=1e-5 if dtype == np.float32 else 1e-12)
            # in place on the view writes through to the (B, T, H, D) storage
            assert apply_rope_(view, cos, sin, layout=layout, rotary_dim=12) is view
            stored = base.numpy() if isinstance(base, torch.Tensor) else base
            np.testing.assert_allclose(
                stored.transpose(0, 2, 1, 3), expect, atol=1e-5 if dtype == np.float32 else 1e-12
            )


def test_numpy_float16_computed_in_float32(rng):
    _, x, _, cos, sin = _setup(rng)
    xh = x.astype(np.float16)
    out = apply_rope(xh, cos, sin, layout="half")
    assert out.dtype == np.float16
    expect = apply_rope(xh.astype(np.float32), cos, sin, layout="half").astype(np.float16)
    assert (out == expect).mean() >= 0.99
    np.testing.assert_allclose(
        out.astype(np.float64), expect.astype(np.float64), rtol=2**-10, atol=1e-6
    )


def test_inplace_on_a_slice_leaves_the_rest(rng):
    cfg = RopeConfig(8)
    cos, sin = rope_tables(cfg, np.arange(3))
    big = rng.standard_normal((4, 3, 8))
    before = big.copy()
    apply_rope_(big[1], cos, sin, layout="interleaved")
    np.testing.assert_array_equal(big[[0, 2, 3]], before[[0, 2, 3]])
    np.testing.assert_allclose(
        big[1], apply_rope(before[1], cos, sin, layout="interleaved"), atol=1e-12
    )


# ---------------------------------------------------------------- the peers' rotation conventions


def test_half_layout_is_hf_llama_rotation(rng):
    """layout="half" with rope_tables equals transformers' Llama rotary (YaRN, attention factor too)."""
    transformers = pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    transformers.logging.set_verbosity_error()
    hf_cfg = transformers.LlamaConfig(
        hidden_size=128,
        num_attention_heads=2,
        head_dim=64,
        max_position_embeddings=8192,
        rope_parameters={
            "rope_type": "yarn",
            "factor": 4.0,
            "original_max_position_embeddings": 2048,
            "rope_theta": 1e4,
        },
    )
    B, H, T = 2, 2, 6
    # small positions: transformers' float32 angles are off by ~p * 6e-8 rad (see table_precision.py)
    positions = rng.integers(0, 100, size=(B, T))
    q = rng.standard_normal((B, H, T, 64)).astype(np.float32)
    k = rng.standard_normal((B, H, T, 64)).astype(np.float32)
    cos_hf, sin_hf = LlamaRotaryEmbedding(hf_cfg)(torch.from_numpy(q), torch.from_numpy(positions))
    q_hf, k_hf = apply_rotary_pos_emb(torch.from_numpy(q), torch.from_numpy(k), cos_hf, sin_hf)
    cos, sin = rope_tables(RopeConfig.from_hf(hf_cfg), positions[:, None, :])  # (B, 1, T, R/2)
    np.testing.assert_allclose(apply_rope(q, cos, sin, layout="half"), q_hf.numpy(), atol=5e-5)
    np.testing.assert_allclose(apply_rope(k, cos, sin, layout="half"), k_hf.numpy(), atol=5e-5)


def test_interleaved_layout_is_gptj_rotation(rng):
    """layout="interleaved" with partial rotary equals transformers' GPT-J rotary (rotate_every_two)."""
    pytest.importorskip("transformers")
    from transformers.models.gptj.modeling_gptj import (
        apply_rotary_pos_emb,
        create_sinusoidal_positions,
    )

    B, T, H, D, R = 2, 5, 3, 32, 8
    positions = rng.integers(0, 500, size=(B, T))
    x = rng.standard_normal((B, T, H, D)).astype(np.float32)
    sincos = create_sinusoidal_positions(512, R)[torch.from_numpy(positions)]  # (B, T, R)
    sin_hf, cos_hf = torch.split(sincos, R // 2, dim=-1)
    rot = apply_rotary_pos_emb(torch.from_numpy(x[..., :R]), sin_hf, cos_hf)
    expect = np.concatenate([rot.numpy(), x[..., R:]], axis=-1)
    cos, sin = rope_tables(RopeConfig(D, rotary_dim=R), positions[:, :, None])  # (B, T, 1, R/2)
    xh = np.ascontiguousarray(x.transpose(0, 2, 1, 3))  # (B, H, T, D)
    got = apply_rope(xh, cos.transpose(0, 2, 1, 3), sin.transpose(0, 2, 1, 3), layout="interleaved", rotary_dim=R)
    np.testing.assert_allclose(got.transpose(0, 2, 1, 3), expect, atol=2e-5)


# ---------------------------------------------------------------- positions= (tables indexed by position)


def _kinds():
    out = [("numpy", lambda a: a, lambda a: a)]
    out.append(("torch", torch.from_numpy, torch.from_numpy))
    try:
        import jax.numpy as jnp

        out.append(("jax", jnp.asarray, jnp.asarray))
    except ImportError:
        pass
    return out


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", ["numpy", "torch", "jax"])
@pytest.mark.parametrize("positions_kind", ["numpy", "native"])
def test_positions_index_the_tables(rng, layout, kind, positions_kind):
    to_x, to_p = {k: (a, b) for k, a, b in _kinds()}.get(kind, (None, None))
    if to_x is None:
        pytest.skip(f"{kind} not installed")
    cfg = RopeConfig(16, rotary_dim=12)
    cos, sin = rope_tables(cfg, np.arange(64))  # (P, R/2) tables
    B, H, T = 2, 3, 5
    positions = rng.integers(0, 64, size=(B, 1, T))  # per row, broadcast over heads
    x = rng.standard_normal((B, H, T, 16)).astype(np.float32)
    expect = reference_rope(x, positions, reference_inv_freq(1e4, 12), layout=layout)
    pos = positions if positions_kind == "numpy" else to_p(positions)
    out = apply_rope(to_x(x), cos, sin, layout=layout, rotary_dim=12, positions=pos)
    np.testing.assert_allclose(np.asarray(out), expect, atol=1e-5)


def test_positions_outside_the_tables():
    cos, sin = rope_tables(RopeConfig(8), np.arange(10))
    with pytest.raises(ValueError, match=r"\[0, 10\).*from 0 to 10"):
        apply_rope(np.zeros((3, 8)), cos, sin, positions=np.array([0, 5, 10]), layout="half")


def test_float_positions_rejected():
    cos, sin = rope_tables(RopeConfig(8), np.arange(10))
    with pytest.raises(TypeError, match=r"float64"):
        apply_rope(np.zeros((3, 8)), cos, sin, positions=np.array([0.0, 1.0, 2.0]), layout="half")


def test_in_place_arrays_sharing_memory_are_refused_not_rotated_twice():
    """apply_rope_((q, q)) or overlapping views would turn the shared elements once per
    array; refused by name (numpy, torch, and RotaryEmbedding.rotate_), nothing written."""
    torch = pytest.importorskip("torch")
    from ropelab.torch import RotaryEmbedding

    cos, sin = ropelab.rope_tables(RopeConfig(16, layout="half"), np.arange(5))
    q = np.random.default_rng(0).standard_normal((5, 16))
    buf = np.random.default_rng(1).standard_normal((5, 24))
    for xs, how in (((q, q), "it is that array"), ((buf[:, :16], buf[:, 8:]), "partly"),
                    ((torch.from_numpy(q), torch.from_numpy(q)), "it is that array")):
        before = [x.copy() if isinstance(x, np.ndarray) else x.numpy().copy() for x in xs]
        with pytest.raises(ValueError, match=rf"x\[1\] shares memory with x\[0\] \({how}\)"):
            ropelab.apply_rope_(xs, cos, sin, layout="half")
        for x, b in zip(xs, before, strict=True):
            np.testing.assert_array_equal(x if isinstance(x, np.ndarray) else x.numpy(), b)
    t = torch.randn(1, 2, 5, 16)
    with pytest.raises(ValueError, match="shares memory"):
        RotaryEmbedding(RopeConfig(16)).rotate_(t, t)


def test_jax_positions_outside_the_tables_are_refused_eagerly_and_nan_under_jit():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    cos, sin = ropelab.rope_tables(RopeConfig(16, layout="half"), np.arange(5))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((5, 16)), dtype=jnp.float32)
    with pytest.raises(ValueError, match=r"positions must lie in \[0, 5\).*from -1 to 4"):
        ropelab.apply_rope(x, jnp.asarray(cos), jnp.asarray(sin), layout="half", positions=jnp.array([-1, 1, 2, 3, 4]))
    for tables in ((cos, sin), (jnp.asarray(cos), jnp.asarray(sin))):  # numpy tables move to jax
        rotate = jax.jit(lambda a, p, t=tables: ropelab.apply_rope(a, *t, layout="half", positions=p))
        got = rotate(x, jnp.array([4, 3, 2, 1, 0]))
        want = ropelab.apply_rope(np.asarray(x, np.float64), cos[::-1], sin[::-1], layout="half")
        np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-6)
        bad = np.asarray(rotate(x, jnp.array([0, 1, 2, 3, 99])))
        assert np.isnan(bad[4]).all() and np.isfinite(bad[:4]).all()


def test_numpy_bfloat16_from_ml_dtypes_is_rotated_in_float32():
    """ml_dtypes' bfloat16 (jax's; numpy counts it as no floating type) is a floating
    array like float16: rotated in float32, returned in bfloat16, in place too; its
    float8 types stay refused."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    cos, sin = rope_tables(RopeConfig(16, layout="half"), np.arange(5))
    x = np.random.default_rng(0).standard_normal((2, 5, 16))
    want = apply_rope(x, cos, sin, layout="half")
    xb = x.astype(ml_dtypes.bfloat16)
    got = apply_rope(xb, cos, sin, layout="half")
    assert got.dtype == xb.dtype
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=0, atol=0.02)  # bfloat16: 8 bits
    inplace = xb.copy()
    apply_rope_(inplace, cos.astype(ml_dtypes.bfloat16), sin.astype(ml_dtypes.bfloat16), layout="half")
    np.testing.assert_allclose(inplace.astype(np.float64), want, rtol=0, atol=0.03)
    with pytest.raises(TypeError, match="x must be a floating-point array, got dtype float8_e4m3fn"):
        apply_rope(x.astype(ml_dtypes.float8_e4m3fn), cos, sin, layout="half")
