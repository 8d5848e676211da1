"""ropelab.torch.RotaryEmbedding against a float64 NumPy reference and RoPE's identities."""

import dataclasses
import threading
from typing import ClassVar

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ropelab import RopeConfig, apply_rope, rope_tables, scaling  # noqa: E402
from ropelab.torch import RotaryEmbedding  # noqa: E402


def reference_rope(x, positions, inv_freq, layout, factor=1.0):
    """float64 RoPE written from the definition: pair (a, b) -> (a c - b s, a s + b c).

    x (..., T, D) float64, positions (T,) or (B, T) broadcast against x's batch.
    """
    x = np.array(x, dtype=np.float64)
    r = 2 * len(inv_freq)
    angles = np.asarray(positions, dtype=np.float64)[..., None] * inv_freq  # (.., T, R/2)
    if angles.ndim == 3:  # (B, T, R/2) -> (B, 1, T, R/2)
        angles = angles[:, None]
    c, s = np.cos(angles) * factor, np.sin(angles) * factor
    out = x.copy()
    if layout == "interleaved":
        a, b = x[..., 0:r:2], x[..., 1:r:2]
        out[..., 0:r:2] = a * c - b * s
        out[..., 1:r:2] = a * s + b * c
    else:
        a, b = x[..., : r // 2], x[..., r // 2 : r]
        out[..., : r // 2] = a * c - b * s
        out[..., r // 2 : r] = a * s + b * c
    return out


def _qk(b=2, h=3, k=1, t=7, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, h, t, d, generator=g), torch.randn(b, k, t, d, generator=g)


@pytest.mark.parametrize("layout", ["interleaved", "half"])
@pytest.mark.parametrize("rotary_dim", [16, 8])
def test_matches_float64_reference(layout, rotary_dim):
    config = RopeConfig(16, theta=500.0, rotary_dim=rotary_dim, layout=layout)
    rope = RotaryEmbedding(config)
    q, k = _qk()
    q2, k2 = rope(q, k, offset=5)
    pos = np.arange(5, 12)
    inv = config.inv_freq()
    np.testing.assert_allclose(q2.numpy(), reference_rope(q.numpy(), pos, inv, layout), atol=2e-6)
    np.testing.assert_allclose(k2.numpy(), reference_rope(k.numpy(), pos, inv, layout), atol=2e-6)


def test_batch_positions_gather_per_row():
    config = RopeConfig(16, layout="half")
    rope = RotaryEmbedding(config)
    q, k = _qk(b=2, t=4)
    positions = torch.tensor([[0, 0, 1, 2], [7, 8, 9, 10]])  # a left-padded row, an offset row
    q2, k2 = rope(q, k, positions)
    ref = reference_rope(q.numpy(), positions.numpy(), config.inv_freq(), "half")
    np.testing.assert_allclose(q2.numpy(), ref, atol=2e-6)
    # (T,) positions equal offset + arange
    q3, _ = rope(q, k, torch.arange(3, 7))
    q4, _ = rope(q, k, offset=3)
    torch.testing.assert_close(q3, q4, rtol=0, atol=0)


def test_position_zero_is_identity_and_norm_preserved():
    rope = RotaryEmbedding(RopeConfig(16))
    q, k = _qk(t=1)
    q0, k0 = rope(q, k)
    torch.testing.assert_close(q0, q, rtol=0, atol=0)
    q, k = _qk(t=9)
    q1, _ = rope(q, k, offset=100)
    torch.testing.assert_close(q1.norm(dim=-1), q.norm(dim=-1), rtol=1e-5, atol=1e-6)


def test_relative_position_invariance():
    # <R(m) q, R(n) k> depends only on m - n
    rope = RotaryEmbedding(RopeConfig(16, layout="interleaved"))
    q, k = _qk(b=1, h=1, k=1, t=1)
    scores = []
    for shift in (0, 37, 1000):
        qm, _ = rope(q, q, torch.tensor([shift + 5]))
        _, kn = rope(k, k, torch.tensor([shift + 2]))
        scores.append(float((qm * kn).sum()))
    np.testing.assert_allclose(scores, scores[0], rtol=1e-5)


def test_far_positions_are_exact():
    # float32 angles are wrong by ~0.03 rad at 1e6; the rows are reduced in exact turns
    config = RopeConfig(8, layout="half")
    rope = RotaryEmbedding(config)
    q, k = _qk(b=1, h=1, t=2, d=8)
    pos = torch.tensor([1_000_000, 1_000_001])
    q2, _ = rope(q, k, pos)
    ref = reference_rope(q.numpy(), pos.numpy(), config.inv_freq(), "half")
    np.testing.assert_allclose(q2.numpy(), ref, atol=1e-5)


def test_attention_factor_in_tables():
    yarn = RopeConfig(16, scaling=scaling.YaRN(4.0, 64))
    rope = RotaryEmbedding(yarn)
    q, k = _qk()
    q2, _ = rope(q, k)
    ref = reference_rope(
        q.numpy(), np.arange(7), yarn.inv_freq(), "interleaved", yarn.attention_factor
    )
    assert yarn.attention_factor > 1.0
    np.testing.assert_allclose(q2.numpy(), ref, atol=5e-6)


@pytest.mark.parametrize(
    "scheme",
    [
        scaling.DynamicNTK(4.0, 16),
        scaling.LongRoPE([1.0, 1.5, 2.0, 3.0], [2.0, 3.0, 4.0, 8.0], 16, factor=4.0),
    ],
)
def test_dynamic_schemes_pick_frequencies_from_max_position(scheme):
    config = RopeConfig(8, scaling=scheme)
    rope = RotaryEmbedding(config)
    q, k = _qk(d=8, t=4)
    for positions in ([0, 1, 2, 3], [10, 11, 12, 13], [30, 31, 32, 40], [50, 51, 52, 53]):
        seq_len = max(positions) + 1
        q2, _ = rope(q, k, torch.tensor(positions))
        ref = reference_rope(
            q.numpy(),
            np.array(positions),
            config.inv_freq(seq_len),
            "interleaved",
            config.attention_factor,
        )
        np.testing.assert_allclose(q2.numpy(), ref, atol=5e-6, err_msg=str(positions))
    # positions=None: seq_len = offset + T
    q3, _ = rope(q, k, offset=20)
    ref = reference_rope(
        q.numpy(), np.arange(20, 24), config.inv_freq(24), "interleaved", config.attention_factor
    )
    np.testing.assert_allclose(q3.numpy(), ref, atol=5e-6)


@pytest.mark.parametrize(
    "scheme",
    [
        scaling.DynamicNTK(4.0, 16),
        scaling.LongRoPE([1.0, 1.5, 2.0, 3.0], [2.0, 3.0, 4.0, 8.0], 16, factor=4.0),
    ],
)
def test_dynamic_schemes_go_back_to_base_frequencies_for_short_calls(scheme):
    """A long call does not leave the module in the long regime: a short one after it
    rotates with the base frequencies (the choice depends on the call's positions only)."""
    config = RopeConfig(8, scaling=scheme)
    rope = RotaryEmbedding(config)
    q, k = _qk(d=8, t=4)
    for positions in ([0, 1, 2, 3], [40, 41, 42, 43], [5, 6, 7, 8]):  # short, long, short again
        seq_len = max(positions) + 1
        q2, _ = rope(q, k, torch.tensor(positions))
        ref = reference_rope(q.numpy(), np.array(positions), config.inv_freq(seq_len), "interleaved",
                             config.attention_factor)
        np.testing.assert_allclose(q2.numpy(), ref, atol=5e-6, err_msg=str(positions))
    q3, _ = rope(q, k, offset=2)  # positions=None within the original length
    ref = reference_rope(q.numpy(), np.arange(2, 6), config.inv_freq(6), "interleaved", config.attention_factor)
    np.testing.assert_allclose(q3.numpy(), ref, atol=5e-6)


@dataclasses.dataclass(frozen=True)
class _Stepped(scaling.Scheme):
    """A length-dependent scheme written for this test: frequencies divided by 1, 2 and 4
    in three bands of lengths (up to 16, up to 32, beyond)."""

    name: ClassVar[str] = "stepped"
    dynamic: ClassVar[bool] = True
    BANDS: ClassVar[tuple] = (scaling.Regime("near", 1, 16), scaling.Regime("mid", 17, 32),
                              scaling.Regime("far", 33, None))

    def regime(self, seq_len=None):
        return next(r for r in self.BANDS if r.last is None or (seq_len or 1) <= r.last)

    def inv_freq(self, theta, rotary_dim, seq_len=None):
        return scaling.default_inv_freq(theta, rotary_dim) / 2.0 ** self.BANDS.index(self.regime(seq_len))


def test_a_new_length_dependent_scheme_needs_nothing_of_the_module():
    """The module asks the scheme for its frequencies at the call's length: a scheme it
    has never seen works, every band of lengths with its own frequencies."""
    config = RopeConfig(8, scaling=_Stepped())
    rope = RotaryEmbedding(config)
    q, k = _qk(d=8, t=4)
    for positions in ([0, 1, 2, 3], [20, 21, 22, 23], [40, 41, 42, 43], [25, 26, 27, 28], [60, 61, 62, 63]):
        seq_len = max(positions) + 1
        q2, _ = rope(q, k, torch.tensor(positions))
        ref = reference_rope(q.numpy(), np.array(positions), config.inv_freq(seq_len), "interleaved")
        np.testing.assert_allclose(q2.numpy(), ref, atol=5e-6, err_msg=str(positions))
    # seq_len overrides the length read from the positions
    q3, _ = rope(q, k, torch.tensor([0, 1, 2, 3]), seq_len=40)
    ref = reference_rope(q.numpy(), np.arange(4), config.inv_freq(40), "interleaved")
    np.testing.assert_allclose(q3.numpy(), ref, atol=5e-6)


def test_set_config_swaps_scheme():
    base = RopeConfig(16, layout="half")
    linear = RopeConfig(16, layout="half", scaling=scaling.Linear(4.0))
    rope = RotaryEmbedding(base)
    q, k = _qk()
    rope.set_config(linear)
    q2, _ = rope(q, k, offset=3)
    q3, _ = RotaryEmbedding(linear)(q, k, offset=3)
    torch.testing.assert_close(q2, q3, rtol=0, atol=0)
    # linear interpolation by 4: position 12 now turns like position 3 did
    q4, _ = RotaryEmbedding(base)(q[..., :1, :], k[..., :1, :], offset=3)
    q5, _ = rope(q[..., :1, :], k[..., :1, :], offset=12)
    torch.testing.assert_close(q4, q5, rtol=1e-5, atol=1e-6)


def test_dtype_cast_keeps_float32_rows_and_input_dtype():
    rope = RotaryEmbedding(RopeConfig(16)).to(torch.bfloat16)
    q, k = _qk()
    q2, k2 = rope(q.bfloat16(), k.bfloat16(), offset=2)
    assert q2.dtype == torch.bfloat16
    ref = reference_rope(
        q.bfloat16().float().numpy(), np.arange(2, 9), RopeConfig(16).inv_freq(), "interleaved"
    )
    np.testing.assert_allclose(q2.float().numpy(), ref, atol=2e-2)


def test_gradients_flow():
    rope = RotaryEmbedding(RopeConfig(16))
    q, k = _qk()
    q.requires_grad_(True)
    k.requires_grad_(True)
    q2, k2 = rope(q, k, offset=1)
    (q2 * k2.sum(1, keepdim=True)).sum().backward()
    # the rotation is orthogonal: d/dq sum(R q * w) = R^T w, nonzero everywhere
    assert q.grad is not None and k.grad is not None
    assert torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0


# -- any position, exactly --------------------------------------------------------------

FAR = 2**31 - 1


def exact_rope(x, positions, config):
    """float64 NumPy RoPE from rope_tables (angles reduced exactly on the host)."""
    cos, sin = rope_tables(config, np.asarray(positions))  # (.., T, R/2)
    if cos.ndim == 3:  # (B, T, R/2) -> (B, 1, T, R/2)
        cos, sin = cos[:, None], sin[:, None]
    return apply_rope(np.asarray(x, dtype=np.float64), cos, sin, layout=config.layout,
                      rotary_dim=config.rotary_dim)


@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_far_and_negative_positions_match_exact_tables(layout):
    """The largest int32 position, negative ones (rotation by the negative angle),
    (B, T) positions and a tensor offset, against float64 tables."""
    config = RopeConfig(16, rotary_dim=12, layout=layout)
    rope = RotaryEmbedding(config)
    q, k = _qk(t=4)
    batched = torch.tensor([[FAR, FAR - 1, -FAR, -3], [0, 2**30 + 7, -(2**31) + 5, 123_456_789]])
    for positions, kwargs in ((batched, {}), (batched[1], {}), (None, {"offset": FAR - 3}),
                              (None, {"offset": torch.tensor(-FAR)})):
        got_q, got_k = rope(q, k, positions, **kwargs)
        pos = positions.numpy() if positions is not None else int(kwargs["offset"]) + np.arange(4)
        np.testing.assert_allclose(got_q.numpy(), exact_rope(q.numpy(), pos, config), atol=3e-6)
        np.testing.assert_allclose(got_k.numpy(), exact_rope(k.numpy(), pos, config), atol=3e-6)
    # a negative position undoes the positive one
    back = rope(rope(q, None, batched), None, -batched)
    torch.testing.assert_close(back, q, atol=3e-6, rtol=0)


def test_heads_last_layout_and_q_alone():
    """heads_first=False takes (B, T, H, D) and equals the (B, H, T, D) result
    transposed; without k, q alone comes back."""
    rope = RotaryEmbedding(RopeConfig(16, layout="half"))
    q, k = _qk(t=5)
    for positions in (None, torch.tensor([4, FAR, -2, 0, 9]), torch.tensor([[1, 2, 3, 4, 5], [FAR] * 5])):
        offset = 3 if positions is None else 0
        want_q, want_k = rope(q, k, positions, offset=offset)
        got_q, got_k = rope(q.transpose(1, 2), k.transpose(1, 2), positions, offset=offset, heads_first=False)
        torch.testing.assert_close(got_q.transpose(1, 2), want_q, rtol=0, atol=0)
        torch.testing.assert_close(got_k.transpose(1, 2), want_k, rtol=0, atol=0)
        alone = rope(q, positions=positions, offset=offset)
        assert isinstance(alone, torch.Tensor)
        torch.testing.assert_close(alone, want_q, rtol=0, atol=0)


@pytest.mark.parametrize("offset", [10, -1, torch.tensor(10), torch.tensor(0)])
def test_positions_and_an_offset_together_are_refused(offset):
    rope = RotaryEmbedding(RopeConfig(16))
    q, k = _qk(t=3)
    positions = torch.arange(3)
    for call in (
        lambda: rope(q, k, positions, offset=offset),
        lambda: rope(q, positions=positions, offset=offset),
        lambda: rope.rotate_(q.clone(), k.clone(), positions, offset=offset),
        lambda: rope.tables_for(positions, offset=offset),
    ):
        with pytest.raises(ValueError, match="give positions or offset, not both.*got offset="):
            call()
    torch.testing.assert_close(rope(q, k, positions + 10)[0], rope(q, k, offset=10)[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotate_in_place_equals_forward(dtype):
    rope = RotaryEmbedding(RopeConfig(16, rotary_dim=8))
    q, k = (t.to(dtype) for t in _qk(t=6))
    positions = torch.tensor([[0, 5, FAR, -7, 3, 2], [9, 9, 9, 9, 9, 9]])
    want_q, want_k = rope(q, k, positions)
    q_ptr, k_ptr = q.data_ptr(), k.data_ptr()
    got_q, got_k = rope.rotate_(q, k, positions)
    assert got_q is q and got_k is k and q.data_ptr() == q_ptr and k.data_ptr() == k_ptr
    torch.testing.assert_close(q, want_q, rtol=0, atol=0)
    torch.testing.assert_close(k, want_k, rtol=0, atol=0)
    # (B, T, H, D), q alone, offset
    qt = _qk(t=6)[0].to(dtype).transpose(1, 2).contiguous()
    want = rope(qt, offset=FAR - 6, heads_first=False)
    assert rope.rotate_(qt, offset=FAR - 6, heads_first=False) is qt
    torch.testing.assert_close(qt, want, rtol=0, atol=0)


def test_no_position_sized_state():
    """A decode step at the largest int32 position: the module holds no buffer,
    parameter or table (nothing grows with the position's value)."""
    rope = RotaryEmbedding(RopeConfig(128))
    q, k = torch.randn(1, 32, 1, 128), torch.randn(1, 8, 1, 128)
    got_q, _ = rope(q, k, offset=FAR)
    np.testing.assert_allclose(got_q.numpy(), exact_rope(q.numpy(), [FAR], rope.config), atol=3e-6)
    assert not list(rope.buffers()) and not list(rope.parameters()) and not rope.state_dict()
    assert set(vars(rope)) - set(vars(torch.nn.Module())) == {"config"}


def test_threads_share_one_module():
    """8 threads calling one module with different lengths and positions get what
    serial calls give, out of place and in place (lengths past the kernels' parallel
    threshold included)."""
    rope = RotaryEmbedding(RopeConfig(32, layout="half"))
    jobs = []
    for i in range(8):
        t = 1 + 5 * i if i < 6 else 700 + i
        g = torch.Generator().manual_seed(i)
        q, k = torch.randn(2, 4, t, 32, generator=g), torch.randn(2, 2, t, 32, generator=g)
        positions = torch.randint(-FAR, FAR, (2, t), generator=g) if i % 2 else None
        jobs.append((q, k, positions, 0 if i % 2 else 1000 * i))
    want = [rope(q, k, p, offset=o) for q, k, p, o in jobs]
    got = [None] * len(jobs)
    in_place = [None] * len(jobs)
    start = threading.Barrier(len(jobs))

    def work(i):
        q, k, positions, offset = jobs[i]
        start.wait()
        for _ in range(20):
            got[i] = rope(q, k, positions, offset=offset)
            in_place[i] = rope.rotate_(q.clone(), k.clone(), positions, offset=offset)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for g, w in zip(got + in_place, want + want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


# -- torch.compile ------------------------------------------------------------------------


def test_compiles_without_graph_breaks_or_recompiles():
    """fullgraph, dynamic: the eager numbers, and no recompile for new position values."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    rope = RotaryEmbedding(RopeConfig(16, layout="half"))
    q, k = _qk()
    counter = CompileCounter()
    compiled = torch.compile(rope, fullgraph=True, dynamic=True, backend=counter)
    pos = torch.tensor([[0, 1, 2, 3, 4, 5, 6], [3, 4, 5, 6, 7, 8, FAR]])
    for positions in (pos, pos + 1000, -pos, pos * 3 - FAR):
        for got, want in zip(compiled(q, k, positions), rope(q, k, positions), strict=True):
            torch.testing.assert_close(got, want, atol=2e-6, rtol=0)
    assert counter.frame_count == 1
    torch._dynamo.reset()


def test_compiled_length_dependent_scheme_reads_its_length_when_it_runs():
    """Without seq_len the compiled call reads max(positions) + 1 as eager does (the
    limbs come from an op at call time); with it, that length."""
    torch._dynamo.reset()
    config = RopeConfig(8, scaling=scaling.DynamicNTK(4.0, 16))
    rope = RotaryEmbedding(config)
    q, k = _qk(d=8, t=4)
    positions = torch.tensor([40, 41, 42, 43])
    compiled = torch.compile(rope, fullgraph=True, backend="eager")
    for g, w in zip(compiled(q, k, positions), rope(q, k, positions), strict=True):
        torch.testing.assert_close(g, w, atol=2e-6, rtol=0)
    got = compiled(q, k, positions, seq_len=44)
    for g, w in zip(got, rope(q, k, positions), strict=True):
        torch.testing.assert_close(g, w, atol=2e-6, rtol=0)
    # positions=None: the length is offset + T, known without reading positions
    got = compiled(q, k, None, 40)
    ref = reference_rope(q.numpy(), np.arange(40, 44), config.inv_freq(44), "interleaved",
                         config.attention_factor)
    np.testing.assert_allclose(got[0].numpy(), ref, atol=5e-6)
    torch._dynamo.reset()


def test_errors():
    with pytest.raises(TypeError, match="RopeConfig"):
        RotaryEmbedding({"head_dim": 16})
    with pytest.raises(TypeError):
        RotaryEmbedding(RopeConfig(16), max_positions=64)  # no tables: nothing to size
    rope = RotaryEmbedding(RopeConfig(16))
    q, k = _qk()
    with pytest.raises(TypeError, match="integer tensor"):
        rope(q, k, torch.arange(7.0))
    with pytest.raises(TypeError, match="torch tensor"):
        rope(q, k, list(range(7)))
    with pytest.raises(ValueError, match="T=7"):
        rope(q, k, torch.arange(6))
    with pytest.raises(ValueError, match="batch"):
        rope(q, k, torch.zeros(3, 7, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, H, T, D\)"):
        rope(q[0], k[0])
    with pytest.raises(ValueError, match=r"\(B, T, H, D\)"):
        rope(q[0], k[0], heads_first=False)
    with pytest.raises(ValueError, match="same B and T"):
        rope(q, torch.cat([k, k]))
    with pytest.raises(ValueError, match="within"):
        rope(q, k, torch.full((7,), 2**40))
    with pytest.raises(TypeError, match="offset"):
        rope(q, k, offset=1.5)
    with pytest.raises(TypeError, match="offset"):
        rope(q, k, offset=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="rotary dim 16 <= the last dim of x"):
        rope(q[..., :8], k[..., :8])  # head dim 8 < rotary dim 16
