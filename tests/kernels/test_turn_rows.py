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


@numba_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("rows_shape", ["T", "BT", "1T"])
def test_rotate_fresh_equals_rope(dtype, rows_shape):
    """The decode shortcut gives kernels.rope's values to the bit (partial rotary, q and
    k of different head counts, rows per token or per batch row)."""
    B, T, D = 2, 3, 12
    config = RopeConfig(D, rotary_dim=8, layout="half")
    positions = {"T": torch.tensor([4, FAR, -9]), "BT": torch.tensor([[1, 2, 3], [FAR, 0, -FAR]]),
                 "1T": torch.tensor([[7, 8, 9]])}[rows_shape]
    cos, sin = kernels.turn_rows(positions, rows.limbs_for(config))
    q, k = torch.randn(B, 4, T, D).to(dtype), torch.randn(B, 2, T, D).to(dtype)
    got = kernels.rotate_fresh((q, k), cos, sin, layout="half")
    assert got is not None
    c4, s4 = (t.unsqueeze(-3) for t in (cos, sin))  # a heads dim
    want = kernels.rope((q, k), c4, s4, layout="half")
    for g, w in zip(got, want, strict=True):
        assert g.dtype == dtype and g.is_contiguous()
        torch.testing.assert_close(g, w, rtol=0, atol=0)


@numba_only
def test_rotate_fresh_declines_what_it_does_not_cover():
    cos, sin = kernels.turn_rows(torch.arange(3), rows.limbs_for(RopeConfig(8)))
    q = torch.randn(1, 2, 3, 8)
    assert kernels.rotate_fresh((q,), cos, sin, layout="half") is not None
    for xs, c, s in [
        ((q.transpose(2, 3).contiguous().transpose(2, 3),), cos, sin),  # not contiguous
        ((q.clone().requires_grad_(True),), cos, sin),  # autograd would need to record
        ((torch.randn(2, 3, 8),), cos, sin),  # not (B, H, T, D)
        ((torch.randn(1, 2, 3, 4),), cos, sin),  # head dim below the rotary dim
        ((torch.randn(1, 2, 4, 8),), cos, sin),  # rows of another T
        ((q,), cos.double(), sin.double()),  # rows not float32
        ((q,), cos.t().contiguous().t(), sin),  # rows not contiguous
    ]:
        assert kernels.rotate_fresh(xs, c, s, layout="half") is None
