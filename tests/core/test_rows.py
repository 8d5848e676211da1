"""rope_tables' rows against 120-bit mpmath: NumPy (float64) and the float32 rows of
:mod:`ropelab.rows` for torch (eager and ``torch.compile``) and jax (eager and ``jax.jit``).

The truth is ``cos(p * f)``, ``sin(p * f)`` with ``f`` the float64 ``inv_freq`` the scheme
defines, converted exactly, times the scheme's attention factor. Claimed: 1e-15 in NumPy,
3e-7 for torch and jax, at every integer ``|p| < 2**31`` (negative positions are negative
angles), under compile and jit too.

Shapes: P positions, R/2 frequency pairs.
"""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # before jax is first imported

import numpy as np  # noqa: E402
import pytest  # noqa: E402

hypothesis = pytest.importorskip("hypothesis")
mpmath = pytest.importorskip("mpmath")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import ropelab  # noqa: E402
from ropelab import scaling  # noqa: E402

FLOAT32_BOUND = 3e-7
NUMPY_BOUND = 1e-15
INT32 = (-(2**31), 2**31 - 1)
EXTREMES = np.array([INT32[0], INT32[0] + 1, -1_000_003, -1, 0, 1, 10**6, 10**9, INT32[1] - 1, INT32[1]])

LLAMA = ropelab.RopeConfig(32, theta=500000.0, layout="half")
SMALL_BASE = ropelab.RopeConfig(16, theta=10000.0)
YARN = ropelab.RopeConfig(16, scaling=scaling.YaRN(4.0, 64))
# length-dependent: the frequencies follow seq_len
DYNAMIC = {
    "dynamic-ntk": ropelab.RopeConfig(16, scaling=scaling.DynamicNTK(2.0, 64)),
    "longrope": ropelab.RopeConfig(
        8, scaling=scaling.LongRoPE([1.0, 1.5, 2.0, 3.0], [2.0, 3.0, 5.0, 9.0], 64, factor=8.0)
    ),
}

positions_st = st.lists(st.integers(*INT32), min_size=1, max_size=6)
few = settings(max_examples=15)


def truth(config, positions, seq_len=None):
    """(cos, sin) ``(P, R/2)`` float64 of the 120-bit products ``p * f``, times the factor."""
    inv_freq = config.inv_freq(seq_len)
    factor = mpmath.mpf(config.attention_factor)
    cos = np.empty((len(positions), inv_freq.size))
    sin = np.empty_like(cos)
    with mpmath.workprec(120):
        freqs = [mpmath.mpf(float(f)) for f in inv_freq]  # exact: 53 bits
        for i, p in enumerate(positions):
            for j, f in enumerate(freqs):
                angle = mpmath.mpf(int(p)) * f  # exact: 53 + 32 bits
                cos[i, j] = float(factor * mpmath.cos(angle))
                sin[i, j] = float(factor * mpmath.sin(angle))
    return cos, sin


def worst(rows, positions, config, seq_len=None):
    """The largest absolute error of rows ``(cos, sin)`` (any array kind) against :func:`truth`."""
    want = truth(config, positions, seq_len)
    return max(
        float(np.max(np.abs(np.asarray(got, dtype=np.float64).reshape(w.shape) - w)))
        for got, w in zip(rows, want, strict=True)
    )


def bound(config, base):
    return base * max(1.0, config.attention_factor)


# --- NumPy ------------------------------------------------------------------------------


@few
@given(positions_st)
def test_numpy_rows(positions):
    for config in (LLAMA, YARN):
        assert worst(ropelab.rope_tables(config, np.array(positions)), positions, config) <= bound(config, NUMPY_BOUND)


def test_numpy_rows_at_the_extremes():
    assert worst(ropelab.rope_tables(LLAMA, EXTREMES), EXTREMES, LLAMA) <= NUMPY_BOUND


def test_the_truth_can_tell_a_float32_angle_apart():
    """The usual float32 recipe fails the bound the rows are held to (the check can fail)."""
    p = np.array([10**6, 10**9, INT32[1]])
    angles = p.astype(np.float32)[:, None] * LLAMA.inv_freq().astype(np.float32)
    assert worst((np.cos(angles), np.sin(angles)), p, LLAMA) > 1e-3


# --- torch ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@pytest.fixture(scope="module")
def compiled(torch):
    """One function compiled before any eager call, rows of two configs in one graph, and
    the graphs its backend was handed (inductor does the compiling)."""
    from torch._inductor.compile_fx import compile_fx

    # configs of their own, built here, so that nothing was computed for them eagerly
    first = ropelab.RopeConfig(24, theta=500000.0, layout="half")
    second = ropelab.RopeConfig(12, scaling=scaling.YaRN(8.0, 32))
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return compile_fx(gm, example_inputs)

    @torch.compile(backend=backend, fullgraph=True, dynamic=True)
    def rows(positions):
        return tuple(ropelab.rope_tables(first, positions)) + tuple(ropelab.rope_tables(second, positions))

    torch._dynamo.reset()
    start = torch.tensor([0, 3, -7], dtype=torch.int64)
    out = rows(start)  # the first call anywhere for these configs: compiles
    assert len(graphs) == 1
    return rows, graphs, (first, second), (start, out)


@few
@given(positions_st)
def test_torch_eager_rows(torch, positions):
    for config in (LLAMA, YARN):
        rows = ropelab.rope_tables(config, torch.tensor(positions, dtype=torch.int64))
        assert rows.cos.dtype == torch.float32
        assert worst(rows, positions, config) <= bound(config, FLOAT32_BOUND)


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_torch_eager_rows_at_the_int32_extremes(torch, dtype):
    rows = ropelab.rope_tables(LLAMA, torch.tensor(EXTREMES, dtype=getattr(torch, dtype)))
    assert worst(rows, EXTREMES, LLAMA) <= FLOAT32_BOUND


def test_torch_negative_positions_are_negative_angles(torch):
    p = torch.tensor([5, 10**9, INT32[1]])
    cos, sin = ropelab.rope_tables(SMALL_BASE, p)
    neg_cos, neg_sin = ropelab.rope_tables(SMALL_BASE, -p)
    assert torch.equal(neg_cos, cos) and torch.equal(neg_sin, -sin)


def test_torch_limbs_are_copied_to_a_device_once(torch):
    """The kept limbs go to a device once and are reused (a copy per call would stall a
    GPU's queue every step); another config's limbs are another tensor; the cache is
    bounded."""
    from ropelab import rows

    limbs = rows.limbs_for(LLAMA)
    first = rows.torch_limbs(limbs, torch.device("cpu"))
    assert rows.torch_limbs(limbs, "cpu") is first
    assert first.dtype == torch.float32 and np.array_equal(first.numpy(), limbs)
    other = rows.torch_limbs(rows.limbs_for(SMALL_BASE), "cpu")
    assert other is not first and other.shape == (rows.LIMBS, SMALL_BASE.rotary_dim // 2)
    kept = [rows.turn_limbs(np.full(4, 0.1 * (i + 1))) for i in range(rows._ON_DEVICE_KEPT + 5)]
    for k in kept:
        rows.torch_limbs(k, "cpu")
    assert len(rows._ON_DEVICE) <= rows._ON_DEVICE_KEPT


@few
@given(st.lists(st.integers(*INT32), min_size=2, max_size=6))  # torch specializes length 1
def test_torch_compiled_rows_without_recompiling(compiled, torch, positions):
    rows, graphs, configs, _ = compiled
    out = rows(torch.tensor(positions, dtype=torch.int64))
    assert len(graphs) == 1, "a new position value or length compiled the function again"
    for config, pair in zip(configs, (out[:2], out[2:]), strict=True):
        assert worst(pair, positions, config) <= bound(config, FLOAT32_BOUND)


def test_torch_compiled_rows_at_the_extremes_equal_eager(compiled, torch):
    rows, graphs, configs, (start, first_out) = compiled
    out = rows(torch.tensor(EXTREMES, dtype=torch.int64))
    assert len(graphs) == 1
    for config, pair in zip(configs, (out[:2], out[2:]), strict=True):
        assert worst(pair, EXTREMES, config) <= bound(config, FLOAT32_BOUND)
    # the compiled-first call agrees with the eager rows made after it
    eager = tuple(ropelab.rope_tables(configs[0], start)) + tuple(ropelab.rope_tables(configs[1], start))
    for got, want in zip(first_out, eager, strict=True):
        assert float((got - want).abs().max()) <= 2 * FLOAT32_BOUND


# --- jax --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jnp():
    pytest.importorskip("jax")
    import jax.numpy

    return jax.numpy


@pytest.fixture(scope="module")
def jitted(jnp):
    import jax

    return jax.jit(lambda p: tuple(ropelab.rope_tables(LLAMA, p)) + tuple(ropelab.rope_tables(YARN, p)))


@few
@given(st.lists(st.integers(*INT32), min_size=6, max_size=6))  # one shape: one compile
def test_jax_eager_and_jit_rows(jnp, jitted, positions):
    p = jnp.asarray(positions, dtype=jnp.int32)
    out = jitted(p)
    for config, pair in zip((LLAMA, YARN), (out[:2], out[2:]), strict=True):
        eager = ropelab.rope_tables(config, p)
        assert eager.cos.dtype == jnp.float32
        assert worst(eager, positions, config) <= bound(config, FLOAT32_BOUND)
        assert worst(pair, positions, config) <= bound(config, FLOAT32_BOUND)


def test_jax_rows_at_the_int32_extremes(jnp, jitted):
    p = jnp.asarray(EXTREMES, dtype=jnp.int32)
    assert worst(ropelab.rope_tables(LLAMA, p), EXTREMES, LLAMA) <= FLOAT32_BOUND
    out = jitted(p)
    assert worst(out[:2], EXTREMES, LLAMA) <= FLOAT32_BOUND
    assert worst(out[2:], EXTREMES, YARN) <= bound(YARN, FLOAT32_BOUND)


@pytest.mark.parametrize(
    ("dtype", "values"),
    [("int8", [-128, -127, -1, 0, 127]), ("int16", [-32768, -32767, -128, 0, 32767])],
)
def test_jax_rows_of_narrow_integers_at_their_extremes(jnp, dtype, values):
    """int8 and int16 positions, their most negative value included (whose absolute value
    does not fit their own dtype), equal NumPy's float64 rows, eager and under jit."""
    import jax

    p = jnp.asarray(values, dtype=dtype)
    ref = ropelab.rope_tables(LLAMA, np.asarray(values))
    jitted = jax.jit(lambda q: tuple(ropelab.rope_tables(LLAMA, q)))
    for rows in (ropelab.rope_tables(LLAMA, p), jitted(p)):
        for got, want in zip(rows, ref, strict=True):
            assert np.max(np.abs(np.asarray(got, np.float64) - want)) <= FLOAT32_BOUND


def test_jax_traced_seq_len_is_refused_with_advice(jnp):
    """A seq_len traced by jit cannot pick host-made frequencies: a TypeError says to
    make it static, and a static one gives the eager rows."""
    import jax

    config = DYNAMIC["dynamic-ntk"]
    p = jnp.arange(3, dtype=jnp.int32)

    def rows(q, seq_len):
        return tuple(ropelab.rope_tables(config, q, seq_len=seq_len))

    with pytest.raises(TypeError, match="seq_len must be a static Python int.*static_argnames"):
        jax.jit(rows)(p, 300)
    got = jax.jit(rows, static_argnames="seq_len")(p, seq_len=300)
    want = ropelab.rope_tables(config, p, seq_len=300)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_jax_negative_positions_are_negative_angles(jnp):
    p = jnp.asarray([5, 10**9, INT32[1]], dtype=jnp.int32)
    cos, sin = ropelab.rope_tables(SMALL_BASE, p)
    neg_cos, neg_sin = ropelab.rope_tables(SMALL_BASE, -p)
    np.testing.assert_array_equal(np.asarray(neg_cos), np.asarray(cos))
    np.testing.assert_array_equal(np.asarray(neg_sin), -np.asarray(sin))


# --- length-dependent schemes -----------------------------------------------------------


@pytest.mark.parametrize("kind", ["torch", "jax"])
@pytest.mark.parametrize("name", list(DYNAMIC))
@pytest.mark.parametrize("seq_len", [None, 40, 64, 65, 300, 10**6, 2**31])
def test_length_dependent_rows_follow_seq_len_like_numpy(name, seq_len, kind, request):
    """seq_len given (or, for concrete CPU positions, max + 1): the torch and jax rows are
    those of NumPy's frequencies for the same length, within float32's bound, for every
    position the length covers (and negative ones)."""
    config = DYNAMIC[name]
    if seq_len:
        positions = np.array([p for p in (0, 1, 5, 39, 63, 64, 299, 12345, INT32[1]) if p < seq_len] + [-7])
    else:
        positions = np.array([0, 3, 99])
    length = seq_len if seq_len is not None else int(positions.max()) + 1
    ref = ropelab.rope_tables(config, positions, seq_len=seq_len)
    assert worst(ref, positions, config, length) <= bound(config, NUMPY_BOUND)
    if kind == "torch":
        device_positions = request.getfixturevalue("torch").tensor(positions)
    else:
        jnp = request.getfixturevalue("jnp")
        device_positions = jnp.asarray(positions, dtype=jnp.int32)
    rows = ropelab.rope_tables(config, device_positions, seq_len=seq_len)
    assert worst(rows, positions, config, length) <= bound(config, FLOAT32_BOUND)
    for got, want in zip(rows, ref, strict=True):
        assert np.max(np.abs(np.asarray(got, np.float64) - want)) <= bound(config, FLOAT32_BOUND)


def test_length_regimes_over_a_bound():
    """The regimes traced positions may fall in: one below the original length, one per
    length past it for dynamic NTK (too many without a bound), two for LongRoPE."""
    from ropelab.rows import length_regimes

    dynamic, longrope = DYNAMIC["dynamic-ntk"], DYNAMIC["longrope"]
    assert length_regimes(dynamic, 64) == [1]
    assert length_regimes(dynamic, 66) == [1, 65, 66]
    assert length_regimes(dynamic, 1000) is None and length_regimes(dynamic) is None
    assert length_regimes(longrope, 10) == [1] and length_regimes(longrope) == [1, 65]


def test_length_dependent_rows_differ_across_regimes():
    """The seq_len checks above can fail: the regimes' frequencies really differ."""
    for config in DYNAMIC.values():
        assert not np.allclose(config.inv_freq(64), config.inv_freq(10**6))
