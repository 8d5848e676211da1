"""Kernel choice, in one place: each backend in turn, then the reference path.

RoPE is memory bound: the least it can cost is one read and one write of q and k. The
backends rotate in one pass: :mod:`~ropelab.kernels.triton_gpu` (torch tensors on a
GPU, q and k in one Triton launch) and :mod:`~ropelab.kernels.numba_cpu` (numpy arrays
and torch CPU tensors, fused numba loops). A call goes to the first usable backend that
takes it; what none takes (jax arrays, float64 on a GPU, negative strides, numba or
triton missing or disabled) runs :mod:`~ropelab.kernels.reference`, eager array code
that is differentiable and traceable. So does everything while autograd records or
torch.compile traces. The tests hold every backend equal to the reference path (the
Triton kernel under Triton's interpreter on machines without a GPU).

A backend is one module with a ``name``, ``devices``, ``status()`` and ``rope(...)``
(the contract: :mod:`ropelab.kernels.interface`), listed in ``_BACKENDS`` below or added
at run time with :func:`register`.

Shapes: x ``(..., T, D)``; cos/sin broadcastable to ``(..., T, R/2)``, or with
``positions`` (integers broadcastable to ``(..., T)``) a ``(P, R/2)`` table indexed by
position. R = 2 * cos.shape[-1] <= D; features past R pass through. Arguments are
checked by the callers (:mod:`ropelab.kernels.checks`), not here.
"""

from __future__ import annotations

import sys

from . import numba_cpu, reference, triton_gpu
from .interface import Rows, Status
from .numba_cpu import DISABLE_ENV, PARALLEL_MIN_ELEMENTS
from .triton_gpu import DISABLE_ENV as DISABLE_TRITON_ENV

__all__ = [
    "DISABLE_ENV",
    "DISABLE_TRITON_ENV",
    "PARALLEL_MIN_ELEMENTS",
    "Rows",
    "Status",
    "backend",
    "backend_note",
    "backends",
    "reference",
    "register",
    "reset_backend",
    "rope",
    "rope_inplace",
    "rope_into",
    "rotate_at",
    "rotate_at_",
    "rotate_fresh",
    "turn_rows",
    "unregister",
]

#: the backends, tried in this order (each declines what is not its own)
_BACKENDS: tuple = (triton_gpu, numba_cpu)

# asked once, until reset_backend(): name -> Status, and the usable backends in order
_STATUS: dict[str, Status] = {}
_USABLE: tuple | None = None


def _usable() -> tuple:
    global _USABLE
    if _USABLE is None:
        for b in _BACKENDS:
            if b.name not in _STATUS:
                _STATUS[b.name] = b.status()
        _USABLE = tuple(b for b in _BACKENDS if _STATUS[b.name].usable)
    return _USABLE


def reset_backend() -> None:
    """Forget what each backend said of itself (they are asked again, honouring the
    environment)."""
    global _USABLE
    _STATUS.clear()
    _USABLE = None


def backends() -> tuple:
    """The backends in the order they are tried (registered ones first)."""
    return _BACKENDS


def register(backend) -> None:
    """Add a kernel backend, tried before the others (one of the same name is replaced).

    ``backend`` is a module or object with ``name``, ``devices``, ``status()`` and
    ``rope(xs, angles, *, layout, inverse, inplace)`` as :mod:`ropelab.kernels.interface`
    describes. Every entry point uses it: :func:`ropelab.apply_rope`,
    :func:`ropelab.apply_rope_`, and the torch op (:mod:`ropelab.torch.rope_op`), whose
    autograd formula (the inverse rotation, ``inverse=True``) and ``torch.compile``
    support stay the op's.
    """
    missing = [a for a in ("name", "devices", "status", "rope") if not hasattr(backend, a)]
    if missing:
        raise TypeError(f"a kernel backend needs {', '.join(missing)} (see ropelab.kernels.interface); "
                        f"{backend!r} has not")
    if not isinstance(backend.name, str) or not backend.name:
        raise ValueError(f"a kernel backend's name must be a non-empty string, got {backend.name!r}")
    global _BACKENDS
    _BACKENDS = (backend, *(b for b in _BACKENDS if b.name != backend.name))
    reset_backend()


def unregister(name: str) -> None:
    """Remove the backend called ``name`` (ValueError when there is none)."""
    global _BACKENDS
    if name not in (b.name for b in _BACKENDS):
        raise ValueError(f"no kernel backend is called {name!r}; there are {[b.name for b in _BACKENDS]}")
    _BACKENDS = tuple(b for b in _BACKENDS if b.name != name)
    reset_backend()


def backend(device: str = "cpu") -> str:
    """The name of the backend that rotates arrays on ``device`` (``"numba"`` for the
    fused CPU loops), or ``"reference"`` when none can."""
    for b in _usable():
        if device in b.devices:
            return b.name
    return "reference"


def backend_note() -> str:
    """One line saying which path runs for CPU arrays and for GPU tensors, and why when it
    is the reference path."""
    _usable()

    def note(on_cpu: bool, fallback: str) -> str:
        mine = [b for b in _BACKENDS if ("cpu" in b.devices) == on_cpu]
        for b in mine:
            if _STATUS[b.name].usable:
                return _STATUS[b.name].note
        return fallback.format("; ".join(_STATUS[b.name].note for b in mine) or "no backend")

    return f"{note(True, 'reference path only: {}')}; GPU tensors: {note(False, 'reference path ({})')}"


# -- the entry points -----------------------------------------------------------------


def _needs_grad(*arrays) -> bool:
    torch = sys.modules.get("torch")
    if torch is None or not torch.is_grad_enabled():
        return False
    return any(isinstance(a, torch.Tensor) and a.requires_grad for a in arrays)


def _compiling() -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and torch.compiler.is_compiling()


def _dispatch(xs: tuple, angles, *, layout: str, inverse: bool, inplace: bool) -> tuple:
    """Outputs for ``xs`` from the first backend that takes them all, else from the first
    that takes each array alone; None for an array that no backend takes."""
    for b in _usable():
        outs = b.rope(xs, angles, layout=layout, inverse=inverse, inplace=inplace)
        if outs is not None:
            return outs
    if len(xs) == 1:
        return (None,)
    return tuple(_dispatch((x,), angles, layout=layout, inverse=inverse, inplace=inplace)[0] for x in xs)


def rope_inplace(x, cos, sin, *, layout: str, positions=None):
    """Rotate ``x`` (or each array of a tuple) in place; returns ``x``.

    A backend where one takes it, else compute and copy back. Shapes are validated by
    the caller (:func:`ropelab.apply_rope_`). Autograd does not see the write (as with
    any ``no_grad`` in-place update); train through :func:`ropelab.torch.rope_op.rotate`
    instead.
    """
    xs = x if isinstance(x, tuple) else (x,)
    if _compiling():
        outs = (None,) * len(xs)
    else:
        outs = _dispatch(xs, Rows(cos, sin, positions), layout=layout, inverse=False, inplace=True)
    torch = sys.modules.get("torch")
    for xi, out in zip(xs, outs, strict=True):
        if out is None:
            reference.rotate_inplace(xi, cos, sin, layout=layout, positions=positions)
        elif torch is not None and isinstance(xi, torch.Tensor):
            # a backend may write through raw memory: tell autograd the tensor changed, so
            # a graph that saved it raises instead of using the rotated values silently
            torch.autograd.graph.increment_version(xi)
    return x


def rope(x, cos, sin, *, layout: str, positions=None, inverse: bool = False):
    """Rotate ``x`` (or each array of a tuple) into a new contiguous array of its kind,
    dtype and shape.

    A backend runs when one takes it and no gradient is being recorded; otherwise the
    reference path (differentiable, traceable by torch.compile and jax.jit).
    ``inverse`` rotates by the negative angle.
    """
    xs = x if isinstance(x, tuple) else (x,)
    if _compiling() or _needs_grad(*xs, cos, sin):
        outs = (None,) * len(xs)
    else:
        outs = _dispatch(xs, Rows(cos, sin, positions), layout=layout, inverse=inverse, inplace=False)
    outs = tuple(reference.rotate(xi, cos, sin, layout=layout, positions=positions, inverse=inverse)
                 if out is None else out for xi, out in zip(xs, outs, strict=True))
    return outs if isinstance(x, tuple) else outs[0]


def rope_into(x, out, cos, sin, *, layout: str, positions=None, in_place=None):
    """Rotate ``x`` (or each array of a tuple) into the given buffer ``out`` (a tuple for
    a tuple); returns ``out``.

    Arguments are checked by the caller (:func:`ropelab.kernels.checks.check_out`, which
    also says which buffers are their own input: ``in_place``, rotated by
    :func:`rope_inplace`). The others go to the first backend with a ``rope_out`` that
    takes them (one read of x and one write of out), else they are rotated by
    :func:`rope` and copied in. Nothing is recorded for autograd: the caller refuses
    ``out=`` where a gradient is wanted.
    """
    xs = x if isinstance(x, tuple) else (x,)
    outs = out if isinstance(out, tuple) else (out,)
    in_place = in_place or (False,) * len(xs)
    same = tuple(xi for xi, alias in zip(xs, in_place, strict=True) if alias)
    if same:
        rope_inplace(same, cos, sin, layout=layout, positions=positions)
    pairs = [(xi, oi) for xi, oi, alias in zip(xs, outs, in_place, strict=True) if not alias]
    if not pairs:
        return out
    written = None if _compiling() else _dispatch_out(
        tuple(p[0] for p in pairs), tuple(p[1] for p in pairs), Rows(cos, sin, positions), layout=layout)
    torch = sys.modules.get("torch")
    for (xi, oi), done in zip(pairs, written or (False,) * len(pairs), strict=True):
        if not done:
            rotated = rope(xi, cos, sin, layout=layout, positions=positions)
            if torch is not None and isinstance(oi, torch.Tensor):
                oi.copy_(rotated)
            else:
                oi[...] = rotated
        elif torch is not None and isinstance(oi, torch.Tensor):
            torch.autograd.graph.increment_version(oi)  # written through raw memory
    return out


def _dispatch_out(xs: tuple, outs: tuple, angles, *, layout: str) -> tuple | None:
    """For each array, whether a backend's ``rope_out`` wrote it into its buffer: all of
    them by the first backend that takes them together, else each alone."""
    for b in _usable():
        write = getattr(b, "rope_out", None)
        if write is not None and write(xs, angles, outs, layout=layout, inverse=False) is not None:
            return (True,) * len(xs)
    if len(xs) == 1:
        return None
    return tuple(bool(_dispatch_out((xi,), (oi,), angles, layout=layout)) for xi, oi in zip(xs, outs, strict=True))


def _first(entry: str, *args, device: str | None = None, **kwargs):
    """What the first usable backend with ``entry`` (and, given ``device``, taking that
    device type) returns that is not None; None when none does or torch.compile traces
    (the callers' fallbacks are traceable)."""
    if _compiling():
        return None
    for b in _usable():
        call = getattr(b, entry, None)
        if call is not None and (device is None or device in b.devices):
            done = call(*args, **kwargs)
            if done is not None:
                return done
    return None


def turn_rows(positions, limbs, *, attention_factor: float = 1.0):
    """Exact float32 ``(cos, sin)`` rows of integer ``positions`` (shape
    ``positions.shape + (R/2,)``, of the positions' kind and device: torch tensors for a
    torch tensor) from turn limbs ``(6, R/2)`` (:func:`ropelab.rows.limbs_for`), made by
    the first usable backend with a ``turn_rows`` (numba on the CPU, Triton on a GPU);
    None when none takes them (no backend for the device, inside torch.compile):
    :func:`ropelab.rows.torch_rows` gives the same numbers (to a float32 rounding of
    sin/cos) with array ops.

    Position values are checked by the caller (within +-2**33,
    :data:`ropelab.rows.MAX_EXACT_POSITION`).
    """
    made = _first("turn_rows", positions, limbs, attention_factor=attention_factor)
    torch = sys.modules.get("torch")
    if made is not None and torch is not None and isinstance(positions, torch.Tensor) \
            and not isinstance(made[0], torch.Tensor):  # numpy rows of a CPU tensor's positions
        return torch.from_numpy(made[0]), torch.from_numpy(made[1])
    return made


def rotate_at(xs: tuple, positions, limbs, *, attention_factor: float = 1.0, layout: str):
    """Each ``(B, H, T, D)`` torch tensor of ``xs`` rotated into a fresh one (x's strides) by the
    exact rows of integer ``positions`` ``(T,)`` or ``(1 or B, T)``, made inside the
    kernel from turn limbs ``(6, R/2)`` (:func:`ropelab.rows.limbs_for`; R <= D); None
    when no backend takes them (Triton's does, on a GPU; on the CPU :func:`turn_rows`
    then :func:`rope` are the way). Arguments are checked by the caller, and autograd
    must have nothing to record."""
    # only backends of the tensors' device are asked (a CPU decode step pays ~1.5 us for the question)
    return _first("rotate_at", xs, positions, limbs, device=xs[0].device.type, attention_factor=attention_factor,
                  layout=layout)


def rotate_at_(xs: tuple, positions, limbs, *, attention_factor: float = 1.0, layout: str):
    """Each ``(B, H, T, D)`` array of ``xs`` rotated in place by the exact rows of
    integer ``positions`` ``(T,)`` or ``(1 or B, T)``, made inside the kernel from turn
    limbs ``(6, R/2)`` (:func:`ropelab.rows.limbs_for`; R <= D): the rows never go
    through memory. Returns ``xs``, or None (nothing written) when no backend takes them
    (then :func:`turn_rows` and :func:`rope_inplace` give the same values). Arguments
    are checked by the caller, and autograd must have nothing to record (numba's:
    :func:`ropelab.kernels.numba_cpu.rotate_at_`)."""
    done = _first("rotate_at_", xs, positions, limbs, attention_factor=attention_factor, layout=layout)
    return None if done is None else xs


def rotate_fresh(xs: tuple, cos, sin, *, layout: str):
    """The decode-step shortcut: each tensor of ``xs`` rotated into a fresh tensor by
    rows ``cos``/``sin`` (``(T, R/2)`` or ``(B or 1, T, R/2)``, one row per token, all
    heads), or None when no backend's shortcut applies (the caller then takes
    :func:`rope`, which gives the same values). Arguments are checked by the caller;
    the backend says what it takes (numba's: contiguous ``(B, H, T, D)`` CPU tensors
    and float32 rows, nothing for autograd to record,
    :func:`ropelab.kernels.numba_cpu.rotate_fresh`)."""
    return _first("rotate_fresh", xs, cos, sin, layout=layout)
