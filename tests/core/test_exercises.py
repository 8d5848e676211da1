"""The seed exercises against references written from the seeds' own descriptions.

Seed 000 and 001 references are float64 numpy, written out from the seeds' formulas;
seed 002's is the seed's own NNX sketch (same ``nnx.Rngs(seed)``, projections created
q, k, v, out), in jnp.
"""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

import ropelab
from ropelab import exercises as ex

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # before jax is first imported

# --- seed 000 -------------------------------------------------------------------------------


def seed000_apply_rope(x, positions):
    """Seed 000's apply_rope as its description gives it: half split, 10000 ** (-i / half)."""
    half = x.shape[-1] // 2
    freqs = 1.0 / (10000.0 ** (np.arange(half) / half))
    angles = positions[:, None] * freqs[None, :]
    c, s = np.cos(angles), np.sin(angles)
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate([x1 * c - x2 * s, x1 * s + x2 * c], axis=-1)


def seed000_attention(Q, K, V, positions, use_rope=True, causal=True):
    """Seed 000's irope_attention: additive -1e9 causal mask, max-shifted softmax."""
    if use_rope:
        Q, K = seed000_apply_rope(Q, positions), seed000_apply_rope(K, positions)
    T = Q.shape[2]
    scores = Q @ K.transpose(0, 1, 3, 2) / np.sqrt(Q.shape[-1])
    if causal:
        scores = scores + np.triu(np.ones((T, T)), k=1) * -1e9
    w = np.exp(scores - scores.max(-1, keepdims=True))
    return (w / w.sum(-1, keepdims=True)) @ V


def test_seed000_frequencies_are_ropeconfig_default():
    for d in (2, 8, 64):
        half = d // 2
        np.testing.assert_allclose(
            ropelab.RopeConfig(d).inv_freq(), 1.0 / 10000.0 ** (np.arange(half) / half), rtol=1e-15
        )


@pytest.mark.parametrize("shape", [(2, 3, 5, 8), (1, 1, 4, 2), (2, 4, 6, 16)])
def test_seed000_apply_rope(shape):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape)
    positions = rng.integers(0, 1000, size=shape[2])
    np.testing.assert_allclose(ex.apply_rope(x, positions), seed000_apply_rope(x, positions), atol=1e-12)


def test_seed000_apply_rope_rotates_pairs_half_apart():
    # one pair (x[0], x[D/2]) = (1, 0) at position p rotates to (cos p, sin p); others stay zero
    x = np.zeros((1, 1, 1, 6))
    x[..., 0] = 1.0
    out = ex.apply_rope(x, np.array([3]))
    expected = np.zeros(6)
    expected[0], expected[3] = math.cos(3.0), math.sin(3.0)
    np.testing.assert_allclose(out[0, 0, 0], expected, atol=1e-15)


@pytest.mark.parametrize("use_rope", [True, False])
@pytest.mark.parametrize("causal", [True, False])
def test_seed000_irope_attention(use_rope, causal):
    rng = np.random.default_rng(1)
    Q, K, V = (rng.normal(size=(2, 3, 6, 8)) for _ in range(3))
    positions = np.arange(6) + 10
    got = ex.irope_attention(Q, K, V, positions, use_rope=use_rope, causal=causal)
    ref = seed000_attention(Q, K, V, positions, use_rope=use_rope, causal=causal)
    np.testing.assert_allclose(got, ref, rtol=1e-11, atol=1e-12)


def test_seed000_irope_layer_selection():
    rng = np.random.default_rng(2)
    Q, K, V = (rng.normal(size=(1, 2, 5, 4)) for _ in range(3))
    positions = np.array([0, 1, 2, 7, 30])
    model = ex.iRoPETransformer(4, {0, 3})
    assert model.pattern == ("rope", "nope", "nope", "rope")
    rope = seed000_attention(Q, K, V, positions, use_rope=True)
    nope = seed000_attention(Q, K, V, positions, use_rope=False)
    assert np.max(np.abs(rope - nope)) > 1e-3  # the two kinds of layer really differ
    for layer in range(4):
        expected = rope if layer in (0, 3) else nope
        got = model.forward_layer(Q, K, V, positions, layer)
        np.testing.assert_allclose(got, expected, rtol=1e-11, atol=1e-12)


def test_seed000_nope_layer_ignores_positions_rope_layer_sees_gaps():
    rng = np.random.default_rng(3)
    Q, K, V = (rng.normal(size=(1, 2, 5, 4)) for _ in range(3))
    model = ex.iRoPETransformer(2, {1})
    a, b = np.arange(5), np.array([0, 3, 4, 9, 20])
    np.testing.assert_array_equal(model.forward_layer(Q, K, V, a, 0), model.forward_layer(Q, K, V, b, 0))
    # RoPE is relative: a uniform shift changes nothing, uneven gaps change the output
    np.testing.assert_allclose(
        model.forward_layer(Q, K, V, a, 1), model.forward_layer(Q, K, V, a + 100, 1), atol=1e-11
    )
    assert np.max(np.abs(model.forward_layer(Q, K, V, a, 1) - model.forward_layer(Q, K, V, b, 1))) > 1e-3


# --- seed 001 -------------------------------------------------------------------------------


def seed001_block(x, w_q, w_k, w_v, w_o, H, cos, sin):
    """Seed 001 written out element by element from its pipeline and rotation rule."""
    N, T, dm = x.shape
    Dh = dm // H
    Q, K, V = x @ w_q, x @ w_k, x @ w_v

    def head(a, n, h, t):
        return a[n, t, h * Dh : (h + 1) * Dh]

    concat = np.zeros((N, T, dm))
    for n in range(N):
        for h in range(H):
            q = np.zeros((T, Dh))
            k = np.zeros((T, Dh))
            for t in range(T):
                for src, dst in ((head(Q, n, h, t), q), (head(K, n, h, t), k)):
                    for j in range(Dh // 2):
                        a, b = src[2 * j], src[2 * j + 1]
                        dst[t, 2 * j] = a * cos[t, j] - b * sin[t, j]
                        dst[t, 2 * j + 1] = a * sin[t, j] + b * cos[t, j]
            for i in range(T):
                s = [sum(q[i, d] * k[j, d] for d in range(Dh)) / math.sqrt(Dh) for j in range(T)]
                m = max(s)
                e = [math.exp(v - m) for v in s]
                z = sum(e)
                concat[n, i, h * Dh : (h + 1) * Dh] = sum(e[j] / z * head(V, n, h, j) for j in range(T))
    y = concat @ w_o + x
    out = np.zeros_like(y)
    for n in range(N):
        for t in range(T):
            mu = sum(y[n, t]) / dm
            var = sum((y[n, t] - mu) ** 2) / dm
            out[n, t] = (y[n, t] - mu) / math.sqrt(var + 1e-5)
    return out


def _block_inputs(rng, N=2, T=4, d_model=8):
    x = rng.normal(size=(N, T, d_model))
    ws = [rng.normal(size=(d_model, d_model)) / math.sqrt(d_model) for _ in range(4)]
    return x, ws


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_seed001_block_with_standard_tables(heads):
    rng = np.random.default_rng(4)
    x, ws = _block_inputs(rng)
    Dh = 8 // heads
    angles = np.arange(4)[:, None] * 10000.0 ** (-2 * np.arange(Dh // 2) / Dh)
    cos, sin = np.cos(angles), np.sin(angles)
    got = ex.rope_transformer_block(x, *ws, heads, cos, sin)
    assert got.shape == x.shape
    np.testing.assert_allclose(got, seed001_block(x, *ws, heads, cos, sin), rtol=1e-10, atol=1e-10)


def test_seed001_block_uses_the_given_tables():
    # arbitrary tables (not cos/sin of anything): the block must use them as given
    rng = np.random.default_rng(5)
    x, ws = _block_inputs(rng, T=3)
    cos, sin = rng.normal(size=(3, 2)), rng.normal(size=(3, 2))
    got = ex.rope_transformer_block(x, *ws, 2, cos, sin)
    np.testing.assert_allclose(got, seed001_block(x, *ws, 2, cos, sin), rtol=1e-10, atol=1e-10)


def test_seed001_output_is_layer_normed():
    rng = np.random.default_rng(6)
    x, ws = _block_inputs(rng)
    cos, sin = np.ones((4, 2)), np.zeros((4, 2))
    out = ex.rope_transformer_block(x, *ws, 2, cos, sin)
    np.testing.assert_allclose(out.mean(-1), 0.0, atol=1e-12)
    y_var = out.var(-1)
    assert np.all((y_var > 0.99) & (y_var <= 1.0))


# --- seed 002 -------------------------------------------------------------------------------


def _seed002_sketch():
    """Seed 002's worked sketch, as the seed writes it (jnp, interleaved rotate)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    def rotate(x, cos, sin):
        x1 = x[..., 0::2]
        x2 = x[..., 1::2]
        rotated = jnp.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
        return rotated.reshape(*x.shape)

    class SketchMHA(nnx.Module):
        def __init__(self, d_model, num_heads, base, rngs):
            self.q_proj = nnx.Linear(d_model, d_model, rngs=rngs)
            self.k_proj = nnx.Linear(d_model, d_model, rngs=rngs)
            self.v_proj = nnx.Linear(d_model, d_model, rngs=rngs)
            self.out_proj = nnx.Linear(d_model, d_model, rngs=rngs)
            self.base = base
            self.num_heads = num_heads
            self.head_dim = d_model // num_heads

        def _cos_sin(self, T):
            i = jnp.arange(self.head_dim // 2)
            theta = jnp.power(self.base, -2.0 * i / self.head_dim)
            angles = jnp.arange(T)[:, None] * theta[None, :]
            return jnp.cos(angles), jnp.sin(angles)

        def __call__(self, x):
            T, _ = x.shape
            H, Dh = self.num_heads, self.head_dim
            q = self.q_proj(x).reshape(T, H, Dh).transpose(1, 0, 2)
            k = self.k_proj(x).reshape(T, H, Dh).transpose(1, 0, 2)
            v = self.v_proj(x).reshape(T, H, Dh).transpose(1, 0, 2)
            cos, sin = self._cos_sin(T)
            q = rotate(q, cos[None], sin[None])
            k = rotate(k, cos[None], sin[None])
            scores = jnp.matmul(q, k.transpose(0, 2, 1)) / jnp.sqrt(Dh)
            per_head = jnp.matmul(jax.nn.softmax(scores, axis=-1), v)
            return self.out_proj(per_head.transpose(1, 0, 2).reshape(T, H * Dh))

    return SketchMHA, nnx


@pytest.mark.parametrize(
    "seed, T, num_heads, d_model, base",
    [(0, 5, 2, 16, 10000.0), (3, 7, 4, 32, 500.0), (42, 1, 1, 8, 10000.0), (7, 12, 8, 64, 1e6)],
)
def test_seed002_matches_sketch(seed, T, num_heads, d_model, base):
    pytest.importorskip("flax")
    Sketch, nnx = _seed002_sketch()
    x = np.random.default_rng(seed).normal(size=(T, d_model)).astype(np.float32)
    sketch = Sketch(d_model, num_heads, base, nnx.Rngs(seed))
    ref = np.asarray(nnx.jit(lambda m, a: m(a))(sketch, x)).reshape(-1)
    got = ex.mha_rope(float(seed), x, float(num_heads), float(d_model), base)
    assert got.shape == (T * d_model,) and got.ndim == 1
    # float32 sketch: its angles pos * theta are float32 (one ulp at pos 11 ~ 1e-6 rad)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_seed002_seed_changes_weights():
    pytest.importorskip("flax")
    x = np.random.default_rng(0).normal(size=(4, 8))
    assert np.max(np.abs(ex.mha_rope(0.0, x, 2.0, 8.0, 1e4) - ex.mha_rope(1.0, x, 2.0, 8.0, 1e4))) > 1e-3


# --- seed 004 -------------------------------------------------------------------------------


def test_seed004_rope_apply_formula():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(6, 8))
    ref = np.zeros_like(x)
    for pos in range(6):
        for i in range(4):
            phi = pos * 500.0 ** (-2 * i / 8)
            a, b = x[pos, 2 * i], x[pos, 2 * i + 1]
            ref[pos, 2 * i] = a * math.cos(phi) - b * math.sin(phi)
            ref[pos, 2 * i + 1] = a * math.sin(phi) + b * math.cos(phi)
    np.testing.assert_allclose(ex.rope_apply(0, x, 500.0), ref.reshape(-1), atol=1e-13)


def test_exercises_import_no_framework():
    code = "import sys, ropelab.exercises; print(any(m in sys.modules for m in ('jax', 'flax', 'torch')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- errors ---------------------------------------------------------------------------------


def test_error_seed000_odd_head_dim():
    with pytest.raises(ValueError, match="even head dim d_k, got d_k=5"):
        ex.apply_rope(np.zeros((1, 1, 3, 5)), np.arange(3))


def test_error_seed000_positions_shape():
    with pytest.raises(ValueError, match=r"positions must be shaped \(seq_len,\) = \(3,\)"):
        ex.apply_rope(np.zeros((1, 1, 3, 4)), np.arange(4))


def test_error_seed000_x_not_real():
    with pytest.raises(TypeError, match="real-valued"):
        ex.apply_rope(np.array(["a", "b"]), np.arange(1))


def test_error_seed000_qkv_shapes():
    with pytest.raises(ValueError, match="Q and K must share"):
        ex.irope_attention(np.zeros((1, 2, 3, 4)), np.zeros((1, 2, 4, 4)), np.zeros((1, 2, 4, 4)), np.arange(3))


def test_error_seed000_qkv_rank():
    with pytest.raises(ValueError, match="Q must be 4-D"):
        ex.irope_attention(np.zeros((2, 3, 4)), np.zeros((2, 3, 4)), np.zeros((2, 3, 4)), np.arange(3))


def test_error_seed000_rope_layer_out_of_range():
    with pytest.raises(ValueError, match=r"an entry of rope_layers must be an integer >= 0 and <= 1, got 2"):
        ex.iRoPETransformer(2, {0, 2})


def test_error_seed000_rope_layers_not_a_set():
    with pytest.raises(TypeError, match="rope_layers"):
        ex.iRoPETransformer(2, 1)


def test_error_seed000_num_layers():
    with pytest.raises(ValueError, match="num_layers must be an integer >= 1, got 0"):
        ex.iRoPETransformer(0, set())


def test_error_seed000_layer_idx():
    model = ex.iRoPETransformer(2, {0})
    z = np.zeros((1, 1, 2, 2))
    with pytest.raises(ValueError, match=r"layer_idx must be an integer >= 0 and <= 1, got 5"):
        model.forward_layer(z, z, z, np.arange(2), 5)


def _block_args(d_model=8, T=3, heads=2, half=None):
    half = d_model // heads // 2 if half is None else half
    w = np.eye(d_model)
    return np.zeros((1, T, d_model)), w, w, w, w, heads, np.ones((T, half)), np.zeros((T, half))


def test_error_seed001_heads_do_not_divide():
    with pytest.raises(ValueError, match="d_model=8 is not divisible by num_heads=3"):
        ex.rope_transformer_block(*_block_args(heads=3, half=1))


def test_error_seed001_odd_head_dim():
    with pytest.raises(ValueError, match="even head dim, got d_model / num_heads = 3"):
        ex.rope_transformer_block(*_block_args(d_model=6, heads=2, half=1))


def test_error_seed001_table_shape():
    with pytest.raises(ValueError, match=r"freqs_cos must be \(T, d_head/2\) = \(3, 2\), got \(3, 3\)"):
        ex.rope_transformer_block(*_block_args(half=3))


def test_error_seed001_weight_shape():
    args = list(_block_args())
    args[2] = np.zeros((8, 4))
    with pytest.raises(ValueError, match=r"w_k must be \(d_model, d_model\)"):
        ex.rope_transformer_block(*args)


def test_error_seed001_x_rank():
    args = list(_block_args())
    args[0] = np.zeros((3, 8))
    with pytest.raises(ValueError, match="x must be 3-D"):
        ex.rope_transformer_block(*args)


def test_error_seed001_num_heads_not_whole():
    with pytest.raises(ValueError, match="num_heads must be a whole number"):
        ex.rope_transformer_block(*_block_args(heads=2.5, half=2))


def test_error_seed002_odd_head_dim():
    pytest.importorskip("flax")
    with pytest.raises(ValueError, match="even head dim"):
        ex.mha_rope(0.0, np.zeros((2, 6)), 2.0, 6.0, 1e4)


def test_error_seed002_heads_do_not_divide():
    pytest.importorskip("flax")
    with pytest.raises(ValueError, match="d_model=8 is not divisible by num_heads=3"):
        ex.mha_rope(0.0, np.zeros((2, 8)), 3.0, 8.0, 1e4)


def test_error_seed002_x_shape():
    pytest.importorskip("flax")
    with pytest.raises(ValueError, match=r"x must be 2-D \(T, d_model=8\), got shape \(2, 4\)"):
        ex.mha_rope(0.0, np.zeros((2, 4)), 2.0, 8.0, 1e4)


def test_error_seed002_seed_not_whole():
    with pytest.raises(ValueError, match="seed must be a whole number"):
        ex.mha_rope(0.5, np.zeros((2, 8)), 2.0, 8.0, 1e4)


def test_error_seed002_base():
    pytest.importorskip("flax")
    with pytest.raises(ValueError, match="base must be a finite number > 1, got 0.5"):
        ex.mha_rope(0.0, np.zeros((2, 8)), 2.0, 8.0, 0.5)


def test_error_seed002_base_type():
    with pytest.raises(TypeError, match="base must be a number"):
        ex.mha_rope(0.0, np.zeros((2, 8)), 2.0, 8.0, "10000")


def test_seed000_whole_float_layer_indices_read_as_integers():
    """num_layers, rope_layers entries and layer_idx take whole floats alike (4.0 for 4);
    a fractional index is refused by name."""
    model = ex.iRoPETransformer(4.0, {1.0, 3})
    assert model.rope_layers == {1, 3} and model.pattern == ("nope", "rope", "nope", "rope")
    q = np.random.default_rng(0).standard_normal((1, 2, 5, 8))
    np.testing.assert_array_equal(model.forward_layer(q, q, q, np.arange(5), 1.0),
                                  model.forward_layer(q, q, q, np.arange(5), 1))
    with pytest.raises(ValueError, match="layer_idx must be a whole number, got 1.5"):
        model.forward_layer(q, q, q, np.arange(5), 1.5)
