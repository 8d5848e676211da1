"""ropelab.nnx against float64 numpy references, the papers' identities and the torch front end.

Shapes: B batch, T time, H heads, K kv heads, D head dim, R rotary dim.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # before jax is first imported

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("flax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

import ropelab  # noqa: E402
from ropelab import scaling  # noqa: E402
from ropelab.nnx import Attention, KVCache, RopeMHA, load_torch_state_dict  # noqa: E402
from ropelab.reference import attention as ref_attention  # noqa: E402

# --- float64 references, written from DESIGN.md's conventions -------------------------------


def ref_rotate(x, positions, inv_freq, layout, factor=1.0):
    """Rotate pairs of x ``(B, H, T, D)`` by ``positions (B, T) * inv_freq``, float64.

    interleaved pairs (x[2i], x[2i+1]); half pairs (x[i], x[i + R/2]); features past R
    pass through; cos and sin both carry the attention factor (Hugging Face's way).
    """
    R = 2 * len(inv_freq)
    angles = np.asarray(positions, np.float64)[..., None] * inv_freq  # (B, T, R/2)
    c = (factor * np.cos(angles))[:, None]  # (B, 1, T, R/2)
    s = (factor * np.sin(angles))[:, None]
    if layout == "interleaved":
        a, b = np.arange(0, R, 2), np.arange(1, R, 2)
    else:
        a, b = np.arange(R // 2), np.arange(R // 2, R)
    out = np.array(x, dtype=np.float64)
    out[..., a] = x[..., a] * c - x[..., b] * s
    out[..., b] = x[..., a] * s + x[..., b] * c
    return out


def random_state_dict(rng, d_model, H, K, D, bias):
    """Torch-layout weights ``(out, in)`` and biases, scaled like a default init."""
    sd = {}
    for name, (out, inp) in {
        "q_proj": (H * D, d_model),
        "k_proj": (K * D, d_model),
        "v_proj": (K * D, d_model),
        "o_proj": (d_model, H * D),
    }.items():
        sd[f"{name}.weight"] = (rng.normal(size=(out, inp)) / np.sqrt(inp)).astype(np.float32)
        if bias:
            sd[f"{name}.bias"] = (0.1 * rng.normal(size=(out,))).astype(np.float32)
    return sd


def ref_forward(sd, x, H, K, D, *, causal, positions=None, rope=None):
    """Attention from a torch-layout state dict, in float64. rope: (inv_freq, layout, factor),
    or a RopeConfig for ropelab's float64 tables (positions too large for ``p * inv_freq``)."""
    x = np.asarray(x, np.float64)
    B, T, _ = x.shape

    def lin(name, a):
        y = a @ sd[f"{name}.weight"].astype(np.float64).T
        return y + sd[f"{name}.bias"] if f"{name}.bias" in sd else y

    q = lin("q_proj", x).reshape(B, T, H, D).transpose(0, 2, 1, 3)  # (B, H, T, D)
    k = lin("k_proj", x).reshape(B, T, K, D).transpose(0, 2, 1, 3)  # (B, K, T, D)
    v = lin("v_proj", x).reshape(B, T, K, D).transpose(0, 2, 1, 3)
    if rope is not None:
        pos = np.arange(T) if positions is None else np.asarray(positions)
        pos = np.broadcast_to(pos, (B, T))
        if isinstance(rope, ropelab.RopeConfig):  # ropelab's float64 tables (exact at any position)
            q, k = exact_rotate(q, pos, rope), exact_rotate(k, pos, rope)
        else:
            inv_freq, layout, factor = rope
            q = ref_rotate(q, pos, inv_freq, layout, factor)
            k = ref_rotate(k, pos, inv_freq, layout, factor)
    out = ref_attention(q, k, v, causal=causal)  # (B, H, T, D)
    return lin("o_proj", out.transpose(0, 2, 1, 3).reshape(B, T, H * D))


def assert_close(got, ref, tol=1e-5):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape
    err = np.max(np.abs(got - ref))
    assert err <= tol * max(1.0, np.max(np.abs(ref))), f"max error {err:.3g}"


def default_inv_freq(theta, R):
    return theta ** (-2.0 * np.arange(R // 2) / R)


# one compiled program per shape: much faster in tests than eager op-by-op dispatch
call = nnx.jit(lambda module, x: module(x))
call_at = nnx.jit(lambda module, x, positions: module(x, positions))


def run(module, x, positions=None):
    return call(module, x) if positions is None else call_at(module, x, jnp.asarray(positions))


# --- Attention vs the float64 reference -----------------------------------------------------

CASES = {
    # name: (d_model, H, K, D or None, rope kwargs or None, causal, bias, positions kind)
    "mha-interleaved-causal": (32, 4, None, None, dict(theta=10000.0), True, False, None),
    "gqa-half-bias": (32, 4, 2, None, dict(layout="half"), True, True, "offset"),
    "mqa-nope": (32, 4, 1, None, None, True, False, None),
    "bidirectional-partial": (24, 3, None, None, dict(rotary_dim=4), False, True, "batch"),
    "explicit-head-dim": (32, 4, 2, 12, dict(theta=500.0, layout="half"), True, False, "batch"),
}


def _positions(kind, rng, B, T):
    if kind is None:
        return None
    if kind == "offset":
        return np.arange(T) + 37
    return np.sort(rng.integers(0, 5000, size=(B, T)), axis=1)


@pytest.mark.parametrize("name", list(CASES))
def test_attention_matches_reference(name):
    d_model, H, K, D, rope_kw, causal, bias, pos_kind = CASES[name]
    rng = np.random.default_rng(list(CASES).index(name))
    K = H if K is None else K
    Dh = d_model // H if D is None else D
    rope = None if rope_kw is None else ropelab.RopeConfig(Dh, **rope_kw)
    module = Attention(
        d_model, H, num_kv_heads=K, head_dim=D, rope=rope, causal=causal, bias=bias, rngs=nnx.Rngs(0)
    )
    sd = random_state_dict(rng, d_model, H, K, Dh, bias)
    load_torch_state_dict(module, sd)
    B, T = 2, 7
    x = rng.normal(size=(B, T, d_model)).astype(np.float32)
    positions = _positions(pos_kind, rng, B, T)
    rope_ref = None
    if rope is not None:
        rope_ref = (default_inv_freq(rope.theta, rope.rotary_dim), rope.layout, 1.0)
    got = run(module, x, positions)
    assert_close(got, ref_forward(sd, x, H, K, Dh, causal=causal, positions=positions, rope=rope_ref))


def test_attention_yarn_tables_carry_attention_factor():
    rng = np.random.default_rng(1)
    yarn = scaling.YaRN(4.0, 64)
    rope = ropelab.RopeConfig(16, scaling=yarn, layout="half")
    assert rope.attention_factor > 1.0  # otherwise the test would not see the factor
    module = Attention(32, 2, rope=rope, rngs=nnx.Rngs(0))
    sd = random_state_dict(rng, 32, 2, 2, 16, False)
    load_torch_state_dict(module, sd)
    x = rng.normal(size=(1, 9, 32)).astype(np.float32)
    positions = np.arange(9) * 30
    ref = ref_forward(sd, x, 2, 2, 16, causal=True, positions=positions,
                      rope=(rope.inv_freq(), "half", rope.attention_factor))
    assert_close(run(module, x, positions), ref)


def test_attention_unbatched_input_equals_batch_of_one():
    module = Attention(16, 2, rope=ropelab.RopeConfig(8), rngs=nnx.Rngs(3))
    x = np.random.default_rng(2).normal(size=(5, 16)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(module(x)), np.asarray(module(x[None]))[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shift", [1, 1000, 100_000])
def test_attention_relative_positions(shift):
    """RoPE scores depend on i - j only: shifting every position leaves the output unchanged."""
    module = Attention(32, 4, num_kv_heads=2, rope=ropelab.RopeConfig(8, layout="half"), rngs=nnx.Rngs(4))
    x = np.random.default_rng(3).normal(size=(2, 6, 32)).astype(np.float32)
    base = np.asarray(module(x, jnp.arange(6)))
    shifted = np.asarray(module(x, jnp.arange(6) + shift))
    assert_close(shifted, base, tol=2e-5)
    # uneven gaps do change it (the test can fail)
    gaps = np.asarray(module(x, jnp.asarray([0, 1, 5, 6, 20, 21])))
    assert np.max(np.abs(gaps - base)) > 1e-3


def test_nope_attention_ignores_positions():
    module = Attention(16, 2, rope=None, rngs=nnx.Rngs(5))
    x = np.random.default_rng(4).normal(size=(1, 4, 16)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(module(x)), np.asarray(module(x, jnp.asarray([3, 9, 10, 50]))))


# --- jit -------------------------------------------------------------------------------------


def test_jit_matches_eager_with_and_without_traced_positions():
    module = Attention(32, 4, num_kv_heads=2, rope=ropelab.RopeConfig(8), rngs=nnx.Rngs(6))
    x = np.random.default_rng(5).normal(size=(2, 5, 32)).astype(np.float32)
    positions = np.array([[0, 1, 2, 3, 4], [100, 101, 102, 300, 511]])
    eager = np.asarray(module(x, positions))
    traced = np.asarray(nnx.jit(lambda m, a, p: m(a, p))(module, x, jnp.asarray(positions)))
    np.testing.assert_allclose(traced, eager, rtol=1e-5, atol=1e-6)
    default = np.asarray(nnx.jit(lambda m, a: m(a))(module, x))
    np.testing.assert_allclose(default, np.asarray(module(x)), rtol=1e-5, atol=1e-6)


# negative, past any table, and the int32 ends: under jit each must get its own angle
FAR_POSITIONS = np.array(
    [[-5, -1, 0, 2**31 - 1, 10**9, 8192], [-(2**31), 2**31 - 2, 123_456_789, -1_000_000, 7, 2**20]]
)


def exact_rotate(x, positions, config):
    """Rotate x ``(B, H, T, D)`` with float64 NumPy tables at ``positions (B, T)``."""
    tables = ropelab.rope_tables(config, np.asarray(positions))  # (B, T, R/2) float64
    cos, sin = tables.cos[:, None], tables.sin[:, None]  # (B, 1, T, R/2)
    return ropelab.apply_rope(x, cos, sin, layout=config.layout, rotary_dim=config.rotary_dim)


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_traced_rows_at_negative_and_huge_positions_match_rope_tables(layout):
    """The rows computed in the trace equal the float64 NumPy tables to float32 accuracy."""
    from ropelab.nnx.attention import rope_for

    config = ropelab.RopeConfig(16, theta=500000.0, layout=layout)
    B, T = FAR_POSITIONS.shape
    traced = jax.jit(lambda p: rope_for(config, p, B, T))(jnp.asarray(FAR_POSITIONS, jnp.int32))
    ref = ropelab.rope_tables(config, FAR_POSITIONS)
    for got, want in zip(traced, ref, strict=True):
        assert got.shape == (B, T, 1, 8) and got.dtype == jnp.float32
        assert np.max(np.abs(np.asarray(got, np.float64)[:, :, 0] - want)) <= 3e-7


def test_jit_attention_at_negative_and_huge_positions_equals_eager_and_reference():
    rng = np.random.default_rng(12)
    config = ropelab.RopeConfig(16, theta=500000.0, layout="half")
    module = Attention(32, 2, rope=config, rngs=nnx.Rngs(0))
    sd = random_state_dict(rng, 32, 2, 2, 16, False)
    load_torch_state_dict(module, sd)
    B, T = FAR_POSITIONS.shape
    x = rng.normal(size=(B, T, 32)).astype(np.float32)
    eager = np.asarray(module(x, FAR_POSITIONS))  # concrete: float64 host tables
    traced = np.asarray(call_at(module, x, jnp.asarray(FAR_POSITIONS, jnp.int32)))
    ref = ref_forward(sd, x, 2, 2, 16, causal=True, positions=FAR_POSITIONS, rope=config)
    assert np.all(np.isfinite(traced))
    assert_close(traced, eager)
    assert_close(traced, ref)
    # the test can fail: the angle of 2**31 - 1 mistaken for another's changes the output
    moved = FAR_POSITIONS.copy()
    moved[0, 3] = 2**31 - 3
    assert np.max(np.abs(np.asarray(call_at(module, x, jnp.asarray(moved, jnp.int32))) - traced)) > 1e-3


def test_dynamic_scheme_under_jit_with_default_positions():
    rope = ropelab.RopeConfig(8, scaling=scaling.DynamicNTK(2.0, 4))
    module = Attention(16, 2, rope=rope, rngs=nnx.Rngs(8))
    rng = np.random.default_rng(6)
    sd = random_state_dict(rng, 16, 2, 2, 8, False)
    load_torch_state_dict(module, sd)
    x = rng.normal(size=(1, 9, 16)).astype(np.float32)
    got = nnx.jit(lambda m, a: m(a))(module, x)
    ref = ref_forward(sd, x, 2, 2, 8, causal=True, rope=(rope.inv_freq(seq_len=9), "interleaved", 1.0))
    assert_close(got, ref)


# --- RopeMHA (seed 002) ----------------------------------------------------------------------


def test_ropemha_weights_follow_creation_order():
    model = RopeMHA(16, 2, rngs=nnx.Rngs(11))
    rngs = nnx.Rngs(11)
    expected = [nnx.Linear(16, 16, rngs=rngs) for _ in range(4)]
    for name, lin in zip(("q_proj", "k_proj", "v_proj", "out_proj"), expected, strict=True):
        np.testing.assert_array_equal(np.asarray(getattr(model, name).kernel[...]), np.asarray(lin.kernel[...]))
    assert isinstance(model.base, float)
    assert set(nnx.state(model, nnx.Param).keys()) == {"q_proj", "k_proj", "v_proj", "out_proj"}


def test_ropemha_matches_float64_reference():
    rng = np.random.default_rng(9)
    model = RopeMHA(24, 3, base=500.0, rngs=nnx.Rngs(0))
    sd = random_state_dict(rng, 24, 3, 3, 8, True)
    sd = {k.replace("o_proj", "out_proj"): v for k, v in sd.items()}
    load_torch_state_dict(model, sd)
    x = rng.normal(size=(2, 6, 24)).astype(np.float32)
    ref_sd = {k.replace("out_proj", "o_proj"): v for k, v in sd.items()}
    ref = ref_forward(ref_sd, x, 3, 3, 8, causal=False, rope=(default_inv_freq(500.0, 8), "interleaved", 1.0))
    assert_close(call(model, x), ref)
    assert_close(model(x[1]), ref[1])  # eager, unbatched


def test_ropemha_scores_are_relative():
    """scores[i, j] for tokens placed after a prefix of s tokens equal scores[i - s, j - s]."""
    model = RopeMHA(16, 2, rngs=nnx.Rngs(12))
    rng = np.random.default_rng(10)
    x = rng.normal(size=(5, 16)).astype(np.float32)
    prefix = rng.normal(size=(7, 16)).astype(np.float32)
    plain = np.asarray(model.scores(x))  # (H, T, T)
    shifted = np.asarray(model.scores(np.concatenate([prefix, x])))[:, 7:, 7:]
    assert_close(shifted, plain, tol=1e-5)
    # the absolute position does matter for content-dependent scores of different tokens
    swapped = np.asarray(model.scores(x[::-1].copy()))[:, ::-1, ::-1]
    assert np.max(np.abs(swapped - plain)) > 1e-3


# --- torch parity ----------------------------------------------------------------------------


def _torch_attention():
    pytest.importorskip("torch")
    import ropelab.torch as rt

    if not hasattr(rt, "Attention"):
        pytest.skip("ropelab.torch.Attention does not exist yet (written by the torch front end)")
    return rt.Attention


TORCH_CASES = {
    "gqa-half-causal": dict(d_model=32, num_heads=4, num_kv_heads=2, rope=dict(layout="half"), causal=True, bias=False),
    "mha-interleaved-bidirectional-bias": dict(d_model=24, num_heads=3, rope=dict(theta=500.0), causal=False, bias=True),
    "mqa-nope": dict(d_model=32, num_heads=4, num_kv_heads=1, rope=None, causal=True, bias=False),
    "partial-rotary-llama3": dict(
        d_model=32, num_heads=2, rope=dict(rotary_dim=8, scaling=scaling.Llama3(8.0, 1.0, 4.0, 64)),
        causal=True, bias=True,
    ),
}


@pytest.mark.parametrize("name", list(TORCH_CASES))
@pytest.mark.parametrize("with_positions", [False, True])
def test_nnx_matches_torch_attention(name, with_positions):
    import torch

    TorchAttention = _torch_attention()
    kw = dict(TORCH_CASES[name])
    head_dim = kw["d_model"] // kw["num_heads"]
    rope_kw = kw.pop("rope")
    rope = None if rope_kw is None else ropelab.RopeConfig(head_dim, **rope_kw)
    torch.manual_seed(0)
    t_mod = TorchAttention(rope=rope, **kw).eval()
    with torch.no_grad():  # non-zero biases, so that loading them is tested
        for p in t_mod.parameters():
            if p.dim() == 1:
                p.normal_(0.0, 0.1)
    n_mod = Attention.from_torch_state_dict(
        t_mod.state_dict(), num_heads=kw["num_heads"], num_kv_heads=kw.get("num_kv_heads"),
        rope=rope, causal=kw["causal"],
    )
    rng = np.random.default_rng(0)
    B, T = 2, 6
    x = rng.normal(size=(B, T, kw["d_model"])).astype(np.float32)
    positions = np.sort(rng.integers(0, 3000, size=(B, T)), axis=1) if with_positions else None
    with torch.no_grad():
        want = t_mod(torch.from_numpy(x), None if positions is None else torch.from_numpy(positions)).numpy()
    got = np.asarray(run(n_mod, x, positions))
    assert np.max(np.abs(got - want)) <= 1e-5 * max(1.0, np.max(np.abs(want)))


# --- errors ----------------------------------------------------------------------------------


def _sd(bias=False):
    return random_state_dict(np.random.default_rng(0), 16, 2, 2, 8, bias)


def test_error_attention_d_model_not_divisible():
    with pytest.raises(ValueError, match="d_model=30 is not divisible by num_heads=4"):
        Attention(30, 4, rngs=nnx.Rngs(0))


def test_error_attention_kv_heads_do_not_divide():
    with pytest.raises(ValueError, match="num_heads=4 is not divisible by num_kv_heads=3"):
        Attention(32, 4, num_kv_heads=3, rngs=nnx.Rngs(0))


def test_error_attention_num_heads():
    with pytest.raises(ValueError, match="num_heads must be an integer >= 1, got 0"):
        Attention(32, 0, rngs=nnx.Rngs(0))


def test_error_attention_rope_type():
    with pytest.raises(TypeError, match="rope must be a ropelab.RopeConfig or None"):
        Attention(32, 4, rope="rope", rngs=nnx.Rngs(0))


def test_error_attention_rope_head_dim():
    with pytest.raises(ValueError, match="rope.head_dim=16 does not match the attention head_dim=8"):
        Attention(32, 4, rope=ropelab.RopeConfig(16), rngs=nnx.Rngs(0))


def test_error_attention_causal_not_bool():
    with pytest.raises(TypeError, match="causal must be True or False"):
        Attention(32, 4, causal=1, rngs=nnx.Rngs(0))


def test_error_attention_x_shape():
    module = Attention(16, 2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"x must be shaped \(B, T, d_model=16\)"):
        module(np.zeros((1, 3, 8), np.float32))


@pytest.mark.parametrize("rope", [ropelab.RopeConfig(8), None])
def test_error_attention_positions_shape(rope):
    module = Attention(16, 2, rope=rope, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"positions must be shaped \(T,\) = \(3,\) or \(B, T\) = \(2, 3\), got \(4,\)"):
        module(np.zeros((2, 3, 16), np.float32), jnp.arange(4))


LENGTH_SCHEMES = {
    "dynamic-ntk": scaling.DynamicNTK(2.0, 4),
    "longrope": scaling.LongRoPE([1.0, 1.5, 2.0, 3.0], [2.0, 3.0, 5.0, 9.0], 5),
}


@pytest.mark.parametrize("name", list(LENGTH_SCHEMES))
def test_length_dependent_scheme_under_jit_with_a_mask_matches_eager(name):
    """Positions from a traced attention_mask: the length is max(positions) + 1 as
    eagerly (5 when every row is padded, 6 with one full row), not the mask's width."""
    rope = ropelab.RopeConfig(8, scaling=LENGTH_SCHEMES[name])
    module = Attention(16, 2, rope=rope, rngs=nnx.Rngs(8))
    x = np.random.default_rng(7).normal(size=(2, 6, 16)).astype(np.float32)
    padded = np.array([[0, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]])  # longest row: 5 tokens
    one_full = np.array([[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])  # 6 tokens
    call = nnx.jit(lambda m, a, mask: m(a, attention_mask=mask))
    eager = {}
    for label, mask in (("padded", padded), ("one_full", one_full)):
        eager[label] = np.asarray(module(x, attention_mask=mask))
        assert_close(call(module, x, mask), eager[label])
    # the test can fail: row 0 is the same in both masks, only the length differs
    assert np.max(np.abs(eager["padded"][0, 1:] - eager["one_full"][0, 1:])) > 1e-3


def test_longrope_under_jit_decoding_from_a_cache_matches_eager():
    """A LongRoPE cache decoded under jit without mask or positions: each step picks the
    short or long factors by its traced length, as eagerly."""
    rope = ropelab.RopeConfig(8, scaling=LENGTH_SCHEMES["longrope"])
    module = Attention(16, 2, rope=rope, rngs=nnx.Rngs(8))
    x = np.random.default_rng(8).normal(size=(1, 7, 16)).astype(np.float32)
    step = nnx.jit(lambda m, a, c: m(a, cache=c))
    eager = jitted = KVCache.create(1, 2, 8, 8)
    for i in range(7):  # lengths 1..7 cross the original 5
        want, eager = module(x[:, i:i + 1], cache=eager)
        got, jitted = step(module, x[:, i:i + 1], jitted)
        assert_close(got, want)


def test_error_dynamic_ntk_under_jit_with_a_mask_too_long_to_trace():
    """Dynamic NTK past its original length has a frequency set per length: a traced mask
    wider than a few lengths past it is refused, saying what the user can do instead."""
    rope = ropelab.RopeConfig(8, scaling=scaling.DynamicNTK(2.0, 4))
    module = Attention(16, 2, rope=rope, rngs=nnx.Rngs(0))
    call = nnx.jit(lambda m, a, mask: m(a, attention_mask=mask))
    with pytest.raises(ValueError, match=r"derived from the traced attention_mask.*call the module outside "
                       r"jax\.jit, or pass positions that are not traced") as err:
        call(module, np.zeros((1, 12, 16), np.float32), np.ones((1, 12)))
    assert "positions=None" not in str(err.value)


def test_error_attention_unbatched_with_batched_positions():
    module = Attention(16, 2, rope=ropelab.RopeConfig(8), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"unbatched x needs positions shaped \(T,\)"):
        module(np.zeros((3, 16), np.float32), jnp.zeros((1, 3), jnp.int32))


def test_error_dynamic_scheme_with_traced_positions():
    rope = ropelab.RopeConfig(8, scaling=scaling.DynamicNTK(2.0, 4))
    module = Attention(16, 2, rope=rope, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="picks its frequencies by the sequence length.*traced arguments"):
        nnx.jit(lambda m, a, p: m(a, p))(module, np.zeros((1, 3, 16), np.float32), jnp.arange(3))


def test_error_traced_float_positions():
    module = Attention(16, 2, rope=ropelab.RopeConfig(8), rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="positions must be integers, got dtype float32"):
        nnx.jit(lambda m, a, p: m(a, p))(module, np.zeros((1, 3, 16), np.float32), jnp.arange(3.0))


def test_error_from_torch_state_dict_heads():
    with pytest.raises(ValueError, match="q_proj.weight has 16 rows, not a multiple of num_heads=3"):
        Attention.from_torch_state_dict(_sd(), num_heads=3)


def test_error_from_torch_state_dict_keys():
    with pytest.raises(ValueError, match="must hold q_proj.weight and o_proj.weight"):
        Attention.from_torch_state_dict({"q_proj.weight": np.zeros((4, 4))}, num_heads=1)


def test_error_ropemha_odd_head_dim():
    with pytest.raises(ValueError, match="even head dim, got d_model // num_heads = 12 // 4 = 3"):
        RopeMHA(12, 4, rngs=nnx.Rngs(0))


def test_error_ropemha_not_divisible():
    with pytest.raises(ValueError, match="d_model=10 is not divisible by num_heads=4"):
        RopeMHA(10, 4, rngs=nnx.Rngs(0))


def test_error_ropemha_base():
    with pytest.raises(ValueError, match="theta must be a finite number > 1, got 1.0"):
        RopeMHA(8, 2, base=1.0, rngs=nnx.Rngs(0))


def test_error_ropemha_x_shape():
    with pytest.raises(ValueError, match=r"x must be shaped \(T, d_model=8\)"):
        RopeMHA(8, 2, rngs=nnx.Rngs(0))(np.zeros((3, 4), np.float32))


def test_nnx_is_not_imported_by_ropelab():
    import subprocess
    import sys

    code = "import sys, ropelab; print('flax' in sys.modules or 'jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
