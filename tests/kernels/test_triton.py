"""The Triton RoPE kernel against the reference path: on a GPU where there is one, else
on CPU tensors under Triton's interpreter (conftest sets TRITON_INTERPRET=1 then).

The interpreter rounds float32 -> bfloat16 by truncation (a GPU rounds to nearest even),
so bfloat16 results are held to one bfloat16 step here; float32 and float16 to rounding.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from ropelab import RopeConfig, apply_rope, apply_rope_, kernels, rope_tables  # noqa: E402
from ropelab.kernels import _triton, triton_gpu  # noqa: E402
from ropelab.torch import rope_op  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
if not CUDA and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU, and Triton's interpreter is off (TRITON_INTERPRET=1)", allow_module_level=True)

# largest |error| relative to max(1, |value|): float32/float16 round once like the
# reference; bfloat16 one step (the interpreter truncates)
TOL = {torch.float32: 1e-6, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}


def _tables(cfg, n):
    return tuple(torch.from_numpy(t).float().to(DEVICE) for t in rope_tables(cfg, np.arange(n)))


def _close(got, want, dtype):
    got, want = got.double().cpu(), want.double().cpu()
    err = ((got - want).abs() / want.abs().clamp(min=1.0)).max().item()
    assert err <= TOL[dtype], f"max relative error {err:.3g}"


def _reference(x, cos, sin, layout, positions=None, inverse=False):
    """The eager reference path, in float64 on the CPU."""
    out = kernels.reference.rotate(x.cpu().double(), cos.cpu().double(), sin.cpu().double(), layout=layout,
                            positions=None if positions is None else positions.cpu(), inverse=inverse)
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", ["interleaved", "half"])
@pytest.mark.parametrize("rotary_dim", [16, 10])
@pytest.mark.parametrize("positions", ["none", "B1T", "T"])
@pytest.mark.parametrize("inplace", [False, True])
def test_q_and_k_in_one_launch_match_the_reference(dtype, layout, rotary_dim, positions, inplace):
    B, HQ, HK, T, D, P = 2, 5, 3, 7, 16, 40
    cfg = RopeConfig(D, rotary_dim=rotary_dim, layout=layout)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(B, HQ, T, D, generator=g).to(DEVICE, dtype)
    k = torch.randn(B, HK, T, D, generator=g).to(DEVICE, dtype)
    if positions == "none":
        cos, sin = _tables(cfg, T)
        pos = None
    else:
        cos, sin = _tables(cfg, P)
        shape = (B, 1, T) if positions == "B1T" else (T,)
        pos = torch.randint(0, P, shape, generator=g).to(DEVICE)
    want = [_reference(x, cos, sin, layout, pos) for x in (q, k)]
    xs = (q.clone(), k.clone()) if inplace else (q, k)
    got = _triton.rope(xs, cos, sin, layout=layout, positions=pos, inplace=inplace)
    assert got is not None and len(got) == 2
    for g_, w, x in zip(got, want, xs, strict=True):
        assert g_.dtype == dtype and g_.shape == x.shape
        if inplace:
            assert g_ is x
        _close(g_, w, dtype)


def test_packed_variable_length_batch():
    """Three sequences packed into one row (varlen): positions restart per sequence."""
    cfg = RopeConfig(16, layout="half")
    cos, sin = _tables(cfg, 64)
    lengths = (5, 9, 3)
    pos = torch.cat([torch.arange(n) for n in lengths]).to(DEVICE)  # (17,)
    x = torch.randn(1, 4, sum(lengths), 16).to(DEVICE)
    (got,) = _triton.rope((x,), cos, sin, layout="half", positions=pos)
    start = 0
    for n in lengths:  # each sequence alone, from position 0
        part = x[:, :, start:start + n]
        _close(got[:, :, start:start + n], _reference(part, cos[:n], sin[:n], "half"), torch.float32)
        start += n


def test_inverse_undoes_the_rotation_and_far_positions():
    cfg = RopeConfig(32, layout="interleaved")
    big = np.array([0, 1, 2**20, 2**31 - 1])
    cos, sin = (torch.from_numpy(t).float().to(DEVICE) for t in rope_tables(cfg, big))
    x = torch.randn(2, 3, 4, 32).to(DEVICE)
    (y,) = _triton.rope((x,), cos, sin, layout="interleaved")
    _close(y, _reference(x, cos, sin, "interleaved"), torch.float32)
    (back,) = _triton.rope((y,), cos, sin, layout="interleaved", inverse=True)
    _close(back, x.double(), torch.float32)


def test_strided_inputs_and_three_dim_x():
    """q as a transposed view of a (B, T, H, D) projection; x without a batch dim."""
    cfg = RopeConfig(16, layout="half")
    cos, sin = _tables(cfg, 6)
    proj = torch.randn(2, 6, 4, 16).to(DEVICE)
    q = proj.transpose(1, 2)  # (B, H, T, D), not contiguous
    (got,) = _triton.rope((q,), cos, sin, layout="half")
    _close(got, _reference(q, cos, sin, "half"), torch.float32)
    x3 = torch.randn(4, 6, 16).to(DEVICE)
    (got3,) = _triton.rope((x3,), cos, sin, layout="half")
    assert got3.shape == x3.shape
    _close(got3, _reference(x3, cos, sin, "half"), torch.float32)


def test_declines_what_it_does_not_cover():
    cfg = RopeConfig(16, layout="half")
    cos, sin = _tables(cfg, 6)
    x = torch.randn(2, 3, 6, 16).to(DEVICE)
    per_head = cos[None, None].expand(2, 3, 6, 8).contiguous()
    assert _triton.rope((x,), per_head, per_head, layout="half") is None  # rows differ per head
    assert _triton.rope((x.double(),), cos, sin, layout="half") is None  # float64 x
    assert _triton.rope((x,), cos.double(), sin.double(), layout="half") is None  # float64 tables
    assert _triton.rope((x[..., ::2],), cos[:, :4], sin[:, :4], layout="half") is None  # D not unit stride
    assert _triton.rope((x, torch.randn(2, 3, 5, 16).to(DEVICE)), cos, sin, layout="half") is None  # T differs
    assert _triton.rope((x[:, :, :0],), cos[:0], sin[:0], layout="half") is None  # empty


@pytest.fixture
def triton_on_this_device(monkeypatch):
    """Send this device's tensors to the Triton kernel through ropelab.kernels (on the CPU,
    under the interpreter), and count the kernel's calls."""
    monkeypatch.setattr(triton_gpu, "devices", (DEVICE,))
    calls = []
    original = _triton.rope

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(_triton, "rope", spy)
    return calls


def test_apply_rope_and_apply_rope_in_place_dispatch_to_triton(triton_on_this_device):
    cfg = RopeConfig(16, rotary_dim=12, layout="interleaved")
    cos64, sin64 = rope_tables(cfg, np.arange(30))  # numpy float64 tables, as users pass them
    x = torch.randn(2, 3, 5, 16).to(DEVICE, torch.bfloat16)
    pos = torch.tensor([[3, 29, 0, 7, 7]]).to(DEVICE)
    want = _reference(x, torch.from_numpy(cos64), torch.from_numpy(sin64), "interleaved", pos)
    got = apply_rope(x, cos64, sin64, layout="interleaved", rotary_dim=cfg.rotary_dim, positions=pos)
    y = x.clone()
    assert apply_rope_(y, cos64, sin64, layout="interleaved", rotary_dim=cfg.rotary_dim, positions=pos) is y
    assert triton_on_this_device == [True, True]
    _close(got, want, torch.bfloat16)
    torch.testing.assert_close(y, got, rtol=0, atol=0)


@pytest.mark.parametrize("rotary_dim", [16, 10])
def test_out_writes_the_buffers_in_one_launch(triton_on_this_device, rotary_dim):
    """apply_rope((q, k), ..., out=(bq, bk)) is one launch into the buffers (one a
    (B, T, H, D) array seen as (B, H, T, D)), bit for bit the kernel's fresh outputs."""
    cfg = RopeConfig(16, rotary_dim=rotary_dim, layout="half")
    cos, sin = _tables(cfg, 30)
    pos = torch.tensor([[3, 29, 0, 7, 7]]).to(DEVICE)
    q = torch.randn(2, 4, 5, 16).to(DEVICE, torch.bfloat16)
    k = torch.randn(2, 2, 5, 16).to(DEVICE, torch.bfloat16)
    want = apply_rope((q, k), cos, sin, layout="half", rotary_dim=rotary_dim, positions=pos)
    bq = torch.full((2, 5, 4, 16), float("nan"), dtype=torch.bfloat16, device=DEVICE).transpose(1, 2)
    bk = torch.full_like(k, float("nan"))
    out = apply_rope((q, k), cos, sin, layout="half", rotary_dim=rotary_dim, positions=pos, out=(bq, bk))
    assert out[0] is bq and out[1] is bk
    assert triton_on_this_device == [True, True]
    assert torch.equal(bq, want[0]) and torch.equal(bk, want[1])


def test_training_through_the_op_uses_the_kernel_both_ways(triton_on_this_device):
    """Forward and backward (the inverse rotation) of rope_op.rotate go to Triton; the
    gradient equals the reference path's."""
    cfg = RopeConfig(16, layout="half")
    cos, sin = _tables(cfg, 9)
    x = torch.randn(2, 3, 9, 16).to(DEVICE).requires_grad_(True)
    w = torch.randn(2, 3, 9, 16).to(DEVICE)
    (rope_op.rotate(x, cos, sin, "half") * w).sum().backward()
    assert triton_on_this_device == [True, True]  # forward, then the backward's rotation
    want = _reference(w, cos, sin, "half", inverse=True)  # d/dx sum(R x * w) = R^T w
    _close(x.grad, want, torch.float32)


def test_qk_inference_is_one_launch(triton_on_this_device):
    cfg = RopeConfig(16, layout="half")
    cos, sin = _tables(cfg, 4)
    q, k = torch.randn(1, 8, 4, 16).to(DEVICE), torch.randn(1, 2, 4, 16).to(DEVICE)
    with torch.no_grad():
        got_q, got_k = rope_op.rotate_qk(q, k, cos, sin, "half")
    assert triton_on_this_device == [True]
    _close(got_q, _reference(q, cos, sin, "half"), torch.float32)
    _close(got_k, _reference(k, cos, sin, "half"), torch.float32)


def test_disabled_by_the_environment(monkeypatch):
    monkeypatch.setenv(kernels.DISABLE_TRITON_ENV, "1")
    kernels.reset_backend()
    try:
        assert kernels.backend("cuda") == "reference"
        assert "GPU tensors: reference path (triton disabled by ROPELAB_DISABLE_TRITON=1)" in kernels.backend_note()
    finally:
        monkeypatch.delenv(kernels.DISABLE_TRITON_ENV)
        kernels.reset_backend()  # the next caller looks again
    assert kernels.backend("cuda") == "triton"
