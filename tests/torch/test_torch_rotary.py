"""ropelab.torch.RotaryEmbedding against a float64 NumPy reference and RoPE's identities."""

import dataclasses
from typing import ClassVar

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ropelab import RopeConfig, scaling  # noqa: E402
from ropelab.torch import RotaryEmbedding, rope_op  # noqa: E402


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
    rope = RotaryEmbedding(config, max_positions=32)
    q, k = _qk()
    q2, k2 = rope(q, k, offset=5)
    pos = np.arange(5, 12)
    inv = config.inv_freq()
    np.testing.assert_allclose(q2.numpy(), reference_rope(q.numpy(), pos, inv, layout), atol=2e-6)
    np.testing.assert_allclose(k2.numpy(), reference_rope(k.numpy(), pos, inv, layout), atol=2e-6)


def test_batch_positions_gather_per_row():
    config = RopeConfig(16, layout="half")
    rope = RotaryEmbedding(config, max_positions=16)
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


def test_tables_grow_and_are_not_rebuilt_per_call():
    config = RopeConfig(8, layout="half")
    rope = RotaryEmbedding(config, max_positions=4)
    q, k = _qk(d=8, t=3)
    rope(q, k)
    ptr = rope.cos.data_ptr()
    rope(q, k, offset=1)
    assert rope.cos.data_ptr() == ptr  # same buffer: no recomputation
    q2, _ = rope(q, k, torch.tensor([2, 9, 40]))  # past the table: grows by doubling
    assert rope.max_positions == 64
    ref = reference_rope(q.numpy(), np.array([2, 9, 40]), config.inv_freq(), "half")
    np.testing.assert_allclose(q2.numpy(), ref, atol=2e-6)
    assert rope.cos.dtype == torch.float32
    assert "cos" not in rope.state_dict()  # non-persistent


def test_far_positions_are_exact():
    # float32 angles are wrong by ~0.03 rad at 1e6; the cached tables are formed in float64
    config = RopeConfig(8, layout="half")
    rope = RotaryEmbedding(config, max_positions=4)
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
    rope = RotaryEmbedding(config, max_positions=8)
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
def test_dynamic_tables_longer_than_the_original_length_keep_base_frequencies(scheme):
    """Tables built (or grown) past the original length still rotate short sequences
    with the base frequencies: the static tables are the short regime, not their size's."""
    config = RopeConfig(8, scaling=scheme)
    rope = RotaryEmbedding(config, max_positions=64)  # 4x the original length
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
    """The module asks the scheme for its regimes: one it has never seen is cached by
    them, each regime's tables built once and reused for every length of it."""
    config = RopeConfig(8, scaling=_Stepped())
    rope = RotaryEmbedding(config, max_positions=8)
    q, k = _qk(d=8, t=4)
    built = {}
    for positions in ([0, 1, 2, 3], [20, 21, 22, 23], [40, 41, 42, 43], [25, 26, 27, 28], [60, 61, 62, 63]):
        seq_len = max(positions) + 1
        q2, _ = rope(q, k, torch.tensor(positions))
        ref = reference_rope(q.numpy(), np.array(positions), config.inv_freq(seq_len), "interleaved")
        np.testing.assert_allclose(q2.numpy(), ref, atol=5e-6, err_msg=str(positions))
        for regime, (cos, _) in rope._regimes.items():
            assert built.setdefault(regime, cos) is cos  # never rebuilt
    assert set(rope._regimes) == {_Stepped.BANDS[1], _Stepped.BANDS[2]}  # "near" is rope.cos
    assert rope._regimes[_Stepped.BANDS[1]][0].shape[0] == 32  # no rows past the regime's end
    assert rope._regimes[_Stepped.BANDS[2]][0].shape[0] == 66  # twice its first length


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


def test_dtype_cast_keeps_float32_tables_and_input_dtype():
    rope = RotaryEmbedding(RopeConfig(16)).to(torch.bfloat16)
    assert rope.cos.dtype == torch.float32
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


def test_compiles_without_graph_breaks():
    rope = RotaryEmbedding(RopeConfig(16, layout="half"), max_positions=64)
    q, k = _qk()
    compiled = torch.compile(rope, fullgraph=True, backend="eager")
    pos = torch.tensor([[0, 1, 2, 3, 4, 5, 6], [3, 4, 5, 6, 7, 8, 9]])
    for args in ((None, 4), (pos, 0)):
        torch.testing.assert_close(compiled(q, k, *args), rope(q, k, *args))


def test_growth_inside_compile_is_a_clear_error():
    rope = RotaryEmbedding(RopeConfig(16), max_positions=4)
    q, k = _qk()
    compiled = torch.compile(rope, fullgraph=True, backend="eager")
    with pytest.raises(RuntimeError, match=r"ensure\(12\)"):
        compiled(q, k, None, 5)
    rope.ensure(12)
    torch.testing.assert_close(compiled(q, k, None, 5), rope(q, k, None, 5))


def test_errors():
    with pytest.raises(TypeError, match="RopeConfig"):
        RotaryEmbedding({"head_dim": 16})
    with pytest.raises(ValueError, match="max_positions"):
        RotaryEmbedding(RopeConfig(16), max_positions=0)
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
    with pytest.raises(ValueError, match=">= 0"):
        rope(q, k, torch.arange(-1, 6))
    with pytest.raises(ValueError, match="offset"):
        rope(q, k, offset=-2)


def test_positions_path_checks_what_the_kernel_would_trust():
    """The positions path hands checked arguments straight to the kernels; anything it
    did not check goes through rotate_qk's checks instead and fails there, clearly."""
    rope = RotaryEmbedding(RopeConfig(16))
    q, k = _qk()
    positions = torch.arange(3, 10)
    want = rope.tables_for(positions)
    with torch.no_grad():
        got_q, got_k = rope(q, k, positions)
        ref_q = rope_op.rotate(q, *want, rope.config.layout)
        ref_k = rope_op.rotate(k, *want, rope.config.layout)
    torch.testing.assert_close(got_q, ref_q, rtol=0, atol=0)
    torch.testing.assert_close(got_k, ref_k, rtol=0, atol=0)
    with pytest.raises(ValueError, match="rotary dim 16 <= the last dim of x"):
        rope(q[..., :8], k[..., :8], positions)  # head dim 8 < rotary dim 16
    with pytest.raises(ValueError, match="do not broadcast"):
        rope(q, torch.cat([k, k]), positions.expand(q.shape[0], 7))  # k's batch differs


def test_decode_plan_follows_every_change_of_the_tables():
    """The positions path keeps the kernels' view of the tables between calls; a new
    schedule, growth, a device/dtype move or an in-place write must not leave it stale."""
    base = RopeConfig(16, layout="half")
    linear = RopeConfig(16, layout="half", scaling=scaling.Linear(4.0))
    rope = RotaryEmbedding(base, max_positions=32)
    q, k = _qk(t=1)
    pos = torch.tensor([[9], [20]])

    def check(config, scale=1.0):
        with torch.no_grad():
            got = rope(q, k, pos)
        for g, x in zip(got, (q, k), strict=True):
            want = scale * reference_rope(x.numpy(), pos.numpy(), config.inv_freq(), "half")
            np.testing.assert_allclose(g.numpy(), want, atol=4e-6)

    check(base)
    rope.set_config(linear)  # same size, new values (the allocator may reuse the address)
    check(linear)
    pos = torch.tensor([[9], [100]])  # grows the tables
    check(linear)
    assert rope.max_positions == 128
    rope.to(torch.float64)  # tables stay float32 (new tensors all the same)
    check(linear)
    with torch.no_grad():
        rope.cos.copy_(rope.tables_for(torch.arange(128))[0])  # an in-place write, same values
    check(linear)
    with torch.no_grad():
        rope.cos.mul_(2.0)
        rope.sin.mul_(2.0)  # in place: every rotated vector doubles
    check(linear, scale=2.0)
