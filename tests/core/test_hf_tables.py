"""rows_from_hf / hf_from_rows: transformers' full-width tables (..., T, R) <-> ropelab rows
(..., T, R/2), both layouts, numpy, torch and jax. The layouts are held to the formulas
transformers builds its tables with (``cat((f, f), -1)``, ``repeat_interleave(f, 2, -1)``)
and to the rotation its ``apply_rotary_pos_emb`` computes. The check against transformers'
own rotary modules is ``tests/hf/test_hf_tables.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from ropelab import RopeConfig, RopeTables, apply_rope, hf_from_rows, rope_tables, rows_from_hf

LAYOUTS = ["interleaved", "half"]


def _kinds():
    kinds = [("numpy", lambda a: a, np.asarray)]
    try:
        import torch

        kinds.append(("torch", torch.from_numpy, lambda t: t.numpy()))
    except ImportError:
        pass
    try:
        import jax.numpy as jnp

        kinds.append(("jax", lambda a: jnp.asarray(a, jnp.float32), np.asarray))
    except ImportError:
        pass
    return kinds


KINDS = {name: (to, back) for name, to, back in _kinds()}


def _hf_tables(angles, layout):
    """transformers' construction, in numpy: emb = cat((f, f)) or repeat_interleave(f, 2)."""
    emb = np.concatenate([angles, angles], -1) if layout == "half" else np.repeat(angles, 2, axis=-1)
    return np.cos(emb), np.sin(emb)


def _hf_rotate(x, cos, sin, layout):
    """transformers' apply_rotary_pos_emb: x * cos + rotate_half(x) * sin, over the first R
    features (partial rotary passes the rest), rotate_half as each layout's families write it."""
    r = cos.shape[-1]
    rot, rest = x[..., :r], x[..., r:]
    if layout == "half":
        a, b = rot[..., : r // 2], rot[..., r // 2 :]
        turned = np.concatenate([-b, a], -1)
    else:  # Cohere/GLM: x[..., ::2], x[..., 1::2] -> stack((-x2, x1)).flatten
        a, b = rot[..., 0::2], rot[..., 1::2]
        turned = np.stack([-b, a], -1).reshape(rot.shape)
    return np.concatenate([rot * cos + turned * sin, rest], -1)


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_round_trips(rng, kind, layout):
    to, back = KINDS[kind]
    rows = rope_tables(RopeConfig(16, layout=layout), rng.integers(0, 10**4, size=(2, 5)))
    full = hf_from_rows(to(rows.cos), to(rows.sin), layout=layout)
    assert tuple(full[0].shape) == (2, 5, 16)
    angles = np.arctan2(rows.sin, rows.cos)
    want_cos, want_sin = _hf_tables(angles, layout)
    tol = 1e-6 if kind == "jax" else 1e-12
    np.testing.assert_allclose(back(full[0]), want_cos, atol=tol)
    np.testing.assert_allclose(back(full[1]), want_sin, atol=tol)
    again = rows_from_hf(*full, layout=layout)
    assert isinstance(again, RopeTables) and again.layout == layout and again.head_dim is None
    assert type(again.cos) is type(full[0])
    np.testing.assert_array_equal(back(again.cos), back(to(rows.cos)))
    np.testing.assert_array_equal(back(again.sin), back(to(rows.sin)))
    # and the other way: transformers' tables -> rows -> transformers' tables, exactly
    hf_cos, hf_sin = (to(t) for t in _hf_tables(angles, layout))
    there = hf_from_rows(rows_from_hf(hf_cos, hf_sin, layout=layout))
    np.testing.assert_array_equal(back(there[0]), back(hf_cos))
    np.testing.assert_array_equal(back(there[1]), back(hf_sin))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("rotary", [16, 8])
def test_rows_rotate_as_transformers_does(rng, layout, rotary):
    """apply_rope with converted rows equals apply_rotary_pos_emb with the full tables."""
    B, H, T, D = 2, 3, 5, 16
    angles = rng.uniform(-50, 50, size=(B, T, rotary // 2))
    cos, sin = _hf_tables(angles, layout)  # (B, T, R), as transformers' rotary modules give
    x = rng.standard_normal((B, H, T, D))
    want = _hf_rotate(x, cos[:, None], sin[:, None], layout)  # unsqueeze_dim=1
    rows = rows_from_hf(cos[:, None], sin[:, None], layout=layout)
    got = apply_rope(x, rows, rotary_dim=rotary if rotary < D else None)
    np.testing.assert_allclose(got, want, atol=1e-12)
    # read with the other pairing, the tables are refused rather than misused
    other = "half" if layout == "interleaved" else "interleaved"
    with pytest.raises(ValueError, match=f"not a full-width table of the '{other}' layout"):
        rows_from_hf(cos, sin, layout=other)


def test_full_width_tables_given_to_apply_rope_get_a_hint(rng):
    angles = rng.uniform(-5, 5, size=(5, 8))
    cos, sin = _hf_tables(angles, "half")
    with pytest.raises(ValueError, match=r"16 columns, too many for x's 16 features.*rows_from_hf"):
        apply_rope(rng.standard_normal((5, 16)), cos, sin, layout="half")


def test_under_jit_the_values_are_not_read(rng):
    jax = pytest.importorskip("jax")
    angles = rng.uniform(-5, 5, size=(5, 4))
    cos, sin = (jax.numpy.asarray(t, jax.numpy.float32) for t in _hf_tables(angles, "interleaved"))
    rows = jax.jit(lambda c, s: rows_from_hf(c, s, layout="interleaved"))(cos, sin)
    assert rows.layout == "interleaved"
    np.testing.assert_allclose(np.asarray(rows.cos), np.cos(angles), atol=1e-6)
    back = jax.jit(hf_from_rows)(rows)
    np.testing.assert_array_equal(np.asarray(back[0]), np.asarray(cos))


def test_torch_autograd_passes_through(rng):
    torch = pytest.importorskip("torch")
    angles = torch.from_numpy(rng.uniform(-5, 5, size=(5, 4))).requires_grad_(True)
    emb = torch.cat((angles, angles), -1)
    rows = rows_from_hf(emb.cos(), emb.sin(), layout="half")
    rows.cos.sum().backward()
    torch.testing.assert_close(angles.grad, -angles.detach().sin(), rtol=0, atol=1e-12)
