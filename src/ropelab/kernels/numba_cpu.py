"""The numba backend: numpy arrays and torch CPU tensors, rotated by fused numba loops.

The loops (:mod:`ropelab.kernels._numba`, parallel over rows) rotate in one pass, in
place or into a fresh output, for float32, float64, bfloat16 and float16 storage (math
in float32, float64 for float64), both layouts, partial rotary, broadcast tables and
per-token positions, into a fresh output or a caller's ``out=`` buffer. This module turns arrays into what the loops read: flat numpy
views of their memory and element strides over three leading dims (B, H, T). It
declines (None) what the loops cannot take: other array kinds or devices, negative or
self-overlapping strides, more than three leading dims that do not merge.

The backend contract is :mod:`ropelab.kernels.interface`. Numba is imported by
:func:`status`, never at module load. Numba compiles each storage/table dtype pair once
and caches the machine code on disk (``cache=True``), so later processes pay only the
load (well under a second).

Shapes: x ``(..., T, D)``; cos/sin broadcastable to ``(..., T, R/2)``, or ``(P, R/2)``
tables with positions broadcastable to ``(..., T)``. R = 2 * cos.shape[-1] <= D.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import NamedTuple

import numpy as np

from .._optional import array_kind
from .interface import Rows, Status

__all__ = ["DISABLE_ENV", "PARALLEL_MIN_ELEMENTS", "TablePlan", "devices", "name", "plan", "rope", "rope_out",
           "rotate_at_", "rotate_fresh", "status", "turn_rows"]

name = "numba"
devices = ("cpu",)

DISABLE_ENV = "ROPELAB_DISABLE_NUMBA"

# below this many elements of x the loops run on the calling thread: a parallel launch
# costs more than the whole rotation (a decode step of 32 heads x 128 is 4096)
PARALLEL_MIN_ELEMENTS = 1 << 16

# the jitted loops, once status() has found numba (the modules, so that their functions
# are looked up at each call)
_loops = None
_row_loops = None


def status() -> Status:
    """Usable unless numba is missing or ``ROPELAB_DISABLE_NUMBA`` is set."""
    global _loops, _row_loops
    if os.environ.get(DISABLE_ENV, "").strip() not in ("", "0"):
        return Status(False, f"numba disabled by {DISABLE_ENV}=1")
    try:
        from . import _numba, _numba_rows
    except ImportError as err:
        return Status(False, f"numba is not installed ({err}); pip install 'ropelab[kernels]'")
    import numba

    try:  # starts numba's threading layer, which can fail (NUMBA_THREADING_LAYER=tbb without TBB)
        threads = numba.get_num_threads()
    except ValueError as err:
        return Status(False, f"numba cannot start a threading layer: {str(err).splitlines()[0]}")
    _loops, _row_loops = _numba, _numba_rows
    return Status(True, f"fused numba kernels (numba {numba.__version__}, {threads} threads)")


# numba's workqueue threading layer (its fallback where neither OpenMP nor TBB is found)
# aborts the process when two threads launch parallel loops at once; omp and tbb do not.
# Parallel launches hold this lock until the first one has shown which layer runs
# (numba.threading_layer() is only known after a launch), and for good under workqueue.
_PARALLEL_LOCK = threading.Lock()
_LAYER_THREAD_SAFE = None  # None: not known yet


def _launch(loop, args) -> None:
    global _LAYER_THREAD_SAFE
    if _LAYER_THREAD_SAFE or getattr(loop, "__name__", "").endswith("_serial"):
        loop(*args)
        return
    with _PARALLEL_LOCK:
        loop(*args)
        if _LAYER_THREAD_SAFE is None:
            import numba

            _LAYER_THREAD_SAFE = numba.threading_layer() in ("omp", "tbb")


# -- arrays as the loops read them -------------------------------------------------------


_F32, _F64, _F16 = np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16)


def _storage(x):
    """x as a numpy array of a loop storage dtype (a view of x's memory), or None."""
    if isinstance(x, np.ndarray):
        dtype = x.dtype  # compared as objects: dtype.name costs microseconds
        if dtype == _F32 or dtype == _F64:
            return x
        if dtype == _F16:
            return x.view(np.uint16)
        if dtype.kind == "V" and dtype.name == "bfloat16":  # ml_dtypes' bfloat16 (as jax uses)
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
    if not isinstance(t, np.ndarray):
        if array_kind(t) != "torch" or t.device.type != "cpu":
            return None
        torch = sys.modules["torch"]
        t = t.detach()
        if t.dtype != torch.float32 and t.dtype != torch.float64:
            t = t.float()
        try:
            t = t.numpy()
        except (RuntimeError, TypeError):
            return None
    if t.dtype != _F32 and t.dtype != _F64:
        t = t.astype(np.float64 if t.dtype.itemsize > 4 else np.float32)
    return t


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


def _shared(shape, strides) -> bool:
    """Whether several elements share memory (a zero stride over a dim of more than one:
    an expanded tensor), which cannot be rotated in place."""
    return any(st == 0 for n, st in zip(shape, strides, strict=True) if n > 1)


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


# -- tables and positions ------------------------------------------------------------------


class TablePlan(NamedTuple):
    """cos/sin as the loops read them: flat views of the tables' memory, and their layout."""

    cos: np.ndarray  # flat 1-D view (float32 or float64)
    sin: np.ndarray  # the same, with cos's strides
    half: int  # R/2
    shape: tuple  # the tables' leading dims (all but R/2)
    strides: tuple  # their element strides
    rowstride: int  # element stride between rows: the step of one position


def plan(cos, sin) -> TablePlan | None:
    """cos/sin as the loops read them (numpy views of their memory where the dtype and
    strides allow), or None when the loops cannot read them (a GPU tensor, a jax array).

    It may hold a converted copy (a bfloat16 table, say).
    """
    c, s = _table(cos), _table(sin)
    if c is None or s is None:
        return None
    if c.dtype != s.dtype:
        c, s = c.astype(np.float64), s.astype(np.float64)
    cflat = _flat(c) if c.strides == s.strides else None
    if cflat is None:
        c, s = np.ascontiguousarray(c), np.ascontiguousarray(s)
        cflat = _flat(c)
    cflat, cstr = cflat
    sflat, _ = _flat(s)
    return TablePlan(cflat, sflat, c.shape[-1], c.shape[:-1], cstr[:-1], cstr[0])


class _Reads(NamedTuple):
    """What the loops read in one call: a plan's tables, and positions or none.

    With positions the table row of a token is ``pos[...] * pstride`` and the tables do
    not broadcast against x (``tshape == ()``); without, ``pstride`` is 0 and one dummy
    position is read.
    """

    cos: np.ndarray
    sin: np.ndarray
    half: int
    tshape: tuple
    tstr: tuple
    pos: np.ndarray  # flat int64
    pshape: tuple
    pstr: tuple
    pstride: int


_NO_POSITIONS = np.zeros(1, dtype=np.int64)  # read at offset 0 with pstride 0


def _host(positions):
    """Integer positions as a numpy array (torch tensors are moved to the host)."""
    if isinstance(positions, np.ndarray):
        return positions
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(positions, torch.Tensor):
        return positions.detach().cpu().numpy()
    return np.asarray(positions)


def _int64(p: np.ndarray) -> np.ndarray:
    """``p`` as the loops read positions: C-contiguous int64 (a copy only when it is not)."""
    return p if p.dtype == np.int64 and p.flags.c_contiguous else np.ascontiguousarray(p, dtype=np.int64)


def _bind(tables: TablePlan, positions) -> _Reads:
    """The plan with this call's positions (or none) attached. The loops read table row
    ``positions[...]`` without a check of their own: IndexError here for a position
    outside the table's rows (callers check first; this keeps a missed check from
    reading past the table's memory)."""
    if positions is None:
        return _Reads(tables.cos, tables.sin, tables.half, tables.shape, tables.strides, _NO_POSITIONS, (), (), 0)
    p = _int64(_host(positions))
    rows = tables.shape[0] if tables.shape else 1
    if p.size and (p.min() < 0 or p.max() >= rows):
        bad = int(p.min()) if p.min() < 0 else int(p.max())
        raise IndexError(f"position {bad} is outside the table's rows 0..{rows - 1}")
    return _Reads(tables.cos, tables.sin, tables.half, (), (), p.reshape(-1), p.shape,
                  tuple(st // 8 for st in p.strides), tables.rowstride)


# -- loop calls --------------------------------------------------------------------------


def _out_call(n, x3, o3, reads: _Reads, ts3, ps3, shape3, head_dim, direction):
    """The out-of-place loop and its arguments: x3 and o3 are (flat view, strides over
    (B, H, T)) of x and out; ``n`` elements decide serial or parallel."""
    loop = _loops.rope_rows_out_serial if n < PARALLEL_MIN_ELEMENTS else _loops.rope_rows_out
    cos, sin, half, _, _, pos, _, _, pstride = reads
    return loop, (*x3, *o3, cos, sin, ts3, pos, ps3, pstride, shape3, half, 2 * half, head_dim, *direction)


def _call(xs, reads: _Reads, out, direction):
    """The loop and arguments that rotate the storage ``xs`` into ``out`` (an array of x's
    kind, shape and dtype with memory of its own: a fresh one, or a caller's ``out=``
    buffer) or, when ``out`` is None, in place; None when the loops cannot take it.
    ``direction``: (interleaved, sign of sin)."""
    inplace = out is None
    if xs.size == 0 or (inplace and not xs.flags.writeable):
        return None
    flat = _flat(xs)
    if flat is None:
        return None
    xflat, xstr = flat
    lead, lead_strides = xs.shape[:-1], xstr[:-1]
    if inplace:
        if _shared(lead, lead_strides):
            return None
        oflat, ostr = xflat, lead_strides
    else:
        ostorage = _storage(out)
        if xs.flags.c_contiguous and ostorage.flags.c_contiguous:  # the same shape: same strides
            oflat, ostr = ostorage.reshape(-1), lead_strides
        else:
            flat = _flat(ostorage)
            if flat is None:
                return None
            oflat, ostr = flat[0], flat[1][:-1]
    tstr = _broadcast_strides(reads.tshape, reads.tstr, lead)
    pstr = _broadcast_strides(reads.pshape, reads.pstr, lead)
    merged = _merge3(lead, [lead_strides, ostr, tstr, pstr])
    if merged is None:
        return None
    shape3, (xs3, os3, ts3, ps3) = merged
    if inplace:
        loop = _loops.rope_rows_inplace_serial if xs.size < PARALLEL_MIN_ELEMENTS else _loops.rope_rows_inplace
        return loop, (xflat, xs3, reads.cos, reads.sin, ts3, reads.pos, ps3, reads.pstride, shape3, reads.half,
                      *direction)
    return _out_call(xs.size, (xflat, xs3), (oflat, os3), reads, ts3, ps3, shape3, xs.shape[-1], direction)


def _empty_like(x):
    """A fresh contiguous array of x's kind, dtype and shape."""
    if isinstance(x, np.ndarray):
        return np.empty(x.shape, dtype=x.dtype)
    return sys.modules["torch"].empty(tuple(x.shape), dtype=x.dtype, device=x.device)


def rope(xs: tuple, angles, *, layout: str, inverse: bool, inplace: bool):
    """The backend's rotation (see :mod:`ropelab.kernels.interface`): every array of
    ``xs`` through the loops, or None (nothing written) when one of them cannot go."""
    return _rotate(xs, angles, None, layout=layout, inverse=inverse, inplace=inplace)


def rope_out(xs: tuple, angles, outs: tuple, *, layout: str, inverse: bool):
    """Every array of ``xs`` rotated into the buffer of ``outs`` at its index (x's kind,
    shape and dtype, memory of its own, checked by the caller), or None (nothing
    written) when one of them cannot go: a buffer with negative strides or strided last
    dim, say."""
    if not all(_storage(o) is not None and (not isinstance(o, np.ndarray) or o.flags.writeable) for o in outs):
        return None
    return _rotate(xs, angles, outs, layout=layout, inverse=inverse, inplace=False)


def _rotate(xs: tuple, angles, outs, *, layout: str, inverse: bool, inplace: bool):
    """Rotate ``xs`` in place, into ``outs``, or (``outs`` None) into fresh arrays; all or
    nothing: the outputs, or None."""
    if type(angles) is not Rows:
        return None
    cos, sin, positions = angles
    tables = plan(cos, sin)
    if tables is None:
        return None
    reads = _bind(tables, positions)
    direction = (layout == "interleaved", -1.0 if inverse else 1.0)
    calls, written = [], []
    for i, x in enumerate(xs):  # every array planned before any is written: all or nothing
        storage = _storage(x)
        if storage is None:
            return None
        out = None if inplace else _empty_like(x) if outs is None else outs[i]
        call = _call(storage, reads, out, direction)
        if call is None:
            return None
        calls.append(call)
        written.append(x if inplace else out)
    for loop, args in calls:
        _launch(loop, args)
    return tuple(written)


# -- exact rows ---------------------------------------------------------------------------

# below this many row numbers (positions x R/2) the rows are made on the calling thread:
# ~1 ns each (a 16k-token prefill's in ~1 ms), less than waking the thread pool may cost
ROWS_PARALLEL_MIN = 1 << 20


def turn_rows(positions, limbs, *, attention_factor: float = 1.0):
    """float32 ``(cos, sin)`` numpy rows ``positions.shape + (R/2,)`` of integer CPU
    ``positions`` (a numpy array or torch CPU tensor, values within +-2**33 checked by
    the caller) from ``limbs`` (:func:`ropelab.rows.turn_limbs`); None when the loops
    cannot take them (another device, a traced tensor)."""
    p = _host_ints(positions)
    if p is None:
        return None
    flat = p.reshape(-1)
    half = limbs.shape[1]
    cos = np.empty((flat.size, half), dtype=np.float32)
    sin = np.empty((flat.size, half), dtype=np.float32)
    if flat.size:
        loop = _row_loops.turn_rows_serial if flat.size * half < ROWS_PARALLEL_MIN else _row_loops.turn_rows
        _launch(loop, (flat, np.ascontiguousarray(limbs, dtype=np.float32), np.float32(attention_factor),
                       cos, sin))
    return cos.reshape(p.shape + (half,)), sin.reshape(p.shape + (half,))


def _tokens_per_chunk(xstr, length: int) -> int:
    """Tokens whose rows one worker makes and applies at a time. Heads of a token
    neighbours in memory ((B, T, H, D)): 128 (rows of 64 pairs: 64 KiB, cache-resident).
    A head's tokens neighbours ((B, H, T, D)): one chunk per thread, so each head is
    walked in long contiguous runs (short runs, jumping from head to head, measured
    slower than making all the rows first), at most 4096 tokens (rows of 2 MiB a worker
    for R = 128: a 128k-token prefill keeps no rows of its whole length)."""
    if xstr[1] <= xstr[2]:
        return 128
    import numba

    return max(64, min(4096, -(-length // numba.get_num_threads())))


def rotate_at_(xs: tuple, positions, limbs, *, attention_factor: float = 1.0, layout: str):
    """Each ``(B, H, T, D)`` array of ``xs`` (numpy or torch CPU, any strides with a
    contiguous last dim: a ``(B, T, H, D)`` tensor's ``transpose(1, 2)`` is one) rotated
    in place by the exact rows of integer CPU ``positions`` ``(T,)`` or ``(1 or B, T)``
    (values checked by the caller), made inside the loop from ``limbs`` ``(6, R/2)``
    (:func:`ropelab.rows.limbs_for`), R <= D; returns ``xs``, or None (nothing written)
    when the loops cannot take one of them. Nothing for autograd to record: the caller
    checks."""
    p = _host_ints(positions)
    if p is None or p.ndim not in (1, 2):
        return None
    half = limbs.shape[1]
    pos = p.reshape(-1, p.shape[-1])  # (1 or B, T)
    turns = np.ascontiguousarray(limbs, dtype=np.float32)
    views = []
    for x in xs:
        storage = _storage(x)
        if storage is None or storage.ndim != 4 or not storage.flags.writeable or storage.shape[-1] < 2 * half:
            return None
        B, H, T, _ = storage.shape
        if pos.shape[1] != T or pos.shape[0] not in (1, B):
            return None
        if storage.size == 0:
            continue
        flat = _flat(storage)
        if flat is None:
            return None
        xflat, xstr = flat
        if _shared(storage.shape[:3], xstr[:3]):
            return None
        views.append((xflat, xstr[:3], (B, H, T), storage.size))
    # two tensors of one batch (q and k) share a launch and each chunk's rows (memory
    # they might share is rotated in two launches, one tensor after the other); a
    # tensor without a partner goes with itself as a partner of no heads
    calls = []
    while views:
        x = views.pop(0)
        if views and views[0][2][0] == x[2][0] and not np.may_share_memory(x[0], views[0][0]):
            y = views.pop(0)
        else:
            y = (x[0], x[1], (x[2][0], 0, x[2][2]), 0)
        loop = (_row_loops.rotate_turns_inplace_serial if x[3] + y[3] < PARALLEL_MIN_ELEMENTS
                else _row_loops.rotate_turns_inplace)
        calls.append((loop, (x[0], x[1], x[2], y[0], y[1], y[2], pos, turns, np.float32(attention_factor),
                             layout == "interleaved", _tokens_per_chunk(x[1], x[2][2]))))
    for loop, args in calls:
        _launch(loop, args)
    return xs


def _host_ints(positions):
    """Positions as a C-contiguous int64 numpy array without a device copy, or None."""
    if not isinstance(positions, np.ndarray):
        torch = sys.modules.get("torch")
        if torch is None or not isinstance(positions, torch.Tensor) or not positions.is_cpu:
            return None
        positions = positions.detach().numpy()
    return _int64(positions)


def rotate_fresh(xs: tuple, cos, sin, *, layout: str):
    """The decode-step shortcut: each tensor of ``xs`` rotated into a fresh tensor by
    float32 CPU rows ``cos``/``sin`` of shape ``(T, R/2)`` or ``(B or 1, T, R/2)``
    (contiguous, as :func:`turn_rows` makes them); None when it does not apply
    (:func:`rope` gives the same values).

    It applies to C-contiguous 4-D ``(B, H, T, D)`` torch CPU tensors of a loop dtype
    with R <= D and nothing for autograd to record, outside torch.compile: those
    conditions fix what :func:`rope` works out in general (tens of microseconds less
    for a decode step's q and k).
    """
    torch = sys.modules["torch"]
    if cos.dtype != torch.float32 or sin.dtype != torch.float32 or not (cos.is_contiguous() and sin.is_contiguous()):
        return None
    if cos.dim() not in (2, 3) or cos.shape != sin.shape or not cos.is_cpu:
        return None
    c, s = cos.numpy().reshape(-1), sin.numpy().reshape(-1)
    half, length = cos.shape[-1], cos.shape[-2]
    rows_batch = cos.shape[0] if cos.dim() == 3 else 1
    reads = _Reads(c, s, half, (), (), _NO_POSITIONS, (), (), 0)
    direction = (layout == "interleaved", 1.0)
    calls = []
    for x in xs:
        if x.dim() != 4 or x.requires_grad or not x.is_contiguous() or x.shape[-1] < 2 * half:
            return None
        B, H, T, D = x.shape
        if T != length or rows_batch not in (1, B):
            return None
        storage = _storage(x)
        if storage is None or storage.size == 0:
            return None
        out = torch.empty((B, H, T, D), dtype=x.dtype)
        strides = (H * T * D, T * D, D)
        table_strides = (T * half if rows_batch > 1 else 0, 0, half)
        calls.append((out, *_out_call(storage.size, (storage.reshape(-1), strides),
                                      (_storage(out).reshape(-1), strides), reads, table_strides, (0, 0, 0),
                                      (B, H, T), D, direction)))
    for _, loop, args in calls:
        _launch(loop, args)
    return tuple(out for out, _, _ in calls)
