"""The rotation op used by the PyTorch front end (one place to swap in fused kernels).

``rotate(x, cos, sin, layout, *, positions=None)`` has :func:`ropelab.apply_rope`'s
meaning and is differentiable. It is the custom op ``torch.ops.ropelab.rope``
(``torch.library.custom_op``), so that

- eager calls run the fused kernels of :mod:`ropelab.kernels` forward and backward
  (numba on CPU, Triton on CUDA; the gradient of a rotation is the rotation by the
  negative angle: the same kernel with sin negated);
- ``torch.compile(fullgraph=True)`` sees one opaque op with a fake (meta) impl and a
  registered autograd formula: no graph break;
- what no kernel covers (float64 on CUDA, numba or triton missing) runs the eager
  reference path inside the op. Another kernel plugs in as a backend of
  :mod:`ropelab.kernels` (:func:`ropelab.kernels.register`): the op runs it forward
  and backward, and its autograd formula and fake impl stay the op's.

Shapes: x ``(..., T, D)``; cos/sin broadcastable to ``(..., T, R/2)``, or with
``positions`` (integers broadcastable to ``(..., T)``) ``(P, R/2)`` tables.
Gradients flow to x, and to cos/sin when they require grad (learned frequencies):
``dL/dcos = ga*a + gb*b``, ``dL/dsin = gb*a - ga*b`` summed over the broadcast dims
(scattered to table rows with positions). positions get no gradient.
"""

from __future__ import annotations

from .. import kernels
from .._optional import require
from ..config import check_layout
from ..kernels.checks import check_positions, check_tables

torch = require("torch", feature="ropelab.torch")

__all__ = ["rotate", "rotate_qk"]

Tensor = torch.Tensor


def _rotated(x, cos, sin, layout, inverse, positions):
    """Rotated copy of x (contiguous); ``inverse`` rotates by the negative angle."""
    with torch.no_grad():  # autograd is the op's own formula, not the kernel's business
        out = kernels.rope(x, cos, sin, layout=layout, positions=positions, inverse=inverse)
    return _fresh(out, x)


def _fresh(out, x):
    """The op's contract (and its fake impl's): a fresh contiguous tensor. The reference
    path may hand back a view or a non-contiguous result."""
    if out is x or not out.is_contiguous():
        out = out.contiguous() if out is not x else out.clone()
    return out


@torch.library.custom_op("ropelab::rope", mutates_args=())
def _rope(x: Tensor, cos: Tensor, sin: Tensor, layout: str, inverse: bool,
          positions: Tensor | None) -> Tensor:
    """The op: :func:`_rotated` with an autograd formula and a fake impl."""
    return _rotated(x, cos, sin, layout, inverse, positions)


@_rope.register_fake
def _rope_fake(x, cos, sin, layout, inverse, positions):
    return x.new_empty(x.shape)


def _pairs(t, half, layout):
    """The two members of each rotated pair: (..., R/2) each."""
    if layout == "interleaved":
        return t[..., 0 : 2 * half : 2], t[..., 1 : 2 * half : 2]
    return t[..., :half], t[..., half : 2 * half]


def _table_grads(ctx, grad):
    """Gradients for cos and sin (only computed when they require grad)."""
    x, cos, sin, positions = ctx.saved_tensors
    half = cos.shape[-1]
    dtype = torch.promote_types(cos.dtype, torch.float32)
    a, b = (t.to(dtype) for t in _pairs(x, half, ctx.layout))
    ga, gb = (t.to(dtype) for t in _pairs(grad, half, ctx.layout))
    gcos = ga * a + gb * b
    gsin = gb * a - ga * b
    if ctx.inverse:  # y = R(-phi) x: sin enters with a minus sign
        gsin = -gsin
    if positions is None:
        gcos, gsin = gcos.sum_to_size(cos.shape), gsin.sum_to_size(sin.shape)
    else:
        index = positions.expand(x.shape[:-1]).reshape(-1)
        gcos = torch.zeros_like(cos, dtype=dtype).index_add_(0, index, gcos.reshape(-1, half))
        gsin = torch.zeros_like(sin, dtype=dtype).index_add_(0, index, gsin.reshape(-1, half))
    return gcos.to(cos.dtype), gsin.to(sin.dtype)


def _setup_context(ctx, inputs, output):
    x, cos, sin, layout, inverse, positions = inputs
    ctx.layout, ctx.inverse = layout, inverse
    ctx.tables_need_grad = cos.requires_grad or sin.requires_grad
    # x is kept only when the tables need a gradient (the x gradient needs only cos/sin)
    ctx.save_for_backward(x if ctx.tables_need_grad else None, cos, sin, positions)


def _backward(ctx, grad):
    _, cos, sin, positions = ctx.saved_tensors
    gx = _rope(grad.contiguous(), cos, sin, ctx.layout, not ctx.inverse, positions)
    gcos = gsin = None
    if ctx.tables_need_grad:
        gcos, gsin = _table_grads(ctx, grad)
    return gx, gcos, gsin, None, None, None


_rope.register_autograd(_backward, setup_context=_setup_context)


def _as_table(t, like):
    """numpy tables (float64 from rope_tables) become tensors on x's device, once."""
    if isinstance(t, torch.Tensor):
        return t if t.device == like.device else t.to(like.device)
    dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    return torch.as_tensor(t).to(device=like.device, dtype=dtype)


def rotate(x, cos, sin, layout: str, *, positions=None):
    """Rotate x by RoPE (differentiable; fused on CPU): :func:`ropelab.apply_rope`'s meaning.

    Args:
        x: ``(..., T, D)`` floating tensor.
        cos, sin: tables broadcastable to ``(..., T, R/2)`` (tensors, or numpy arrays
            which are converted), or ``(P, R/2)`` with ``positions``.
        layout: ``"interleaved"`` or ``"half"``.
        positions: optional integer tensor broadcastable to ``(..., T)``; row
            ``positions[..., t]`` of the tables rotates token t (no gathered copy).

    Returns:
        A new contiguous tensor of x's shape and dtype.
    """
    cos, sin, positions = _prepare(x, cos, sin, layout, positions)
    if _direct(x, cos, sin):
        # eager CPU inference: the op's dispatch (autograd formula, fake impl) buys
        # nothing here and costs ~9 us, a quarter of a decode step's rotation
        return _rotated(x, cos, sin, layout, False, positions)
    return _rope(x, cos, sin, layout, False, positions)


def rotate_qk(q, k, cos, sin, layout: str, *, positions=None):
    """``(rotate(q, ...), rotate(k, ...))`` with the same tables; in eager CPU inference
    one kernel call for both (the tables are prepared once)."""
    cos_q, sin_q, pos_q = _prepare(q, cos, sin, layout, positions)
    cos_k, sin_k, pos_k = _prepare(k, cos_q, sin_q, layout, pos_q, values=False)  # q's checked them
    if k.device == q.device:
        return _rotate_qk(q, k, cos_q, sin_q, layout, pos_q)
    return _rope(q, cos_q, sin_q, layout, False, pos_q), _rope(k, cos_k, sin_k, layout, False, pos_k)


def _rotate_qk(q, k, cos, sin, layout, positions):
    """:func:`rotate_qk` of arguments already checked, tables and positions on q's and
    k's device (positions long): callers that validated them skip the checks."""
    if _direct(q, cos, sin) and not _recording(k):
        with torch.no_grad():
            outs = kernels.rope((q, k), cos, sin, layout=layout, positions=positions)
        return tuple(_fresh(out, x) for out, x in zip(outs, (q, k), strict=True))
    return _rope(q, cos, sin, layout, False, positions), _rope(k, cos, sin, layout, False, positions)


def _prepare(x, cos, sin, layout, positions, *, values: bool = True):
    """Checked arguments: tables as tensors on x's device, positions as long tensors
    (their values checked against the table unless ``values`` is False)."""
    check_layout(layout)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    cos, sin = _as_table(cos, x), _as_table(sin, x)
    for name, table in (("cos", cos), ("sin", sin)):
        if not table.dtype.is_floating_point:  # integer tables would truncate every value
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {table.dtype}")
    if positions is None:
        check_tables(x, cos, sin)
    else:
        if not isinstance(positions, torch.Tensor):
            positions = torch.as_tensor(positions)
        check_positions(x, cos, sin, positions, values=values)
        positions = positions.to(device=x.device, dtype=torch.long)
    return cos, sin, positions


def _direct(x, cos, sin) -> bool:
    """Call the kernels without the op: eager, nothing for autograd to record (the op
    would add only its dispatch; on CUDA this also puts q and k in one Triton launch)."""
    return not _recording(x, cos, sin) and not torch.compiler.is_compiling()


def _recording(*tensors) -> bool:
    """Whether autograd would record an op on these tensors."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
