"""ropelab.nnx.Attention's Llama 4 options, padding and KV cache, held to ropelab.torch.Attention.

Chunked attention, sliding window, qk norm, temperature tuning, GQA and left padding
against the torch module with the same weights; cached decoding against the full forward
(eager and under jit); one test per error message.

Shapes: B batch, T time, S keys, C cache capacity, H heads, K kv heads, D head dim.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # before jax is first imported

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("flax")
torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

import ropelab  # noqa: E402
import ropelab.torch as rt  # noqa: E402
from ropelab.attention_spec import AttentionSpec  # noqa: E402
from ropelab.nnx import Attention, KVCache, load_torch_state_dict, positions_from_mask  # noqa: E402

D_MODEL, HEADS, HEAD_DIM = 32, 4, 8
B, T = 3, 9
PADS = (0, 2, 5)  # left padding per row

CASES = {
    # name: torch/nnx Attention options besides d_model and num_heads; rope as RopeConfig kwargs
    "chunk-rope-gqa": dict(num_kv_heads=2, rope=dict(layout="half"), chunk_size=4),
    "window-causal": dict(rope=dict(), window=3),
    "window-bidirectional": dict(rope=dict(), window=3, causal=False),
    "chunk-window-bidirectional": dict(rope=dict(theta=500.0), chunk_size=5, window=2, causal=False),
    "qk-norm-bias": dict(rope=dict(theta=500.0), qk_norm=True, bias=True),
    "temperature-nope": dict(rope=None, temperature_tuning=(0.5, 2.0)),
    "llama4-rope-layer": dict(num_kv_heads=2, rope=dict(), chunk_size=4, qk_norm=True, qk_norm_eps=1e-5),
    "llama4-nope-layer-mqa": dict(num_kv_heads=1, rope=None, temperature_tuning=(0.3, 3.0), bias=True),
}
# the options that make each case what it is; without them the output must change
FEATURES = ("chunk_size", "window", "qk_norm", "qk_norm_eps", "temperature_tuning")


def padding_mask(pads=PADS, length=T):
    mask = np.ones((len(pads), length), np.int64)
    for row, pad in enumerate(pads):
        mask[row, :pad] = 0
    return mask


def torch_module(name, *, features=True):
    kw = dict(CASES[name])
    rope_kw = kw.pop("rope")
    if not features:
        kw = {k: v for k, v in kw.items() if k not in FEATURES}
    rope = None if rope_kw is None else ropelab.RopeConfig(HEAD_DIM, **rope_kw)
    torch.manual_seed(list(CASES).index(name))
    module = rt.Attention(D_MODEL, HEADS, rope=rope, **kw).eval()
    with torch.no_grad():  # non-zero biases, so that loading them is tested
        for p in module.parameters():
            if p.dim() == 1:
                p.normal_(0.0, 0.1)
    return module


def nnx_module(name):
    kw = dict(CASES[name])
    rope_kw = kw.pop("rope")
    kw.pop("bias", None)  # read from the weights
    rope = None if rope_kw is None else ropelab.RopeConfig(HEAD_DIM, **rope_kw)
    return Attention.from_torch_state_dict(torch_module(name).state_dict(), num_heads=HEADS, rope=rope, **kw)


def inputs(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(B, T, D_MODEL)).astype(np.float32)
    positions = np.sort(rng.integers(0, 3000, size=(B, T)), axis=1)
    return x, positions


def torch_forward(module, x, positions=None, mask=None):
    with torch.no_grad():
        return module(
            torch.from_numpy(x),
            None if positions is None else torch.from_numpy(positions),
            attention_mask=None if mask is None else torch.from_numpy(mask),
        ).numpy()


def assert_close(got, want, tol=1e-5):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    err = np.max(np.abs(got - want))
    assert err <= tol * max(1.0, np.max(np.abs(want))), f"max error {err:.3g}"


# --- equal to torch -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["plain", "padded", "positions"])
@pytest.mark.parametrize("name", list(CASES))
def test_matches_torch_attention(name, mode):
    x, positions = inputs(list(CASES).index(name))
    mask = padding_mask() if mode == "padded" else None
    positions = positions if mode == "positions" else None
    want = torch_forward(torch_module(name), x, positions, mask)
    n_mod = nnx_module(name)
    got = n_mod(x, None if positions is None else jnp.asarray(positions),
                attention_mask=None if mask is None else jnp.asarray(mask))
    assert_close(got, want)  # every row, pads included: both let a pad row see every key
    # the options are seen: the same weights without them give another answer
    plain = torch_forward(torch_module(name, features=False), x, positions, mask)
    assert np.max(np.abs(plain - want)) > 1e-3


@pytest.mark.parametrize("name", list(CASES))
def test_holds_the_same_spec_as_torch(name):
    """One AttentionSpec, held by both front ends, is what makes them mean the same."""
    t_mod, n_mod = torch_module(name), nnx_module(name)
    assert isinstance(n_mod.spec, AttentionSpec)
    assert n_mod.spec == t_mod.spec
    assert (n_mod.chunk_size, n_mod.window, n_mod.temperature_tuning) == (
        t_mod.chunk_size, t_mod.window, t_mod.temperature_tuning
    )


def test_an_option_set_later_is_validated_and_used():
    x, _ = inputs()
    n_mod, t_mod = nnx_module("window-causal"), torch_module("window-causal")
    n_mod.window = t_mod.window = 5
    assert n_mod.spec.window == 5
    assert_close(n_mod(x), torch_forward(t_mod, x))
    assert np.max(np.abs(np.asarray(n_mod(x)) - np.asarray(nnx_module("window-causal")(x)))) > 1e-3
    with pytest.raises(ValueError, match="window must be an integer >= 1, got 0"):
        n_mod.window = 0
    with pytest.raises(AttributeError, match="num_kv_heads is fixed by the projection weights"):
        n_mod.num_kv_heads = 1


def test_positions_from_mask_matches_torch():
    mask = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 0, 1, 1]])
    want = rt.positions_from_mask(torch.from_numpy(mask)).numpy()
    np.testing.assert_array_equal(np.asarray(positions_from_mask(mask)), want)
    np.testing.assert_array_equal(want[0], [0, 0, 0, 1, 2])


def test_left_padding_gives_the_unpadded_answer():
    """A left-padded row's tokens see the same thing as the row alone, unpadded."""
    module = nnx_module("llama4-rope-layer")
    x, _ = inputs(1)
    padded = module(x, attention_mask=padding_mask())
    alone = module(x[2:3, PADS[2]:])
    assert_close(padded[2, PADS[2]:], alone[0])


# --- cached decoding ------------------------------------------------------------------------------

STEPS = ((0, 5), (5, 6), (6, 9))  # a prompt of 5, one token, then 3


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("name", ["chunk-rope-gqa", "window-causal", "llama4-rope-layer", "llama4-nope-layer-mqa"])
def test_cached_decode_equals_full_forward(name, padded):
    module = nnx_module(name)
    x, _ = inputs(2)
    mask = padding_mask() if padded else np.ones((B, T), np.int64)
    full = np.asarray(module(x, attention_mask=mask))
    cache = KVCache.create(B, module.num_kv_heads, 12, module.head_dim)
    steps, new_only = [], []
    narrow = cache
    for start, stop in STEPS:
        y, cache = module(x[:, start:stop], attention_mask=mask[:, :stop], cache=cache)  # torch's (B, S)
        steps.append(np.asarray(y))
        y, narrow = module(x[:, start:stop], attention_mask=mask[:, start:stop], cache=narrow)  # (B, T)
        new_only.append(np.asarray(y))
    assert int(cache.length) == T
    rows = mask.astype(bool)
    assert_close(np.concatenate(steps, 1)[rows], full[rows])
    np.testing.assert_array_equal(np.concatenate(new_only, 1), np.concatenate(steps, 1))
    # and the same as torch's own cached decoding, step by step, every row
    t_mod = torch_module(name)
    t_cache = rt.KVCache(B, module.num_kv_heads, 12, module.head_dim)
    with torch.no_grad():
        t_steps = [t_mod(torch.from_numpy(x[:, a:b]), cache=t_cache,
                         attention_mask=torch.from_numpy(mask[:, :b])).numpy() for a, b in STEPS]
    assert_close(np.concatenate(steps, 1), np.concatenate(t_steps, 1))


def test_cached_decode_without_mask_counts_positions_on():
    module = nnx_module("chunk-rope-gqa")
    x, _ = inputs(3)
    full = np.asarray(module(x))
    cache = KVCache.create(B, 2, T, HEAD_DIM)
    before = cache
    outs = []
    for start, stop in STEPS:
        y, cache = module(x[:, start:stop], cache=cache)
        outs.append(np.asarray(y))
    assert_close(np.concatenate(outs, 1), full)
    np.testing.assert_array_equal(np.asarray(cache.positions[0]), np.arange(T))
    assert int(before.length) == 0 and not np.any(np.asarray(before.keys))  # the old cache is untouched


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("name", ["chunk-rope-gqa", "llama4-nope-layer-mqa"])
def test_decode_without_mask_after_padded_prefill_equals_full_forward(name, jit):
    """After a left-padded prefill, calls without attention_mask or positions are tokens
    that continue each row after its last token (the cache keeps its padding hidden): one
    step, then one more, then several equal the full forward with the mask extended by
    ones. Row 2's prompt is all padding, so its first token is at position 0."""
    module = nnx_module(name)
    x, _ = inputs(7)
    prompt = 4
    mask = np.concatenate([padding_mask()[:, :prompt], np.ones((B, T - prompt), np.int64)], 1)
    full = np.asarray(module(x, attention_mask=mask))
    traces = []

    def step(m, token, cache):
        traces.append(token.shape)
        return m(token, cache=cache)

    step = nnx.jit(step) if jit else step
    cache = KVCache.create(B, module.num_kv_heads, 12, HEAD_DIM)
    y, cache = module(x[:, :prompt], attention_mask=mask[:, :prompt], cache=cache)
    outs = [np.asarray(y)]
    for start, stop in ((prompt, prompt + 1), (prompt + 1, prompt + 2), (prompt + 2, T)):
        y, cache = step(module, x[:, start:stop], cache)
        outs.append(np.asarray(y))
    rows = mask.astype(bool)
    assert_close(np.concatenate(outs, 1)[rows], full[rows])
    np.testing.assert_array_equal(np.asarray(cache.positions)[:, :T][rows], np.asarray(positions_from_mask(mask))[rows])
    if jit:  # one compile per step shape, not one per step
        assert len(traces) == 2


def test_decode_without_positions_continues_from_the_last_recorded_position():
    """A cache filled at explicit positions: the next call without positions continues
    each row after its own last position."""
    module = nnx_module("chunk-rope-gqa")
    x, _ = inputs(8)
    positions = np.stack([np.arange(T) + 100, np.arange(T) * 3, np.arange(T) - 4])  # (B, T)
    full = np.asarray(module(x, positions))
    cache = KVCache.create(B, 2, T, HEAD_DIM)
    _, cache = module(x[:, :6], positions[:, :6], cache=cache)
    y, cache = module(x[:, 6:], cache=cache)
    want = positions[:, 5:6] + 1 + np.arange(T - 6)
    np.testing.assert_array_equal(np.asarray(cache.positions)[:, 6:], want)
    full = np.asarray(module(x, np.concatenate([positions[:, :6], want], 1)))
    assert_close(y, full[:, 6:])


def test_decode_without_positions_past_the_int32_range_raises():
    """Positions continuing past 2**31 - 1 are refused, never wrapped: ValueError outside
    jit, jax's runtime error carrying the message (and NaN output) under jit."""
    module = nnx_module("window-causal")
    x, _ = inputs(9)
    cache = KVCache.create(B, HEADS, 8, HEAD_DIM)
    last = 2**31 - 1
    _, cache = module(x[:, :2], np.array([last - 1, last]), cache=cache)
    with pytest.raises(ValueError, match=r"continue after position 2147483647.*pass positions explicitly"):
        module(x[:, 2:3], cache=cache)
    step = nnx.jit(lambda m, a, c: m(a, cache=c))
    with pytest.raises(jax.errors.JaxRuntimeError, match=r"continue after position 2147483647"):
        jax.block_until_ready(step(module, x[:, 2:3], cache))


@pytest.mark.parametrize("padded", [False, True])
def test_jit_decode_one_token_at_a_time_equals_full_forward(padded):
    """Prefill, then one jitted step per token with a traced cache length: one compile."""
    module = nnx_module("llama4-rope-layer")
    x, _ = inputs(4)
    mask = padding_mask() if padded else np.ones((B, T), np.int64)
    full = np.asarray(module(x, attention_mask=mask))
    traces = []

    @nnx.jit
    def step(m, token, token_mask, cache):
        traces.append(1)
        return m(token, attention_mask=token_mask, cache=cache)

    cache = KVCache.create(B, 2, 16, HEAD_DIM)
    y, cache = module(x[:, :4], attention_mask=mask[:, :4], cache=cache)
    outs = [np.asarray(y)]
    for i in range(4, T):
        y, cache = step(module, x[:, i:i + 1], mask[:, i:i + 1], cache)
        outs.append(np.asarray(y))
    assert len(traces) == 1
    rows = mask.astype(bool)
    assert_close(np.concatenate(outs, 1)[rows], full[rows])


@pytest.mark.parametrize("first", [2**31 - T, -(2**31), -4])
def test_jit_decode_at_far_positions_equals_full_forward(first):
    """Explicit positions near the int32 ends (and negative ones), traced in each decode
    step: the cached decode still equals the full forward at the same positions."""
    module = nnx_module("chunk-rope-gqa")
    x, _ = inputs(6)
    positions = np.broadcast_to(first + np.arange(T), (B, T))
    full = np.asarray(module(x, positions))  # concrete: float64 host tables
    step = nnx.jit(lambda m, token, p, c: m(token, p, cache=c))
    cache = KVCache.create(B, 2, T, HEAD_DIM)
    y, cache = module(x[:, :3], positions[:, :3], cache=cache)
    outs = [np.asarray(y)]
    for i in range(3, T):
        y, cache = step(module, x[:, i:i + 1], jnp.asarray(positions[:, i:i + 1], jnp.int32), cache)
        outs.append(np.asarray(y))
    assert_close(np.concatenate(outs, 1), full)
    np.testing.assert_array_equal(np.asarray(cache.positions), positions)


def test_jit_cache_overflow_raises():
    """Under jit the overflow depends on the traced length: the step raises when it runs
    (jax's runtime error carrying the ValueError's message); more new tokens than the
    capacity raise ValueError while tracing."""
    module = nnx_module("window-causal")
    x, _ = inputs(5)
    step = nnx.jit(lambda m, a, c: m(a, cache=c))
    cache = KVCache.create(B, HEADS, 3, HEAD_DIM)
    y, cache = step(module, x[:, :2], cache)
    assert np.all(np.isfinite(np.asarray(y)))
    with pytest.raises(jax.errors.JaxRuntimeError, match=r"capacity 3 cannot hold 4 tokens \(2 cached \+ 2 new\)"):
        jax.block_until_ready(step(module, x[:, 2:4], cache))  # 2 + 2 > 3
    y, _ = step(module, x[:, 2:3], cache)  # 2 + 1 fits: the step still runs
    assert np.all(np.isfinite(np.asarray(y)))
    with pytest.raises(ValueError, match="capacity 3 cannot hold 4 new tokens"):
        step(module, x[:, :4], KVCache.create(B, HEADS, 3, HEAD_DIM))


def test_jit_full_mask_of_the_wrong_width_raises():
    module = nnx_module("window-causal")
    x, _ = inputs(6)
    step = nnx.jit(lambda m, a, mask, c: m(a, attention_mask=mask, cache=c))
    cache = KVCache.create(B, HEADS, 8, HEAD_DIM)
    _, cache = step(module, x[:, :3], np.ones((B, 3)), cache)
    y, _ = step(module, x[:, 3:4], np.ones((B, 4)), cache)  # 3 cached + 1 new: right
    assert np.all(np.isfinite(np.asarray(y)))
    with pytest.raises(jax.errors.JaxRuntimeError, match=r"attention_mask of width 5 does not cover the 3 cached and 1 new"):
        jax.block_until_ready(step(module, x[:, 3:4], np.ones((B, 5)), cache))  # S = 5 is not 3 + 1


def test_cache_is_a_pytree_of_arrays():
    cache = KVCache.create(2, 1, 4, 8, dtype=jnp.bfloat16)
    leaves = jax.tree_util.tree_leaves(cache)
    assert len(leaves) == 5 and cache.keys.dtype == jnp.bfloat16
    assert (cache.batch, cache.capacity, cache.num_kv_heads, cache.head_dim) == (2, 4, 1, 8)
    assert "length=0" in repr(cache)


# --- dtypes ---------------------------------------------------------------------------------------


def test_dtype_and_param_dtype_set_the_weights_and_the_output():
    """dtype is the computation dtype (output included, eager, cached and jitted),
    param_dtype the weights'; bfloat16 stays close to float32 with the same weights."""
    sd = torch_module("llama4-rope-layer").state_dict()
    kw = dict(num_heads=HEADS, num_kv_heads=2, rope=ropelab.RopeConfig(HEAD_DIM), chunk_size=4, qk_norm=True)
    wide = Attention.from_torch_state_dict(sd, **kw)
    narrow = Attention.from_torch_state_dict(sd, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, **kw)
    assert narrow.q_proj.kernel.get_value().dtype == jnp.bfloat16
    assert wide.q_proj.kernel.get_value().dtype == jnp.float32  # float32 users: as before
    x, _ = inputs(10)
    want = np.asarray(wide(x))
    assert want.dtype == np.float32
    step = nnx.jit(lambda m, a, c: m(a, cache=c))
    for a in (x, jnp.asarray(x, jnp.bfloat16)):
        y = narrow(a)
        cached, _ = narrow(a, cache=KVCache.create(B, 2, T, HEAD_DIM))
        jitted, _ = step(narrow, a, KVCache.create(B, 2, T, HEAD_DIM))
        for out in (y, cached, jitted):
            assert out.dtype == jnp.bfloat16
            assert_close(out, want, tol=0.05)


def test_dtype_alone_computes_in_it_with_float32_weights():
    module = Attention(D_MODEL, HEADS, rope=ropelab.RopeConfig(HEAD_DIM), dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    assert module.o_proj.kernel.get_value().dtype == jnp.float32
    assert module(np.ones((1, 3, D_MODEL), np.float32)).dtype == jnp.bfloat16


@pytest.mark.parametrize("name,value", [("dtype", jnp.int32), ("param_dtype", "bf16x"), ("param_dtype", None)])
def test_error_dtype(name, value):
    with pytest.raises(TypeError, match=f"{name} must be a floating-point dtype"):
        Attention(D_MODEL, HEADS, rngs=nnx.Rngs(0), **{name: value})


# --- errors ---------------------------------------------------------------------------------------


def _module(**kw):
    return Attention(16, 2, rope=ropelab.RopeConfig(8), rngs=nnx.Rngs(0), **kw)


@pytest.mark.parametrize("name", ["chunk_size", "window"])
@pytest.mark.parametrize("value,error,expected", [
    (0, ValueError, "an integer >= 1"), (-2, ValueError, "an integer >= 1"),
    (True, TypeError, "an integer"), (2.0, TypeError, "an integer"),
])
def test_error_chunk_size_and_window(name, value, error, expected):
    with pytest.raises(error, match=rf"{name} must be {expected}, got {value!r}"):
        _module(**{name: value})


@pytest.mark.parametrize("value,error", [((1.0,), ValueError), ("ab", TypeError), ((1.0, 2.0, 3.0), ValueError), (3.0, TypeError)])
def test_error_temperature_tuning_shape(value, error):
    with pytest.raises(error, match=r"temperature_tuning must be a pair \(attn_scale, floor_scale\)"):
        _module(temperature_tuning=value)


@pytest.mark.parametrize("value,part", [((0.1, 0.0), "floor_scale"), ((float("nan"), 8.0), "attn_scale"), ((0.1, float("inf")), "floor_scale")])
def test_error_temperature_tuning_values(value, part):
    with pytest.raises(ValueError, match=f"temperature_tuning's {part} must be a finite number"):
        _module(temperature_tuning=value)


@pytest.mark.parametrize("value,error", [(0, ValueError), (-1e-6, ValueError), ("1e-6", TypeError), (True, TypeError)])
def test_error_qk_norm_eps(value, error):
    with pytest.raises(error, match="qk_norm_eps must be a (finite )?number"):
        _module(qk_norm_eps=value)


def test_error_qk_norm_not_bool():
    with pytest.raises(TypeError, match="qk_norm must be True or False, got 1"):
        _module(qk_norm=1)


def test_error_cache_type():
    with pytest.raises(TypeError, match="cache must be a ropelab.nnx.KVCache or None, got KVCache"):
        _module()(np.zeros((1, 2, 16), np.float32), cache=rt.KVCache(1, 2, 4, 8))


@pytest.mark.parametrize("shape", [(2, 2, 8), (1, 1, 8), (1, 2, 4)])
def test_error_cache_shape(shape):
    batch, heads, dim = shape
    cache = KVCache.create(batch, heads, 4, dim)
    with pytest.raises(ValueError, match=r"cache of shape \(B, C, K, D\) = .* expected B=1, K=2, D=8"):
        _module()(np.zeros((1, 2, 16), np.float32), cache=cache)


def test_error_cache_overflow():
    module = _module()
    _, cache = module(np.zeros((1, 3, 16), np.float32), cache=KVCache.create(1, 2, 4, 8))
    with pytest.raises(ValueError, match=r"KV cache of capacity 4 cannot hold 5 tokens \(3 cached \+ 2 new\)"):
        module(np.zeros((1, 2, 16), np.float32), cache=cache)


def test_error_mask_shape_without_cache():
    with pytest.raises(ValueError, match=r"attention_mask must be shaped \(B, S\) = \(2, 3\)"):
        _module()(np.zeros((2, 3, 16), np.float32), attention_mask=np.ones((2, 4)))


@pytest.mark.parametrize("shape", [(1, 4), (2, 6), (2,)])
def test_error_mask_shape_with_cache(shape):
    module = _module()
    _, cache = module(np.zeros((2, 3, 16), np.float32), cache=KVCache.create(2, 2, 8, 8))
    with pytest.raises(ValueError, match=r"shaped \(B, S\) = \(2, 3 \+ 2\) .* or \(B, T\) = \(2, 2\)"):
        module(np.zeros((2, 2, 16), np.float32), attention_mask=np.ones(shape), cache=cache)


def test_error_unbatched_x_with_mask_or_cache():
    with pytest.raises(ValueError, match=r"attention_mask and cache need x shaped \(B, T, d_model\)"):
        _module()(np.zeros((3, 16), np.float32), attention_mask=np.ones((1, 3)))


def test_error_cache_create_arguments():
    with pytest.raises(ValueError, match="capacity must be an integer >= 1, got 0"):
        KVCache.create(1, 2, 0, 8)
    with pytest.raises(TypeError, match="dtype must be a floating-point dtype, got int32"):
        KVCache.create(1, 2, 4, 8, dtype=jnp.int32)


def test_error_cache_update_shape():
    cache = KVCache.create(1, 2, 4, 8)
    with pytest.raises(ValueError, match=r"new keys of shape \(1, 1, 3, 8\) do not fit a cache"):
        cache.update(jnp.zeros((1, 1, 3, 8)), jnp.zeros((1, 1, 3, 8)), jnp.zeros((1, 1), jnp.int32))
    with pytest.raises(ValueError, match=r"k and v must both be \(B, T, K, D\)"):
        cache.update(jnp.zeros((1, 1, 2, 8)), jnp.zeros((1, 2, 2, 8)), jnp.zeros((1, 1), jnp.int32))


def test_error_positions_from_mask_shape():
    with pytest.raises(ValueError, match=r"mask must be shaped \(B, S\), got shape \(4,\)"):
        positions_from_mask(np.ones(4))


def test_error_from_torch_state_dict_passes_options_through():
    sd = torch_module("llama4-rope-layer").state_dict()
    with pytest.raises(ValueError, match="chunk_size must be an integer >= 1, got 0"):
        Attention.from_torch_state_dict(sd, num_heads=HEADS, num_kv_heads=2, chunk_size=0)
    module = Attention(D_MODEL, HEADS, num_kv_heads=2, rope=ropelab.RopeConfig(HEAD_DIM), chunk_size=4,
                       qk_norm=True, qk_norm_eps=1e-5, rngs=nnx.Rngs(0))
    load_torch_state_dict(module, sd)
    loaded = nnx_module("llama4-rope-layer")
    assert (loaded.chunk_size, loaded.qk_norm, loaded.qk_norm_eps) == (4, True, 1e-5)
    x, _ = inputs(7)
    np.testing.assert_array_equal(np.asarray(module(x)), np.asarray(loaded(x)))


def test_error_temperature_tuning_at_negative_positions():
    module = Attention(16, 2, rope=None, temperature_tuning=(0.1, 2.0), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"defined for positions >= 0 \(Llama 4\), got position -5"):
        module(np.ones((1, 4, 16), np.float32), np.array([-5, -4, -3, -2]))
