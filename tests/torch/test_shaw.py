"""ropelab.torch.ShawAttention against float64 loops over Shaw et al.'s equations, with
Attention's masks, temperature and KV cache (decode equals full forward)."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from ropelab_testing import assert_decode_equals_full, assert_maskless_decode_equals_full  # noqa: E402

from ropelab import RopeConfig  # noqa: E402
from ropelab.torch import ShawAttention  # noqa: E402


def _shaw_reference(attn, x, positions, *, window=None, temperature=None):
    """float64 loops over (i, j) of Shaw et al.'s eq. 3-5, causal; a key at distance
    ``window`` or more is not seen; ``temperature=(a, f)`` scales query i by
    ``1 + a * log(floor((pos_i + 1) / f) + 1)`` (Llama 4's form)."""
    w = {n: p.detach().double().numpy() for n, p in attn.named_parameters()}
    x = x.detach().double().numpy()
    b, t, _ = x.shape
    h, kv, d, c = attn.num_heads, attn.num_kv_heads, attn.head_dim, attn.clip
    q = (x @ w["q_proj.weight"].T).reshape(b, t, h, d)
    k = (x @ w["k_proj.weight"].T).reshape(b, t, kv, d)
    v = (x @ w["v_proj.weight"].T).reshape(b, t, kv, d)
    out = np.zeros((b, t, h, d))
    for bb in range(b):
        for hh in range(h):
            g = hh // (h // kv)
            for i in range(t):
                qi = q[bb, i, hh]
                if temperature is not None:
                    a, f = temperature
                    qi = qi * (1 + a * math.log(math.floor((positions[bb, i] + 1) / f) + 1))
                seen = [j for j in range(i + 1) if window is None or positions[bb, i] - positions[bb, j] < window]
                e = np.full(t, -np.inf)
                for j in seen:
                    r = min(max(positions[bb, j] - positions[bb, i], -c), c) + c
                    e[j] = qi @ (k[bb, j, g] + w["rel_k.weight"][r]) / math.sqrt(d)
                p = np.exp(e - e.max())
                p /= p.sum()
                for j in seen:
                    r = min(max(positions[bb, j] - positions[bb, i], -c), c) + c
                    out[bb, i, hh] += p[j] * (v[bb, j, g] + w["rel_v.weight"][r])
    return out.reshape(b, t, h * d) @ w["o_proj.weight"].T


def _shaw(seed=2, **kw):
    torch.manual_seed(seed)
    attn = ShawAttention(32, 4, num_kv_heads=2, clip=3, **kw)
    with torch.no_grad():  # make the relative vectors matter
        attn.rel_k.weight.normal_(std=1.0)
        attn.rel_v.weight.normal_(std=1.0)
    return attn


OPTIONS = {
    "plain": {},
    "window": {"window": 3},
    "temperature": {"temperature_tuning": (0.5, 2.0)},
}


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_shaw_equals_loop_reference(name):
    attn = _shaw(**OPTIONS[name])
    x = torch.randn(2, 9, 32)
    positions = np.stack([np.arange(9), np.arange(9) + 5])
    got = attn(x, torch.as_tensor(positions)).detach().double().numpy()
    ref = _shaw_reference(attn, x, positions, window=attn.window, temperature=attn.temperature_tuning)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    if name != "plain":  # the option matters: the plain reference is far off
        assert np.abs(got - _shaw_reference(attn, x, positions)).max() > 1e-3


def test_shaw_state_dict_has_attention_projection_names():
    keys = set(ShawAttention(32, 4, clip=2).state_dict())
    assert {
        "q_proj.weight",
        "k_proj.weight",
        "v_proj.weight",
        "o_proj.weight",
        "rel_k.weight",
        "rel_v.weight",
    } == keys


def test_shaw_rejects_rope():
    with pytest.raises(ValueError, match="takes no rope"):
        ShawAttention(32, 4, rope=RopeConfig(8))


def test_shaw_rejects_zero_clip():
    with pytest.raises(ValueError, match="clip must be an integer >= 1, got 0"):
        ShawAttention(32, 4, clip=0)


def test_shaw_checks_the_mask_shape():
    """The subclass with its own score path shares Attention's input checks."""
    x = torch.randn(2, 5, 16)
    with pytest.raises(ValueError, match=r"attention_mask must be shaped \(B, S\) = \(2, 5\)"):
        ShawAttention(16, 2, clip=2)(x, attention_mask=torch.ones(2, 4, dtype=torch.long))


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_cached_decoding_equals_full_forward(name):
    attn = _shaw(seed=5, **OPTIONS[name])
    x = torch.randn(2, 12, 32)
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[0, :3] = 0  # left padding
    assert_decode_equals_full(attn, x, mask)
    assert_maskless_decode_equals_full(attn, x, mask)


@settings(max_examples=10, deadline=None)
@given(shift=st.integers(1, 100_000))
def test_shaw_output_depends_on_relative_positions_only(shift):
    torch.manual_seed(3)
    attn = ShawAttention(16, 2, clip=2)
    x = torch.randn(1, 6, 16)
    torch.testing.assert_close(attn(x, torch.arange(6) + shift), attn(x, torch.arange(6)))


@pytest.mark.slow
def test_compiles_fullgraph():
    attn = _shaw(seed=8)
    x = torch.randn(2, 10, 32)
    torch.testing.assert_close(
        torch.compile(attn, fullgraph=True)(x), attn(x), rtol=1e-4, atol=1e-5
    )
