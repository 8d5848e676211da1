"""kernels.turn_rows (the fused numba rows) against float64 tables and the torch-op rows."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ropelab import RopeConfig, kernels, rope_tables, rows, scaling  # noqa: E402

numba_only = pytest.mark.skipif(kernels.backend() != "numba", reason="numba kernels not usable here")

FAR = 2**31 - 1


@numba_only
@pytest.mark.parametrize("config", [RopeConfig(128), RopeConfig(64, theta=500_000.0, layout="half"),
                                    RopeConfig(32, scaling=scaling.YaRN(4.0, 64))])
@pytest.mark.parametrize("count", [3, 3000])  # the serial loop, the parallel one
def test_turn_rows_match_float64_tables(config, count):
    rng = np.random.default_rng(0)
    positions = np.concatenate([[0, 1, -1, FAR, -FAR, -(2**31), 2**32 + 5],
                                rng.integers(-(2**31), 2**31, count)])[:max(count, 7)].reshape(1, -1)
    limbs = rows.limbs_for(config)
    got = kernels.turn_rows(torch.from_numpy(positions), limbs, attention_factor=config.attention_factor)
    assert all(isinstance(g, torch.Tensor) and g.dtype == torch.float32 for g in got)
    assert got[0].shape == positions.shape + (config.rotary_dim // 2,)
    want = rope_tables(config, positions)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g.numpy(), w, atol=3e-7 * config.attention_factor, rtol=0)
    ops = rows.torch_rows(torch.from_numpy(positions), torch.from_numpy(limbs.copy()),
                          attention_factor=config.attention_factor)
    for g, o in zip(got, ops, strict=True):
        torch.testing.assert_close(g, o, atol=2e-7, rtol=0)


@numba_only
def test_turn_rows_declines_what_it_cannot_read():
    limbs = rows.limbs_for(RopeConfig(8))
    assert kernels.turn_rows(torch.arange(3, device="meta"), limbs) is None
    cos, sin = kernels.turn_rows(np.zeros((0, 2), dtype=np.int32), limbs)
    assert isinstance(cos, np.ndarray) and cos.shape == (0, 2, 4)


@numba_only
def test_positions_outside_the_table_are_refused_by_the_kernel():
    """The positions path reads table rows: a row past the table raises, never reads
    memory beyond it (callers check first; this catches one that did not)."""
    from ropelab.kernels import numba_cpu
    from ropelab.kernels.interface import Rows

    cos, sin = (np.ascontiguousarray(t, dtype=np.float32) for t in rope_tables(RopeConfig(8), np.arange(4)))
    x = np.ones((1, 1, 2, 8), dtype=np.float32)
    for bad in ([0, 4], [-1, 0]):
        with pytest.raises(IndexError, match="outside the table"):
            numba_cpu.rope((x,), Rows(cos, sin, np.array(bad)), layout="half", inverse=False, inplace=False)
