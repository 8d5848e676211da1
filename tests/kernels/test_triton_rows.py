"""The Triton kernel's exact mode (cos/sin computed in the kernel from each token's integer
position and the frequencies' turn limbs) and the bounds check of its table mode, against
the float64 NumPy reference: on a GPU where there is one, else on CPU tensors under
Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1 then).

Shapes: B batch, H heads, T time, D head dim, R rotary dim.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton", reason="triton is not installed: the Triton kernel cannot run")

from ropelab import RopeConfig, apply_rope, rope_tables, scaling  # noqa: E402
from ropelab.kernels import _triton, triton_gpu  # noqa: E402
from ropelab.rows import MAX_EXACT_POSITION, limbs_for  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
if not CUDA and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU, and Triton's interpreter is off (TRITON_INTERPRET=1)", allow_module_level=True)

# the rows are within 3e-7 of the truth; x's entries are O(1) and a rotated pair mixes two
FLOAT32_BOUND = 3e-7
FAR = [[0, 1, -1, -5, 2**31 - 1, -(2**31)], [10**9, -(10**9), 2**31 - 2, 123_456_789, 4096, 7]]


@pytest.fixture(autouse=True)
def triton_on_this_device(monkeypatch):
    """Let triton_gpu take this device's tensors (on the CPU, under the interpreter)."""
    monkeypatch.setattr(triton_gpu, "devices", (DEVICE,))


def reference(x, config, positions):
    """x ``(B, H, T, D)`` rotated in float64 by NumPy tables at ``positions (B, T)``."""
    cos, sin = rope_tables(config, np.asarray(positions))  # (B, T, R/2) float64
    return apply_rope(x.double().cpu().numpy(), cos[:, None], sin[:, None], layout=config.layout,
                      rotary_dim=config.rotary_dim)


def worst(got, want):
    return float(np.max(np.abs(got.double().cpu().numpy() - want)))


def bound(x, factor=1.0):
    """A rotated entry ``a c - b s``: both rows' error times |x|, and float32 rounding."""
    return (2 * FLOAT32_BOUND * max(1.0, factor) + 2.0**-22) * float(x.abs().max())


CONFIGS = {
    "llama-half": RopeConfig(32, theta=500000.0, layout="half"),
    "interleaved-partial": RopeConfig(24, rotary_dim=16, theta=10000.0, layout="interleaved"),
    "yarn": RopeConfig(16, layout="half", scaling=scaling.YaRN(4.0, 64)),
}


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_exact_mode_equals_the_float64_reference_at_far_and_negative_positions(name, dtype):
    config = CONFIGS[name]
    B, T = len(FAR), len(FAR[0])
    g = torch.Generator().manual_seed(0)
    q = torch.randn(B, 3, T, config.head_dim, generator=g).to(DEVICE)
    k = torch.randn(B, 2, T, config.head_dim, generator=g).to(DEVICE)
    positions = torch.tensor(FAR, dtype=getattr(torch, dtype)).to(DEVICE)
    out = triton_gpu.rope_at((q, k), config, positions[:, None, :])  # (B, 1, T): one row per token
    assert out is not None
    for got, x in zip(out, (q, k), strict=True):
        assert worst(got, reference(x, config, FAR)) <= bound(x, config.attention_factor)


def test_exact_rows_themselves():
    """Rotating the unit vector (1, 0) of every pair reads the rows out: cos and sin."""
    config = CONFIGS["llama-half"]
    half = config.rotary_dim // 2
    x = torch.zeros(2, 1, len(FAR[0]), config.head_dim, device=DEVICE)
    x[..., :half] = 1.0
    (got,) = triton_gpu.rope_at((x,), config, torch.tensor(FAR, device=DEVICE)[:, None, :])
    cos, sin = rope_tables(config, np.asarray(FAR))
    assert worst(got[:, 0, :, :half], cos) <= FLOAT32_BOUND
    assert worst(got[:, 0, :, half:], sin) <= FLOAT32_BOUND


def test_exact_mode_in_place_inverse_and_out_buffers():
    config = CONFIGS["interleaved-partial"]
    x = torch.randn(2, 4, 6, config.head_dim, device=DEVICE)
    positions = torch.tensor(FAR, device=DEVICE)[:, None, :]
    want = reference(x, config, FAR)
    buf = torch.empty_like(x)
    (into,) = triton_gpu.rope_at((x,), config, positions, outs=(buf,))
    assert into is buf and worst(buf, want) <= bound(x)
    y = x.clone()
    (same,) = triton_gpu.rope_at((y,), config, positions, inplace=True)
    assert same is y and worst(y, want) <= bound(x)
    (back,) = triton_gpu.rope_at((y,), config, positions, inverse=True)
    assert worst(back, x.double().cpu().numpy()) <= 2 * bound(x)


def test_exact_mode_refuses_to_guess_a_length():
    """A length-dependent scheme needs seq_len (max(positions) + 1 would be a host sync);
    with it, the rows are those of NumPy's frequencies for that length."""
    config = RopeConfig(16, layout="half", scaling=scaling.DynamicNTK(2.0, 64))
    x = torch.randn(1, 2, 4, 16, device=DEVICE)
    positions = torch.tensor([[0, 5, 99, 2**31 - 1]], device=DEVICE)
    assert triton_gpu.rope_at((x,), config, positions[:, None, :]) is None
    (got,) = triton_gpu.rope_at((x,), config, positions[:, None, :], seq_len=2**31)
    cos, sin = rope_tables(config, positions.cpu().numpy(), seq_len=2**31)
    want = apply_rope(x.double().cpu().numpy(), cos[:, None], sin[:, None], layout="half")
    assert worst(got, want) <= bound(x)


def test_exact_mode_past_the_exact_range_gives_nan():
    config = CONFIGS["llama-half"]
    x = torch.ones(1, 1, 3, config.head_dim, device=DEVICE)
    positions = torch.tensor([[MAX_EXACT_POSITION, MAX_EXACT_POSITION + 1, -MAX_EXACT_POSITION - 1]], device=DEVICE)
    limbs = torch.from_numpy(limbs_for(config).copy()).to(DEVICE)
    (got,) = _triton.rope((x,), None, None, layout="half", positions=positions[:, None, :], limbs=limbs)
    assert torch.isfinite(got[0, 0, 0]).all()
    assert torch.isnan(got[0, 0, 1:]).all()


def test_table_mode_bounds_check_gives_nan_not_a_read_past_the_table():
    """Positions index the given (P, R/2) table: one outside 0..P-1 rotates its token to
    NaN; the others are rotated by their own rows."""
    config = RopeConfig(16, layout="half")
    cos, sin = (torch.from_numpy(t).float().to(DEVICE) for t in rope_tables(config, np.arange(8)))
    x = torch.randn(1, 2, 5, 16, device=DEVICE)
    positions = torch.tensor([[0, 7, 8, -1, 3]], device=DEVICE)
    (got,) = _triton.rope((x,), cos, sin, layout="half", positions=positions[:, None, :])
    bad = torch.tensor([False, False, True, True, False], device=DEVICE)
    assert torch.isnan(got[0, :, bad]).all()
    want = reference(x, config, [[0, 7, 0, 0, 3]])
    keep = (~bad).cpu().numpy()
    assert np.max(np.abs(got[0][:, ~bad].double().cpu().numpy() - want[0][:, keep])) <= 1e-6


@pytest.mark.parametrize("name", ["llama-half", "interleaved-partial"])
@pytest.mark.parametrize("heads_first", [True, False])
def test_rotary_embedding_makes_its_rows_in_the_kernel(name, heads_first, monkeypatch):
    """RotaryEmbedding's forward and rotate_ on the kernel's device: one launch with the
    rows made in it (counted), equal to the float64 reference at far and negative
    positions; the fresh outputs keep x's memory layout; the frequencies' limbs are
    copied to the device once, not per call."""
    from ropelab import rows
    from ropelab.torch import RotaryEmbedding

    launches = []
    real = triton_gpu._rotate_at
    monkeypatch.setattr(triton_gpu, "_rotate_at", lambda *a, **kw: launches.append(kw["inplace"]) or real(*a, **kw))
    config = CONFIGS[name]
    rope = RotaryEmbedding(config)
    B, T = len(FAR), len(FAR[0])
    g = torch.Generator().manual_seed(1)
    shape = (lambda h: (B, h, T, config.head_dim)) if heads_first else (lambda h: (B, T, h, config.head_dim))
    q, k = torch.randn(shape(3), generator=g).to(DEVICE), torch.randn(shape(2), generator=g).to(DEVICE)
    positions = torch.tensor(FAR, device=DEVICE)
    heads = (lambda x: x) if heads_first else (lambda x: x.transpose(1, 2))  # to (B, H, T, D)
    copies = len(rows._ON_DEVICE)
    with torch.no_grad():
        got_q, got_k = rope(q, k, positions, heads_first=heads_first)
        qq, kk = q.clone(), k.clone()
        done = rope.rotate_(qq, kk, positions, heads_first=heads_first)
        assert done[0] is qq and done[1] is kk
        rope(q, k, positions, heads_first=heads_first)
    assert launches == [False, True, False]
    assert len(rows._ON_DEVICE) <= copies + 1
    assert got_q.is_contiguous() and got_k.is_contiguous()
    for got, x in ((got_q, q), (got_k, k), (qq, q), (kk, k)):
        assert worst(heads(got), reference(heads(x), config, FAR)) <= bound(x)
    # autograd recording: the differentiable path, not the kernel
    with torch.enable_grad():
        out = rope(q.clone().requires_grad_(True), positions=positions, heads_first=heads_first)
    assert len(launches) == 3 and out.requires_grad
    assert worst(heads(out.detach()), reference(heads(q), config, FAR)) <= bound(q)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_rows_made_by_the_kernel(name):
    """kernels.turn_rows on the kernel's device: one launch, the exact rows (any shape of
    positions), tensors on that device; what RotaryEmbedding.rows gives there."""
    from ropelab import kernels
    from ropelab.torch import RotaryEmbedding

    config = CONFIGS[name]
    positions = torch.tensor(FAR, device=DEVICE)  # (2, 6)
    got = kernels.turn_rows(positions, limbs_for(config), attention_factor=config.attention_factor)
    assert got is not None and all(isinstance(t, torch.Tensor) and t.device == positions.device for t in got)
    assert got[0].shape == (2, 6, config.rotary_dim // 2) and got[0].dtype == torch.float32
    for g, w in zip(got, rope_tables(config, np.asarray(FAR)), strict=True):
        assert worst(g, w) <= FLOAT32_BOUND * max(1.0, config.attention_factor)
    rows = RotaryEmbedding(config).rows(positions)
    for r, g in zip(rows, got, strict=True):
        torch.testing.assert_close(r, g, rtol=0, atol=0)
    empty = kernels.turn_rows(positions[:, :0], limbs_for(config))
    assert empty[0].shape == (2, 0, config.rotary_dim // 2)
