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


@numba_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("layout", ["half", "interleaved"])
@pytest.mark.parametrize("heads_first", [True, False])
@pytest.mark.parametrize("case", ["decode", "T", "1T", "BT", "parallel"])
def test_rotate_at_equals_rows_then_rope(dtype, layout, heads_first, case):
    """Rows made inside the in-place loop, a chunk of tokens at a time, give what
    turn_rows' rows through kernels.rope give, to the bit: both layouts, partial rotary,
    (B, H, T, D) memory and (B, T, H, D) memory seen through a transpose, positions per
    token or per batch row, a length that is no multiple of the chunk, the serial loop
    and the parallel one."""
    config = RopeConfig(24, rotary_dim=16, layout=layout)
    g = torch.Generator().manual_seed(0)
    B, H, T = {"decode": (1, 4, 1), "T": (2, 3, 70), "1T": (2, 3, 70), "BT": (2, 3, 70),
               "parallel": (2, 8, 600)}[case]
    positions = {"decode": torch.tensor([FAR]), "T": torch.randint(-FAR, FAR, (T,), generator=g),
                 "1T": torch.randint(-FAR, FAR, (1, T), generator=g),
                 "BT": torch.randint(-FAR, FAR, (B, T), generator=g),
                 "parallel": torch.arange(-5, T - 5).expand(B, T)}[case]
    limbs = rows.limbs_for(config)
    cos, sin = kernels.turn_rows(positions, limbs, attention_factor=1.0)
    c4, s4 = cos.unsqueeze(-3), sin.unsqueeze(-3)  # a heads dim: (T or B, 1, T, R/2)
    xs = []
    for heads in (H, 2):  # q, and k with fewer heads
        shape = (B, heads, T, 24) if heads_first else (B, T, heads, 24)
        x = torch.randn(shape, generator=g).to(dtype)
        xs.append(x if heads_first else x.transpose(1, 2))  # (B, H, T, D) views
    want = kernels.rope(tuple(xs), c4, s4, layout=layout)
    assert kernels.rotate_at_(tuple(xs), positions, limbs, layout=layout) is not None
    for x, w in zip(xs, want, strict=True):
        torch.testing.assert_close(x, w, rtol=0, atol=0)


@numba_only
@pytest.mark.parametrize("case", ["one", "mixed_layouts", "three_batches", "same_twice", "parallel"])
def test_rotate_at_in_one_launch_equals_one_tensor_at_a_time(case):
    """Tensors rotated together (q and k share a launch and each chunk's rows) come out
    as they do rotated one at a time: a tensor alone, (B, H, T, D) with (B, T, H, D)
    memory, three tensors of two batch sizes, one tensor given twice (rotated twice,
    as two calls would), sizes for the parallel loop."""
    config = RopeConfig(16, layout="half")
    limbs = rows.limbs_for(config)
    g = torch.Generator().manual_seed(3)
    T = 600 if case == "parallel" else 70
    positions = torch.randint(-FAR, FAR, (T,), generator=g)

    def made(B, H, heads_first=True):
        x = torch.randn((B, H, T, 16) if heads_first else (B, T, H, 16), generator=g)
        return x if heads_first else x.transpose(1, 2)

    q = made(2, 4)
    xs = {"one": (q,), "mixed_layouts": (q, made(2, 2, heads_first=False)),
          "three_batches": (q, made(1, 2), made(2, 3, heads_first=False)), "same_twice": (q, q),
          "parallel": (made(2, 8), made(2, 8, heads_first=False))}[case]
    want = {id(x): x.clone() for x in xs}
    for x in xs:
        assert kernels.rotate_at_((want[id(x)],), positions, limbs, layout="half") is not None
    assert kernels.rotate_at_(xs, positions, limbs, layout="half") is not None
    for x in xs:
        torch.testing.assert_close(x, want[id(x)], rtol=0, atol=0)


@numba_only
def test_rotate_at_declines_what_it_does_not_cover_and_writes_nothing():
    limbs = rows.limbs_for(RopeConfig(8))
    q = torch.randn(1, 2, 3, 8)
    for xs, positions in [
        ((torch.randn(2, 3, 8),), torch.arange(3)),  # not (B, H, T, D)
        ((torch.randn(1, 2, 3, 4),), torch.arange(3)),  # head dim below the rotary dim
        ((q.clone(),), torch.arange(4)),  # positions of another T
        ((torch.randn(2, 2, 3, 8),), torch.zeros(3, 3, dtype=torch.long)),  # positions of another B
        ((q.clone(),), torch.zeros(1, 1, 3, dtype=torch.long)),  # positions of three dims
        ((q.clone().expand(2, 2, 3, 8),), torch.arange(3)),  # elements sharing memory
        ((q.clone(),), torch.arange(3, device="meta")),  # positions not on the CPU
        ((q.clone(), torch.randn(1, 2, 3, 4)), torch.arange(3)),  # the second one cannot go
    ]:
        before = [x.clone() for x in xs]
        assert kernels.rotate_at_(xs, positions, limbs, layout="half") is None
        for x, b in zip(xs, before, strict=True):
            torch.testing.assert_close(x, b, rtol=0, atol=0)  # all or nothing
