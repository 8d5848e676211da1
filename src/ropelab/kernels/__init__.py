"""Kernel choice, in one place: fused kernels where available, the reference path beside.

RoPE is memory bound: the least it can cost is one read and one write of q and k. The
fused kernels (:mod:`ropelab.kernels._numba`, numba, parallel over rows) rotate in one
pass, in place or into a fresh output, for numpy arrays and torch CPU tensors of
float32, float64, bfloat16 and float16 (math in float32, float64 for float64), both
layouts, partial rotary, broadcast tables and per-token positions. CUDA tensors of
float32, bfloat16 and float16 go to the Triton kernel (:mod:`ropelab.kernels._triton`:
q and k in one launch, cos/sin read once per token), when triton is installed and
``ROPELAB_DISABLE_TRITON`` is unset. Everything else (jax arrays, float64 on a GPU,
negative or overlapping strides, inputs that need autograd, numba or triton missing,
``ROPELAB_DISABLE_NUMBA=1``) goes through the reference path, :func:`ropelab.apply_rope`'s
eager array code. The tests hold them equal (the Triton kernel under Triton's
interpreter on machines without a GPU).

Shapes: x ``(..., T, D)``; cos/sin broadcastable to ``(..., T, R/2)``, or with
``positions`` (integers broadcastable to ``(..., T)``) a ``(P, R/2)`` table indexed by
position. R = 2 * cos.shape[-1] <= D; features past R pass through.

Numba compiles each storage/table dtype pair once and caches the machine code on disk
(``cache=True``), so later processes pay only the load (well under a second).
"""

from __future__ import annotations

import os
import sys

import numpy as np

from .._optional import array_kind

__all__ = [
    "DISABLE_ENV",
    "DISABLE_TRITON_ENV",
    "PARALLEL_MIN_ELEMENTS",
    "backend",
    "backend_note",
    "fused_available",
    "plan_tables",
    "reference",
    "reset_backend",
    "rope",
    "rope_inplace",
    "rope_rows",
    "TRITON_DEVICE_TYPES",
]

DISABLE_ENV = "ROPELAB_DISABLE_NUMBA"
DISABLE_TRITON_ENV = "ROPELAB_DISABLE_TRITON"

# below this many elements of x the kernels run on the calling thread: a parallel
# launch costs more than the whole rotation (a decode step of 32 heads x 128 is 4096)
PARALLEL_MIN_ELEMENTS = 1 << 16

# cached decision: None until first asked, then ("numba", module) or ("reference", why)
_BACKEND: tuple | None = None


def _load_backend() -> tuple:
    if os.environ.get(DISABLE_ENV, "").strip() not in ("", "0"):
        return ("reference", f"numba disabled by {DISABLE_ENV}=1")
    try:
        from . import _numba
    except ImportError as err:
        return ("reference", f"numba is not installed ({err}); pip install 'ropelab[kernels]'")
    return ("numba", _numba)


def _backend() -> tuple:
    global _BACKEND
    if _BACKEND is None:
        _BACKEND = _load_backend()
    return _BACKEND


def reset_backend() -> None:
    """Forget the cached kernel choice (it is made again, honouring the environment)."""
    global _BACKEND
    _BACKEND = None


def backend() -> str:
    """``"numba"`` when the fused CPU kernels are in use, else ``"reference"``."""
    return _backend()[0]


def backend_note() -> str:
    """One line saying which path runs (CPU, and GPU tensors), and why when it is the
    reference path."""
    name, info = _backend()
    if name == "numba":
        import numba

        cpu = f"fused numba kernels (numba {numba.__version__}, {numba.get_num_threads()} threads)"
    else:
        cpu = f"reference path only: {info}"
    module = _triton_module()
    if module is None:
        return f"{cpu}; GPU tensors: reference path ({_TRITON[1]})"
    return f"{cpu}; GPU tensors: Triton kernel (triton {module.triton.__version__})"


def fused_available() -> bool:
    return backend() == "numba"


# -- the reference path ------------------------------------------------------------


def _gather(table, positions):
    """``table[positions]`` for a (P, R/2) table of any kind and positions of any kind."""
    kind = array_kind(table)
    if kind == "numpy":
        return table[np.asarray(_host(positions))]
    if kind == "torch":
        import torch

        return table[torch.as_tensor(_host(positions), device=table.device)]
    import jax.numpy as jnp

    return table[jnp.asarray(positions)]


def _host(a):
    """An integer array as numpy (torch tensors are moved to the host)."""
    if isinstance(a, np.ndarray):
        return a
    try:
        kind = array_kind(a)
    except TypeError:
        return np.asarray(a)
    if kind == "torch":
        return a.detach().cpu().numpy()
    return np.asarray(a)


def reference(x, cos, sin, *, layout: str, positions=None, inverse: bool = False):
    """The eager reference path (out of place): gather rows, then rotate.

    ``inverse`` rotates by the negative angle (sin negated): the transpose of the
    rotation, which is what a gradient needs.
    """
    from ..rotary import _apply_reference

    if positions is not None:
        cos, sin = _gather(cos, positions), _gather(sin, positions)
    if inverse:
        sin = -sin
    return _apply_reference(x, cos, sin, layout=layout)


def _reference_inplace(x, cos, sin, *, layout, positions=None):
    out = reference(x, cos, sin, layout=layout, positions=positions)
    if array_kind(x) == "torch":
        import torch

        with torch.no_grad():
            x.copy_(out)
    else:
        x[...] = out
    return x


# -- input preparation for the fused kernels -----------------------------------------

def _storage(x):
    """x as a numpy array of a kernel storage dtype (a view of x's memory), or None."""
    if isinstance(x, np.ndarray):
        name = x.dtype.name
        if name in ("float32", "float64"):
            return x
        if name == "float16":
            return x.view(np.uint16)
        if name == "bfloat16":  # ml_dtypes' numpy bfloat16 (as jax uses)
            return x.view(np.int16)
        return None
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(x, torch.Tensor) or not x.is_cpu or x.layout != torch.strided:
        return None
    dtype = x.dtype  # (kept cheap: this runs for every array of every call)
    if dtype != torch.float32 and dtype not in (torch.float64, torch.bfloat16, torch.float16):
        return None
    if x.requires_grad:
        x = x.detach()
    try:
        if dtype == torch.bfloat16:
            return x.view(torch.int16).numpy()
        arr = x.numpy()
    except (RuntimeError, TypeError):  # conjugate/negative views and the like
        return None
    return arr.view(np.uint16) if dtype == torch.float16 else arr


def _table(t):
    """A cos/sin table as a float32 or float64 numpy array (no copy when it already is)."""
    kind = array_kind(t)
    if kind == "torch":
        if t.device.type != "cpu":
            return None
        t = t.detach()
        if t.dtype not in (_torch().float32, _torch().float64):
            t = t.float()
        try:
            t = t.numpy()
        except (RuntimeError, TypeError):
            return None
    elif kind != "numpy":
        return None
    if t.dtype not in (np.float32, np.float64):
        t = t.astype(np.float64 if t.dtype.itemsize > 4 else np.float32)
    return t


def _torch():
    import torch

    return torch


def _flat(a):
    """A 1-D view spanning ``a``'s memory and ``a``'s strides in elements, or None."""
    size = a.itemsize
    if a.flags.c_contiguous:  # the common case, and the cheap one
        return a.reshape(-1), tuple(s // size for s in a.strides)
    if any(s < 0 or s % size for s in a.strides):
        return None
    if a.ndim and a.shape[-1] > 1 and a.strides[-1] != size:
        return None
    span = 1 + sum((n - 1) * s for n, s in zip(a.shape, a.strides, strict=True)) // size if a.size else 0
    flat = np.lib.stride_tricks.as_strided(a, shape=(span,), strides=(size,))
    return flat, tuple(s // size for s in a.strides)


def _broadcast_strides(shape, strides, lead):
    """Element strides of an array of ``shape`` broadcast (numpy rules) against ``lead``."""
    pad = len(lead) - len(shape)
    return (0,) * pad + tuple(0 if n == 1 else st for n, st in zip(shape, strides, strict=True))


def _merge3(shape, strides_list):
    """Leading dims and their per-array strides, merged or padded to exactly 3 dims."""
    if len(shape) <= 3:  # (T,), (B, T), (B, H, T): pad on the left
        pad = 3 - len(shape)
        return (1,) * pad + tuple(shape), [(0,) * pad + tuple(st) for st in strides_list]
    dims = [(n, [s[i] for s in strides_list]) for i, n in enumerate(shape) if n != 1]
    merged = True
    while len(dims) > 3 and merged:
        merged = False
        for j in range(len(dims) - 1):
            (n0, s0), (n1, s1) = dims[j], dims[j + 1]
            if all(a == b * n1 for a, b in zip(s0, s1, strict=True)):
                dims[j : j + 2] = [(n0 * n1, s1)]
                merged = True
                break
    if len(dims) > 3:
        return None
    while len(dims) < 3:
        dims.insert(0, (1, [0] * len(strides_list)))
    return tuple(n for n, _ in dims), [tuple(int(d[1][k]) for d in dims) for k in range(len(strides_list))]


_NO_POSITIONS = np.zeros(1, dtype=np.int64)  # read at offset 0 with pstride 0


def plan_tables(cos, sin):
    """cos/sin as the fused kernels read them (numpy views of their memory where the
    dtype and strides allow), or None when only the reference path can use them.

    A caller that rotates with the same tables many times (a decode loop) may keep the
    result and pass it back as ``tables=`` to :func:`rope`. It may hold a converted copy
    (a bfloat16 table, say): make a new plan whenever the tables change.
    """
    if not fused_available():
        return None
    c, s = _table(cos), _table(sin)
    if c is None or s is None:
        return None
    if c.dtype != s.dtype:
        c, s = c.astype(np.float64), s.astype(np.float64)
    if c.strides != s.strides or _flat(c) is None:
        c, s = np.ascontiguousarray(c), np.ascontiguousarray(s)
    cflat, cstr = _flat(c)
    sflat, _ = _flat(s)
    return dict(cos=cflat, sin=sflat, half=c.shape[-1], tshape=c.shape[:-1], tstr=cstr[:-1],
                rowstride=cstr[0])


def _bind(tables, positions):
    """The table plan with this call's positions (or none) attached: what the kernels read."""
    if positions is None:
        return dict(tables, pos=_NO_POSITIONS, pshape=(), pstr=(), pstride=0)
    p = _host(positions)
    if p.dtype != np.int64 or not p.flags.c_contiguous:
        p = np.ascontiguousarray(p, dtype=np.int64)
    return dict(tables, tshape=(), tstr=(), pos=p.reshape(-1), pshape=p.shape,
                pstr=tuple(st // 8 for st in p.strides), pstride=tables["rowstride"])


def _plan(x, tables, *, out=None):
    """The kernel call for one array, ``(kernel name, arguments)``, or None when it takes
    the reference path.

    ``out`` (out of place) is a fresh contiguous array of x's kind; None means in place.
    """
    inplace = out is None
    xs = _storage(x)
    if xs is None or xs.size == 0 or (inplace and not xs.flags.writeable):
        return None
    flat = _flat(xs)
    if flat is None:
        return None
    xflat, xstr = flat
    lead, lead_strides = xs.shape[:-1], xstr[:-1]
    if inplace:
        if any(st == 0 for n, st in zip(lead, lead_strides, strict=True) if n > 1):
            return None  # several elements share memory (an expanded tensor): not in place
        oflat, ostr = xflat, lead_strides
    elif xs.flags.c_contiguous:  # out is contiguous too, of the same shape: same strides
        oflat, ostr = _storage(out).reshape(-1), lead_strides
    else:
        oflat, ostr = _flat(_storage(out))
        ostr = ostr[:-1]
    tstr = _broadcast_strides(tables["tshape"], tables["tstr"], lead)
    pstr = _broadcast_strides(tables["pshape"], tables["pstr"], lead)
    merged = _merge3(lead, [lead_strides, ostr, tstr, pstr])
    if merged is None:
        return None
    shape3, (xs3, os3, ts3, ps3) = merged
    pos, pstride = tables["pos"], tables["pstride"]
    if inplace:
        name = "rope_rows_inplace_serial" if _serial(xs) else "rope_rows_inplace"
        return name, (xflat, xs3, tables["cos"], tables["sin"], ts3, pos, ps3, pstride, shape3, tables["half"])
    return _out_call(xs, xflat, xs3, oflat, os3, tables, ts3, pos, ps3, pstride, shape3)


def _serial(xs) -> bool:
    """Run on the calling thread: a parallel launch would cost more than the work."""
    return xs.size < PARALLEL_MIN_ELEMENTS


def _out_call(xs, xflat, xs3, oflat, os3, tables, ts3, pos, ps3, pstride, shape3):
    """The out-of-place kernel call for x (storage ``xs``, flat ``xflat``) into ``oflat``."""
    half = tables["half"]
    name = "rope_rows_out_serial" if _serial(xs) else "rope_rows_out"
    return name, (xflat, xs3, oflat, os3, tables["cos"], tables["sin"], ts3, pos, ps3, pstride, shape3,
                  half, 2 * half, xs.shape[-1])


def _run(plan, *, layout, inverse):
    """Call the kernel of :func:`_plan` (the layout and direction come last)."""
    name, args = plan
    getattr(_backend()[1], name)(*args, layout == "interleaved", -1.0 if inverse else 1.0)


# -- the GPU path: Triton ------------------------------------------------------------

#: device types whose torch tensors go to the Triton kernel (when triton is installed);
#: tests add "cpu" to run the kernel under Triton's interpreter (TRITON_INTERPRET=1)
TRITON_DEVICE_TYPES = ("cuda",)

_TRITON: tuple | None = None  # None until first asked, then (module or None, why not)


def _triton_module():
    """The Triton kernel module, or None (triton missing, or disabled by the environment)."""
    global _TRITON
    if _TRITON is None:
        if os.environ.get(DISABLE_TRITON_ENV, "").strip() not in ("", "0"):
            _TRITON = (None, f"triton disabled by {DISABLE_TRITON_ENV}=1")
        else:
            try:
                from . import _triton
            except ImportError as err:
                _TRITON = (None, f"triton is not installed ({err})")
            else:
                _TRITON = (_triton, "")
    return _TRITON[0]


def _triton_rope(xs, cos, sin, *, layout, positions, inverse, inplace):
    """The Triton kernel's outputs for ``xs`` (torch tensors on a device of
    :data:`TRITON_DEVICE_TYPES`), or None when it does not apply."""
    torch = sys.modules.get("torch")
    if torch is None or not all(isinstance(x, torch.Tensor) for x in xs):
        return None
    device = xs[0].device
    if device.type not in TRITON_DEVICE_TYPES or _compiling():
        return None
    module = _triton_module()
    if module is None:
        return None
    # tables and positions on the kernel's terms: float32 tensors on x's device
    cos, sin = (torch.as_tensor(t, device=device).to(torch.float32) for t in (cos, sin))
    if positions is not None:
        positions = torch.as_tensor(positions, device=device)
    return module.rope(tuple(xs), cos, sin, layout=layout, positions=positions, inverse=inverse, inplace=inplace)


def _needs_grad(*arrays) -> bool:
    torch = sys.modules.get("torch")
    if torch is None or not torch.is_grad_enabled():
        return False
    return any(isinstance(a, torch.Tensor) and a.requires_grad for a in arrays)


def _compiling() -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and torch.compiler.is_compiling()


# -- the public entry points -------------------------------------------------------


def _planned(cos, sin, positions, tables):
    """The kernels' view of the tables (``tables`` when the caller planned them) with
    this call's positions bound, or None for the reference path."""
    if tables is None:
        tables = plan_tables(cos, sin)
    return None if tables is None else _bind(tables, positions)


def rope_inplace(x, cos, sin, *, layout: str, positions=None, tables=None):
    """Rotate ``x`` (or each array of a tuple) in place; returns ``x``.

    The fused kernel where it applies, else compute and copy back. Shapes are validated
    by the caller (:func:`ropelab.apply_rope_`). Autograd does not see the write (as
    with any ``no_grad`` in-place update); train through
    :func:`ropelab.torch.rope_op.rotate` instead. ``tables``: :func:`plan_tables` of
    these cos/sin, kept by a caller that rotates with them often.
    """
    xs = x if isinstance(x, tuple) else (x,)
    if _triton_rope(xs, cos, sin, layout=layout, positions=positions, inverse=False, inplace=True) is not None:
        for xi in xs:  # the kernel wrote through raw pointers: tell autograd (see below)
            _torch().autograd.graph.increment_version(xi)
        return x
    tables = None if _compiling() else _planned(cos, sin, positions, tables)
    for xi in xs:
        plan = None if tables is None else _plan(xi, tables)
        if plan is None:
            _reference_inplace(xi, cos, sin, layout=layout, positions=positions)
        else:
            _run(plan, layout=layout, inverse=False)
            if array_kind(xi) == "torch":
                # the write went through a numpy view; tell autograd the tensor changed, so
                # a graph that saved it raises instead of using the rotated values silently
                _torch().autograd.graph.increment_version(xi)
    return x


def rope(x, cos, sin, *, layout: str, positions=None, inverse: bool = False, tables=None):
    """Rotate ``x`` (or each array of a tuple) into a new contiguous array of its kind,
    dtype and shape.

    The fused kernel runs when it applies and no gradient is being recorded; otherwise
    the reference path (differentiable, traceable by torch.compile and jax.jit).
    ``inverse`` rotates by the negative angle. ``tables``: :func:`plan_tables` of these
    cos/sin, kept by a caller that rotates with them often.
    """
    xs = x if isinstance(x, tuple) else (x,)
    planned = None
    if not _compiling() and not _needs_grad(*xs, cos, sin):
        outs = _triton_rope(xs, cos, sin, layout=layout, positions=positions, inverse=inverse, inplace=False)
        if outs is not None:
            return outs if isinstance(x, tuple) else outs[0]
        planned = _planned(cos, sin, positions, tables)
    outs = []
    for xi in xs:
        plan = None
        kind = array_kind(xi) if planned is not None else None
        if kind in ("numpy", "torch"):
            if kind == "torch":
                out = _torch().empty(tuple(xi.shape), dtype=xi.dtype, device=xi.device)
            else:
                out = np.empty(xi.shape, dtype=xi.dtype)
            plan = _plan(xi, planned, out=out)
        if plan is None:
            outs.append(reference(xi, cos, sin, layout=layout, positions=positions, inverse=inverse))
        else:
            _run(plan, layout=layout, inverse=inverse)
            outs.append(out)
    return tuple(outs) if isinstance(x, tuple) else outs[0]


def rope_rows(xs: tuple, tables, positions, *, layout: str):
    """The decode-step fast path: each tensor of ``xs`` rotated into a fresh tensor by
    table rows ``positions``; None when the path does not apply (the caller then takes
    :func:`rope`, which gives the same values).

    It applies to C-contiguous 4-D ``(B, H, T, D)`` torch CPU tensors of a kernel dtype,
    a plan of ``(P, R/2)`` tables (:func:`plan_tables`, R <= D) and a CPU int64 tensor
    ``positions`` broadcastable to ``(B, H, T)`` whose values the caller has checked
    against P; nothing recorded for autograd, nothing traced. Those conditions fix what
    :func:`_plan` works out in general: ~10 us less for a decode step's q and k.
    """
    if tables is None or len(tables["tshape"]) != 1 or _compiling():
        return None
    torch = sys.modules["torch"]
    if positions.dtype != torch.int64 or not positions.is_cpu or positions.dim() > 3:
        return None
    pos = np.ascontiguousarray(positions.numpy())  # (a slice of a longer row is not)
    # positions broadcast over (B, H, T): element strides, 0 where a dim is broadcast
    pshape = (1,) * (3 - pos.ndim) + pos.shape
    pstr = _broadcast_strides(pos.shape, tuple(st // 8 for st in pos.strides), pshape)
    pos = pos.reshape(-1)
    half = tables["half"]
    calls = []
    for x in xs:
        if x.dim() != 4 or x.requires_grad or not x.is_contiguous() or x.shape[-1] < 2 * half:
            return None
        B, H, T, D = x.shape
        if pshape[0] not in (1, B) or pshape[1] not in (1, H) or pshape[2] not in (1, T):
            return None
        storage = _storage(x)
        if storage is None or storage.size == 0:
            return None
        out = torch.empty((B, H, T, D), dtype=x.dtype)
        strides = (H * T * D, T * D, D)
        calls.append((out, *_out_call(storage, storage.reshape(-1), strides, _storage(out).reshape(-1), strides,
                                      tables, (0, 0, 0), pos, pstr, tables["rowstride"], (B, H, T))))
    for _, name, args in calls:
        _run((name, args), layout=layout, inverse=False)
    return tuple(out for out, _, _ in calls)
