"""apply_rope on any array type: numpy arrays, torch tensors and jax arrays.

Shapes: x is ``(..., T, D)``; cos and sin are broadcastable to ``(..., T, R/2)`` with
``R = 2 * cos.shape[-1] <= D`` the rotary dimension. Features past R pass through.

Layouts (see :data:`ropelab.config.LAYOUTS`):
    interleaved: pair i is ``(x[2i], x[2i+1])``
    half:        pair i is ``(x[i], x[i + R/2])``
A pair ``(a, b)`` rotated by phi is ``(a cos phi - b sin phi, a sin phi + b cos phi)``.

Bare cos/sin need ``layout=`` (no default: the two pairings give different answers);
tables from :func:`ropelab.rope_tables` carry their layout (:class:`ropelab.RopeTables`)
and need none when passed whole. Bare tables narrower than x rotate only the first R
features when ``rotary_dim=R`` says so (tables made for another head width are refused,
never taken for a partial rotary); transformers' full-width tables are refused with a
pointer to :func:`ropelab.rows_from_hf`.

The arguments are checked here (and in :mod:`ropelab.kernels.checks`); the rotation is
:mod:`ropelab.kernels`' (a fused backend where one applies, the reference path
otherwise). No framework is imported here.
"""

from __future__ import annotations

import sys

import numpy as np

from . import kernels
from ._optional import array_kind
from .checks import check_int, is_float_dtype, show
from .config import check_layout
from .kernels import reference
from .kernels.checks import check_distinct, check_out, check_positions, check_tables
from .tables_type import RopeTables

__all__ = ["LAYOUT_FAMILIES", "apply_rope", "apply_rope_", "permute_for_layout", "rotary_dim_of"]

#: which pairing the best-known families use, for the error that asks for a layout
LAYOUT_FAMILIES = (
    "layout='half' for Llama 2/3, Mistral, Qwen, Gemma, Phi and GPT-NeoX (Hugging Face's "
    "rotate_half); layout='interleaved' for GPT-J, Llama 4, Cohere, GLM, RoFormer and "
    "Meta's reference Llama code"
)

# torch dtypes the rotation computes with (float8 and float4 have no arithmetic in torch)
_TORCH_FLOATS = ("torch.float16", "torch.bfloat16", "torch.float32", "torch.float64")


def rotary_dim_of(cos) -> int:
    """The rotary dimension R that a cos/sin table of shape (..., R/2) serves."""
    return 2 * int(cos.shape[-1])


def _tables(name: str, cos, sin, layout):
    """(cos, sin, layout, head_dim) from either form: a RopeTables passed whole, or bare
    cos and sin with an explicit layout."""
    if isinstance(cos, RopeTables):
        if sin is not None:
            raise TypeError(
                f"{name} takes the tables whole, {name}(x, tables), or cos and sin apart; "
                "got a RopeTables as cos and a sin as well"
            )
        if layout is not None and check_layout(layout) != cos.layout:
            raise ValueError(f"layout={layout!r} disagrees with the tables' own layout {cos.layout!r}")
        return cos.cos, cos.sin, cos.layout, cos.head_dim
    if sin is None:
        raise TypeError(
            f"{name} needs cos and sin, or tables from ropelab.rope_tables passed whole "
            f"({name}(x, rope_tables(config, positions))); got cos alone"
        )
    if layout is None:
        raise TypeError(
            f"{name} needs layout= with bare cos/sin tables: they do not say which pairing they "
            f"serve, and the two give different answers. {LAYOUT_FAMILIES}. A RopeConfig knows "
            f"its own (config.layout), and tables from rope_tables(config, positions) passed "
            f"whole, {name}(x, tables), carry it"
        )
    return cos, sin, check_layout(layout), None


def _check_table(name: str, t, x) -> None:
    """A table is a real floating array; a torch table holds values where x does."""
    try:
        kind = array_kind(t)
    except TypeError:
        raise TypeError(
            f"{name} must be a numpy array, torch tensor or jax array, got {show(t)} "
            f"({type(t).__name__})"
        ) from None
    dtype = t.dtype
    if kind == "torch":
        if not dtype.is_floating_point:
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {dtype}")
        if str(dtype) not in _TORCH_FLOATS:
            raise TypeError(f"{name} has dtype {dtype}, which torch cannot compute with; "
                            "give tables in float32 or float64")
        if t.device.type == "meta" and getattr(getattr(x, "device", None), "type", None) != "meta":
            raise ValueError(
                f"{name} is on the meta device (a shape without values) while x is on "
                f"{getattr(x, 'device', 'the host')}; build the tables on x's device"
            )
    elif kind == "numpy":
        if not is_float_dtype(dtype):
            raise TypeError(f"{name} must be a floating-point array, got dtype {dtype}")
    else:
        import jax.numpy as jnp

        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"{name} must be a floating-point array, got dtype {dtype}")


def _check_width(x, cos, head_dim, rotary_dim) -> None:
    """x's last dim against the tables: never a silent partial rotary or full-width mix-up.

    R = 2 * cos.shape[-1]. Tables that know their head width (a RopeTables from a config)
    need x of exactly that width. Bare tables rotate the whole head (R = D) unless
    ``rotary_dim=R`` says a partial rotary is meant.
    """
    if len(x.shape) < 1 or len(cos.shape) < 1:
        return  # check_tables names the shapes
    width = int(x.shape[-1])
    half = int(cos.shape[-1])
    if half and half % 2 == 0 and 2 * half > width >= half:  # transformers' R is even
        raise ValueError(
            f"cos/sin have {half} columns, too many for x's {width} features (they hold one "
            f"column per rotated pair, {width // 2} at most); these look like transformers' "
            f"full-width tables (..., T, R) with each angle twice: convert them with "
            f"ropelab.rows_from_hf(cos, sin, layout=...)"
        )
    if rotary_dim is not None:
        rotary_dim = check_int("rotary_dim", rotary_dim, minimum=2)
        if rotary_dim != 2 * half:
            raise ValueError(
                f"rotary_dim={rotary_dim} disagrees with the tables, which rotate {2 * half} "
                f"features ({half} columns)"
            )
    if head_dim is not None:
        if width != head_dim:
            raise ValueError(
                f"x has {width} features per head but the tables are for head_dim={head_dim} "
                f"(rotary_dim={2 * half})"
            )
    elif 0 < 2 * half < width and rotary_dim is None:
        raise ValueError(
            f"x has {width} features per head but cos/sin rotate {2 * half} ({half} columns): "
            f"tables for head_dim={width} have {width // 2} columns. For a partial rotary (the "
            f"first {2 * half} features rotated, the rest passed through) say so with "
            f"rotary_dim={2 * half}, or pass tables from rope_tables(config, positions) whole"
        )


def _validate_x(x, cos, sin, positions, head_dim=None, rotary_dim=None, *, first: bool = True) -> str:
    """Check one array against the tables (tables and position values only for the first);
    its kind."""
    kind = array_kind(x)
    if first:
        _check_table("cos", cos, x)
        _check_table("sin", sin, x)
    if kind == "torch" and x.dtype.is_floating_point and str(x.dtype) not in _TORCH_FLOATS:
        raise TypeError(
            f"x has dtype {x.dtype}, which torch cannot compute with (no arithmetic for it); "
            "rotate it in bfloat16, float16 or float32 and cast the result"
        )
    _check_width(x, cos, head_dim, rotary_dim)
    if positions is None:
        check_tables(x, cos, sin)
    else:
        check_positions(x, cos, sin, positions, values=first)
    reference.compute_dtype(x)  # TypeError for a non-float x
    return kind


def apply_rope(x, cos, sin=None, *, layout: str | None = None, rotary_dim: int | None = None, positions=None,
               out=None):
    """Rotate the first R features of ``x`` by the angles whose cos/sin are given.

    RoFormer (Su et al. 2021, arXiv:2104.09864), eq. 34, in either pairing.

    Two forms:

    - ``apply_rope(x, cos, sin, layout=...)``: bare tables need the layout (no default:
      the pairings give different answers; ``"half"`` for Llama, Mistral, Qwen, GPT-NeoX,
      ``"interleaved"`` for GPT-J, Llama 4, RoFormer, Meta's reference code).
    - ``apply_rope(x, tables)``: a :class:`ropelab.RopeTables` (what
      :func:`ropelab.rope_tables` returns) carries its config's layout and head width.

    Args:
        x: ``(..., T, D)`` numpy array, torch tensor or jax array, floating point; or a
            tuple of such arrays (e.g. ``(q, k)``), all rotated by the same tables.
        cos, sin: tables broadcastable to ``(..., T, R/2)``, e.g. from
            :func:`ropelab.rope_tables` (numpy float64) or already of x's kind.
            Give one row per token to use arbitrary positions (offsets, KV-cache steps,
            packed sequences). transformers' full-width ``(..., T, D)`` tables convert
            with :func:`ropelab.rows_from_hf`.
        layout: ``"interleaved"`` or ``"half"``; required with bare tables.
        rotary_dim: R, required with bare tables narrower than x (a partial rotary: the
            first R features rotated, the rest passed through), so that tables made for
            another head width are never taken for one.
        positions: optional integers broadcastable to ``(..., T)``; then cos and sin
            are ``(P, R/2)`` tables and token ``t`` uses row ``positions[..., t]``
            (decode steps and packed sequences need no gathered copy of the tables).
        out: a buffer to write the result into (numpy arrays and torch tensors), as
            numpy's and torch's ``out=``: x's kind, device, shape and dtype, writeable,
            memory of its own; a tuple of buffers for a tuple ``x``. Features past R are
            copied into it. ``out`` may be ``x`` itself (the same view: then the rotation
            is in place, as :func:`apply_rope_`) but may not share memory with x
            otherwise (ValueError). Refused for jax arrays (immutable: use the returned
            array) and while autograd would record the call (as torch refuses ``out=``
            for arguments that require grad).

    Returns:
        An array of x's kind, shape and dtype (a tuple for a tuple ``x``); ``out`` when
        given. The math runs in float32 at least (bfloat16/float16 inputs are upcast once
        and rounded once).

    numpy arrays and torch CPU tensors go through the fused out-of-place kernel of
    :mod:`ropelab.kernels` when it applies (never while autograd records or
    torch.compile traces); everything else through the eager reference path.
    """
    cos, sin, layout, head_dim = _tables("apply_rope", cos, sin, layout)
    xs = x if isinstance(x, tuple) else (x,)
    kinds = {_validate_x(xi, cos, sin, positions, head_dim, rotary_dim, first=i == 0) for i, xi in enumerate(xs)}
    if out is not None:
        outs, in_place = check_out(x, out)
        _refuse_out_under_autograd(xs, outs, cos, sin)
        kernels.rope_into(xs, outs, cos, sin, layout=layout, positions=positions, in_place=in_place)
        return out
    if kinds == {"jax"}:  # no backend takes jax arrays: jit fuses the reference path
        out = tuple(reference.rotate(xi, cos, sin, layout=layout, positions=positions) for xi in xs)
        return out if isinstance(x, tuple) else out[0]
    return kernels.rope(x, cos, sin, layout=layout, positions=positions)


def apply_rope_(x, cos, sin=None, *, layout: str | None = None, rotary_dim: int | None = None, positions=None):
    """In-place :func:`apply_rope` for numpy arrays and torch tensors; returns ``x``.

    The same two forms and arguments as :func:`apply_rope`. One fused pass over memory
    (read and write each element once) where the kernel of :mod:`ropelab.kernels`
    applies, the reference path (compute, then copy back) otherwise. ``x`` may be a
    tuple ``(q, k)``: both are rotated by the same tables in one call, and the tuple is
    returned.

    Under autograd it follows torch's in-place rules: a leaf that requires grad raises
    (RuntimeError, as ``leaf.mul_(2)`` does); a tensor that is part of a graph (or
    tables that require grad) is rotated through autograd, ``x.copy_(rotated)``, so the
    backward is the inverse rotation, x's version counter is bumped, and a graph that
    saved x's old values raises on backward instead of using the new ones.
    """
    cos, sin, layout, head_dim = _tables("apply_rope_", cos, sin, layout)
    xs = x if isinstance(x, tuple) else (x,)
    for i, xi in enumerate(xs):
        if array_kind(xi) == "jax":
            raise TypeError("jax arrays are immutable; use apply_rope (jit fuses it) instead of apply_rope_")
        _validate_x(xi, cos, sin, positions, head_dim, rotary_dim, first=i == 0)
    check_distinct(xs)
    if _recorded(xs, cos, sin):
        # autograd records the rotation (the reference path, differentiable) and the copy;
        # a clone keeps the inputs saved for the tables' gradient from being overwritten
        clone = _tables_need_grad(sys.modules["torch"], cos, sin)
        for xi in xs:
            source = xi.clone() if clone else xi
            xi.copy_(kernels.rope(source, cos, sin, layout=layout, positions=positions))
        return x
    return kernels.rope_inplace(x, cos, sin, layout=layout, positions=positions)


def _refuse_out_under_autograd(xs: tuple, outs: tuple, cos, sin) -> None:
    """RuntimeError when autograd would have to record a call with ``out=`` (torch's
    functions refuse ``out=`` then too)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.is_grad_enabled():
        return
    grads = [name for name, a in (("x", xs), ("out", outs), ("cos/sin", (cos, sin)))
             if any(isinstance(t, torch.Tensor) and t.requires_grad for t in a)]
    if grads:
        verb = "requires" if grads in (["x"], ["out"]) else "require"
        raise RuntimeError(
            f"apply_rope(..., out=) does not support automatic differentiation, but {' and '.join(grads)} "
            f"{verb} grad (as torch's functions with out= refuse); use the returned array of "
            "apply_rope without out=, or call it under torch.no_grad()"
        )


def _tables_need_grad(torch, cos, sin) -> bool:
    return any(isinstance(t, torch.Tensor) and t.requires_grad for t in (cos, sin))


def _recorded(xs: tuple, cos, sin) -> bool:
    """Whether autograd must record an in-place rotation of ``xs`` (RuntimeError for a
    leaf that requires grad, as torch's in-place ops raise)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.is_grad_enabled():
        return False
    tensors = [xi for xi in xs if isinstance(xi, torch.Tensor)]
    for xi in tensors:
        if xi.requires_grad and xi.is_leaf:
            raise RuntimeError(
                "apply_rope_: a leaf Variable that requires grad is being used in an in-place "
                f"operation (x of shape {tuple(xi.shape)}); rotate a copy with apply_rope, or "
                "update it under torch.no_grad()"
            )
    return bool(tensors) and (any(xi.requires_grad for xi in tensors) or _tables_need_grad(torch, cos, sin))


def permute_for_layout(w, num_heads: int, *, src: str, dst: str, rotary_dim: int | None = None):
    """Reorder a q or k projection's output rows from one pairing to the other.

    ``w`` is a weight ``(num_heads * D, in_features)`` or bias ``(num_heads * D,)`` (any
    array kind). A checkpoint trained with ``src`` pairing gives identical attention
    scores under ``dst`` pairing once its q and k projections are permuted. Only the
    first ``rotary_dim`` rows of each head (default: all) move.
    """
    check_layout(src)
    check_layout(dst)
    num_heads = check_int("num_heads", num_heads, minimum=1)
    rows = int(w.shape[0])
    if rows % num_heads:
        raise ValueError(f"w has {rows} rows, not a multiple of num_heads={num_heads}")
    head_dim = rows // num_heads
    rotary_dim = head_dim if rotary_dim is None else check_int("rotary_dim", rotary_dim, minimum=2, maximum=head_dim)
    if rotary_dim % 2:
        raise ValueError(f"rotary_dim must be even, got {rotary_dim}")
    if src == dst:
        return w
    # half position j holds interleaved position order[j]
    order = np.concatenate([np.arange(0, rotary_dim, 2), np.arange(1, rotary_dim, 2)])
    if src == "half":  # half -> interleaved: the inverse permutation
        order = np.argsort(order)
    per_head = np.concatenate([order, np.arange(rotary_dim, head_dim)])
    index = (np.arange(num_heads)[:, None] * head_dim + per_head[None, :]).reshape(-1)
    kind = array_kind(w)
    if kind == "torch":
        import torch

        return w[torch.as_tensor(index, device=w.device)]
    return w[index]
