"""RopeTables: tables that carry their layout and head width, so apply_rope(x, tables)
cannot pair features the wrong way; they unpack as (cos, sin) and survive jit, compile,
pytrees and pickle.

Shapes: x (B, H, T, D); tables (T, R/2).
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from ropelab_testing import reference_inv_freq, reference_rope

from ropelab import RopeConfig, RopeTables, apply_rope, apply_rope_, preset, rope_tables

LAYOUTS = ["interleaved", "half"]


def test_rope_tables_carry_the_config():
    cfg = RopeConfig(64, rotary_dim=32, layout="half")
    tables = rope_tables(cfg, np.arange(5))
    assert isinstance(tables, RopeTables) and isinstance(tables, tuple)
    assert (tables.layout, tables.head_dim, tables.rotary_dim) == ("half", 64, 32)
    cos, sin = tables  # unpacks as a pair
    assert cos is tables.cos and sin is tables.sin and cos.shape == (5, 16)
    assert len(tables) == 2 and tables[0] is cos
    assert "layout='half'" in repr(tables) and "head_dim=64" in repr(tables)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("rotary_dim", [None, 10])
def test_tables_whole_use_their_layout(rng, layout, rotary_dim):
    cfg = RopeConfig(16, rotary_dim=rotary_dim, layout=layout)
    positions = rng.integers(0, 5000, size=6)
    x = rng.standard_normal((2, 3, 6, 16))
    got = apply_rope(x, rope_tables(cfg, positions))  # no layout=, no rotary_dim=
    want = reference_rope(x, positions, reference_inv_freq(1e4, cfg.rotary_dim), layout=layout)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    other = "half" if layout == "interleaved" else "interleaved"
    assert not np.allclose(got, apply_rope(x, *rope_tables(cfg, positions), layout=other, rotary_dim=cfg.rotary_dim))


def test_the_llama_preset_is_right_whole_and_refused_unpacked(rng):
    """What used to be off by 4.5: the preset says half; unpacked tables no longer guess."""
    cfg = preset("llama-3.1-8b")
    positions = np.arange(4)
    q = rng.standard_normal((1, 2, 4, 128))
    want = reference_rope(q, positions, cfg.inv_freq(), layout="half", scale=cfg.attention_factor)
    np.testing.assert_allclose(apply_rope(q, rope_tables(cfg, positions)), want, atol=1e-12)
    with pytest.raises(TypeError, match="needs layout="):
        apply_rope(q, *rope_tables(cfg, positions))


def test_tables_whole_with_positions_and_pairs(rng):
    cfg = RopeConfig(16, rotary_dim=12, layout="half")
    table = rope_tables(cfg, np.arange(64))  # (P, R/2), indexed by position
    q, k = rng.standard_normal((2, 2, 3, 5, 16))
    positions = rng.integers(0, 64, size=(2, 1, 5))
    got_q, got_k = apply_rope((q, k), table, positions=positions)
    inv = reference_inv_freq(1e4, 12)
    np.testing.assert_allclose(got_q, reference_rope(q, positions, inv, layout="half"), atol=1e-12)
    np.testing.assert_allclose(got_k, reference_rope(k, positions, inv, layout="half"), atol=1e-12)
    y = q.copy()
    assert apply_rope_(y, table, positions=positions) is y
    np.testing.assert_allclose(y, got_q, atol=1e-12)


def test_an_agreeing_layout_is_accepted():
    cfg = RopeConfig(8, layout="half")
    x = np.random.default_rng(0).standard_normal((3, 8))
    tables = rope_tables(cfg, np.arange(3))
    np.testing.assert_array_equal(apply_rope(x, tables, layout="half"), apply_rope(x, tables))


def test_made_by_hand():
    cos, sin = rope_tables(RopeConfig(8), np.arange(3))
    tables = RopeTables(cos, sin, "interleaved")
    assert tables.head_dim is None and tables.rotary_dim == 8
    x = np.random.default_rng(0).standard_normal((3, 8))
    np.testing.assert_array_equal(apply_rope(x, tables), apply_rope(x, cos, sin, layout="interleaved"))
    # a head width unknown: the tables rotate the whole head unless rotary_dim says otherwise
    with pytest.raises(ValueError, match="rotary_dim=8"):
        apply_rope(np.zeros((3, 12)), tables)
    assert apply_rope(np.zeros((3, 12)), tables, rotary_dim=8).shape == (3, 12)


def test_pickle_replace_and_copies_keep_the_layout():
    tables = rope_tables(RopeConfig(8, rotary_dim=6, layout="half"), np.arange(3))
    back = pickle.loads(pickle.dumps(tables))
    assert (back.layout, back.head_dim) == ("half", 8)
    np.testing.assert_array_equal(back.cos, tables.cos)
    swapped = tables._replace(cos=tables.cos * 2)
    assert isinstance(swapped, RopeTables) and (swapped.layout, swapped.head_dim) == ("half", 8)
    # one class per (layout, head width): two tables of the same config share it
    assert type(rope_tables(RopeConfig(8, rotary_dim=6, layout="half"), np.arange(5))) is type(tables)


def test_jax_jit_and_pytrees_keep_the_layout(rng):
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    cfg = RopeConfig(16, rotary_dim=8, layout="half")
    tables = rope_tables(cfg, np.arange(6))
    on_device = jax.tree_util.tree_map(lambda t: jnp.asarray(t, jnp.float32), tables)
    assert isinstance(on_device, RopeTables) and (on_device.layout, on_device.head_dim) == ("half", 16)
    x = jnp.asarray(rng.standard_normal((2, 6, 16)), jnp.float32)
    got = jax.jit(apply_rope)(x, on_device)  # the tables are a jit argument, layout intact
    np.testing.assert_allclose(np.asarray(got), apply_rope(np.asarray(x), tables), atol=1e-5)


def test_torch_compile_keeps_the_layout(rng):
    torch = pytest.importorskip("torch")
    cfg = RopeConfig(16, layout="half")
    cos, sin = rope_tables(cfg, np.arange(6))
    tables = RopeTables(torch.from_numpy(cos).float(), torch.from_numpy(sin).float(), "half", head_dim=16)
    x = torch.from_numpy(rng.standard_normal((2, 6, 16))).float()
    fn = torch.compile(lambda a, t: apply_rope(a, t) * 2, fullgraph=True, backend="eager")
    torch.testing.assert_close(fn(x, tables), apply_rope(x, cos, sin, layout="half") * 2, atol=1e-6, rtol=0)
