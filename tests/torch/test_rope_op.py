"""ropelab.torch.rope_op: the differentiable, compilable rotation op of the torch front end.

Held to the float64 reference (forward), to autograd through the eager reference path
(backward), to gradcheck in float64, and to itself under torch.compile(fullgraph=True).
Shapes: B batch, H heads, T time, D head dim, R rotary dim, P table rows.
"""

from __future__ import annotations

import numpy as np
import pytest

from ropelab import RopeConfig, kernels, rope_tables

torch = pytest.importorskip("torch")
from ropelab.torch import rope_op  # noqa: E402

numba_only = pytest.mark.skipif(kernels.backend() != "numba", reason="numba kernels not available")


def _tables(D, R, layout, positions, dtype=torch.float32):
    cfg = RopeConfig(D, rotary_dim=R, layout=layout)
    cos, sin = rope_tables(cfg, np.asarray(positions))
    return torch.from_numpy(cos).to(dtype), torch.from_numpy(sin).to(dtype)


def _reference_rotate(x, cos, sin, layout, positions=None):
    """The eager reference path, differentiable through torch's own autograd."""
    return kernels.reference.rotate(x, cos, sin, layout=layout, positions=positions)


@pytest.mark.parametrize("layout", ["interleaved", "half"])
@pytest.mark.parametrize("R", [16, 6])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("with_positions", [False, True])
def test_forward_and_backward_match_reference(fused_calls, layout, R, dtype, with_positions):
    B, H, T, D = 2, 3, 5, 16
    table_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    if with_positions:
        cos, sin = _tables(D, R, layout, np.arange(40), table_dtype)
        positions = torch.tensor([[3, 39, 0, 7, 7], [1, 2, 3, 4, 5]])[:, None, :]  # (B, 1, T)
    else:
        cos, sin = _tables(D, R, layout, np.arange(T) + 100, table_dtype)
        positions = None
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(B, H, T, D, generator=gen).to(dtype)
    grad = torch.randn(B, H, T, D, generator=gen).to(dtype)

    x1 = x.clone().requires_grad_(True)
    y1 = rope_op.rotate(x1, cos, sin, layout, positions=positions)
    y1.backward(grad)
    if fused_calls is not None:
        assert fused_calls == ["rope_rows_out_serial"] * 2  # forward, then backward

    x2 = x.clone().requires_grad_(True)
    y2 = _reference_rotate(x2, cos, sin, layout, positions)
    y2.backward(grad)

    tol = {torch.float32: 1e-6, torch.float64: 1e-12, torch.bfloat16: 2.0**-7}[dtype]
    assert y1.dtype == dtype and y1.shape == x.shape and y1.is_contiguous()
    torch.testing.assert_close(y1.double(), y2.double(), atol=tol * 4, rtol=tol)
    torch.testing.assert_close(x1.grad.double(), x2.grad.double(), atol=tol * 4, rtol=tol)


def test_gradcheck_float64_with_table_gradients():
    gen = torch.Generator().manual_seed(1)
    for layout in ("interleaved", "half"):
        cos, sin = _tables(6, 4, layout, np.arange(3) * 3, torch.float64)
        cos = (cos + 0.01 * torch.randn(cos.shape, generator=gen, dtype=torch.float64)).requires_grad_()
        sin = sin.clone().requires_grad_()
        x = torch.randn(2, 1, 3, 6, dtype=torch.float64, generator=gen, requires_grad=True)
        fn = lambda x, c, s, layout=layout: rope_op.rotate(x, c, s, layout)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x, cos, sin))
        assert torch.autograd.gradgradcheck(fn, (x, cos, sin))


def test_gradcheck_float64_with_positions():
    gen = torch.Generator().manual_seed(2)
    cos, sin = _tables(4, 4, "half", np.arange(6), torch.float64)
    cos, sin = cos.requires_grad_(), sin.requires_grad_()
    positions = torch.tensor([5, 0, 2, 2])  # a repeated row: its gradient accumulates
    x = torch.randn(2, 4, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    fn = lambda x, c, s: rope_op.rotate(x, c, s, "half", positions=positions)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, cos, sin))
    assert torch.autograd.gradgradcheck(fn, (x, cos, sin))


def test_backward_is_the_inverse_rotation():
    """For unit tables the gradient of <R x, g> is R^T g = R(-phi) g."""
    cos, sin = _tables(8, 8, "interleaved", np.arange(6), torch.float64)
    x = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    g = torch.randn(6, 8, dtype=torch.float64)
    (rope_op.rotate(x, cos, sin, "interleaved") * g).sum().backward()
    back = rope_op.rotate(x.grad, cos, sin, "interleaved")
    torch.testing.assert_close(back, g, atol=1e-12, rtol=0)


def test_numpy_tables_are_accepted():
    cfg = RopeConfig(8, layout="half")
    cos, sin = rope_tables(cfg, np.arange(5))
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(rope_op.rotate(x, cos, sin, "half"),
                               kernels.reference.rotate(x, cos, sin, layout="half"), atol=1e-6, rtol=0)


def test_torch_compile_fullgraph_matches_eager():
    torch._dynamo.reset()
    cos, sin = _tables(16, 12, "half", np.arange(32))

    def block(q, k, positions):
        q = rope_op.rotate(q, cos, sin, "half", positions=positions)
        k = rope_op.rotate(k, cos, sin, "half", positions=positions)
        return (q @ k.transpose(-1, -2)).softmax(-1)

    compiled = torch.compile(block, fullgraph=True)  # raises on any graph break
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(2, 4, 6, 16, generator=gen, requires_grad=True)
    k = torch.randn(2, 4, 6, 16, generator=gen, requires_grad=True)
    positions = torch.tensor([4, 5, 6, 7, 8, 9])
    out = compiled(q, k, positions)
    want = block(q, k, positions)
    torch.testing.assert_close(out, want, atol=1e-6, rtol=1e-5)
    g = torch.randn(out.shape, generator=gen)
    gq, gk = torch.autograd.grad(out, (q, k), g)
    wq, wk = torch.autograd.grad(want, (q, k), g)
    torch.testing.assert_close(gq, wq, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gk, wk, atol=1e-5, rtol=1e-5)
    torch._dynamo.reset()


def test_torch_compile_rotary_embedding_if_present():
    """The front end's module under fullgraph compile gives the eager numbers."""
    torch_front = pytest.importorskip("ropelab.torch.rotary")
    torch._dynamo.reset()
    rope = torch_front.RotaryEmbedding(RopeConfig(16, layout="half"))
    q, k = torch.randn(1, 4, 8, 16), torch.randn(1, 2, 8, 16)
    compiled = torch.compile(rope, fullgraph=True)
    for got, want in zip(compiled(q, k, offset=3), rope(q, k, offset=3), strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    torch._dynamo.reset()


def test_reference_fallback_without_numba(monkeypatch):
    monkeypatch.setenv(kernels.DISABLE_ENV, "1")
    kernels.reset_backend()
    try:
        cos, sin = _tables(8, 8, "half", np.arange(5), torch.float64)
        x = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda x: rope_op.rotate(x, cos, sin, "half"), (x,))
    finally:
        monkeypatch.delenv(kernels.DISABLE_ENV)
        kernels.reset_backend()


def test_errors():
    cos, sin = _tables(8, 8, "half", np.arange(5))
    with pytest.raises(TypeError, match="ndarray"):
        rope_op.rotate(np.zeros((5, 8)), cos, sin, "half")
    with pytest.raises(TypeError, match="int64"):
        rope_op.rotate(torch.zeros(5, 8, dtype=torch.int64), cos, sin, "half")
    with pytest.raises(ValueError, match="'neox'"):
        rope_op.rotate(torch.zeros(5, 8), cos, sin, "neox")
    with pytest.raises(ValueError, match="broadcast"):
        rope_op.rotate(torch.zeros(6, 8), cos, sin, "half")
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        rope_op.rotate(torch.zeros(2, 8), cos, sin, "half", positions=torch.tensor([0, 5]))


def test_torch_compile_attention_if_present(fused_calls):
    """Attention (which rotates through this op) compiles whole and gives the eager numbers,
    forward and backward; eagerly, the op runs the fused kernel."""
    front = pytest.importorskip("ropelab.torch")
    torch._dynamo.reset()
    torch.manual_seed(0)
    attn = front.Attention(64, 4, num_kv_heads=2, rope=RopeConfig(16, layout="half")).eval()
    x = torch.randn(2, 10, 64, requires_grad=True)
    want = attn(x)
    if fused_calls is not None:
        assert fused_calls  # q and k went through the numba kernel
    got = torch.compile(attn, fullgraph=True)(x)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    g_got, = torch.autograd.grad(got.sum(), x)
    g_want, = torch.autograd.grad(want.sum(), x)
    torch.testing.assert_close(g_got, g_want, atol=1e-5, rtol=1e-5)
    torch._dynamo.reset()


def test_eager_cpu_inference_skips_the_op_dispatch_and_gives_the_ops_result(monkeypatch):
    x = torch.randn(2, 3, 5, 8)
    cos, sin = _tables(8, 8, "half", np.arange(5))
    through_op = torch.ops.ropelab.rope(x, cos, sin, "half", False, None)

    def refuse(*args):
        raise AssertionError("the custom op was dispatched")

    monkeypatch.setattr(rope_op, "_rope", refuse)
    out = rope_op.rotate(x, cos, sin, "half")  # no tensor needs grad: the direct path
    assert torch.equal(out, through_op) and out.is_contiguous() and out.data_ptr() != x.data_ptr()
    with torch.no_grad():
        assert torch.equal(rope_op.rotate(x.clone().requires_grad_(), cos, sin, "half"), through_op)
    with pytest.raises(AssertionError, match="dispatched"):  # recording autograd: the op
        rope_op.rotate(x.clone().requires_grad_(), cos, sin, "half")


def test_integer_tables_are_refused_not_truncated():
    """Integer cos/sin would truncate every value to 0 or 1: refused by name, as
    ropelab.apply_rope refuses them."""
    x = torch.randn(1, 2, 3, 8)
    table = torch.ones(3, 4)
    with pytest.raises(TypeError, match="cos must be a floating-point tensor, got dtype torch.int32"):
        rope_op.rotate(x, table.int(), table, "half")
    with pytest.raises(TypeError, match="sin must be a floating-point tensor, got dtype torch.int64"):
        rope_op.rotate_qk(x, x, table, table.long(), "half")
