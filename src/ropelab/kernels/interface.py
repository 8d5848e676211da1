"""What a kernel backend is: the contract between :mod:`ropelab.kernels` and its backends.

A backend is a module (or any object) with

``name: str``
    short and stable (``"numba"``, ``"triton"``): notes, ``kernels.backend()``.
``devices: tuple[str, ...]``
    the device types whose arrays it may take (``"cpu"`` for numpy arrays).
``status() -> Status``
    whether it can run here, and why not (its library missing, disabled by the
    environment). Asked once and kept until :func:`ropelab.kernels.reset_backend`; may
    import the backend's library, which module import must not.
``rope(xs, angles, *, layout, inverse, inplace) -> tuple | None``
    rotate each array of the tuple ``xs`` by ``angles`` (a :class:`Rows`); the outputs
    (fresh contiguous arrays of each x's kind, dtype and shape, or ``xs`` themselves
    when ``inplace``), or None, having written nothing, when it does not take the call.
    Arguments arrive checked (:mod:`ropelab.kernels.checks`); nothing is recorded for
    autograd and nothing is being traced. ``inverse`` rotates by the negative angle.

and, optionally,

``rope_out(xs, angles, outs, *, layout, inverse) -> tuple | None``
    rotate each array of ``xs`` into the buffer of ``outs`` at the same index (checked:
    x's kind, device, shape and dtype, memory of its own) and return ``outs``, or None,
    having written nothing. Backends without it still serve ``apply_rope(..., out=)``:
    their ``rope`` result is copied into the buffer.

and ``turn_rows(positions, limbs, *, attention_factor) -> (cos, sin) | None``: exact
float32 rows of integer positions from turn limbs (:mod:`ropelab.rows`), numpy arrays or
tensors on the positions' device, or None when it does not take the positions (another
device); ``rotate_at(xs, positions, limbs,
*, attention_factor, layout) -> tuple | None`` and ``rotate_at_(...) -> xs | None``: the
same rows made inside a rotation of ``(B, H, T, D)`` arrays into fresh ones or in
place, or None, having written nothing; and
``rotate_fresh(xs, cos, sin, *, layout) -> tuple | None``: a decode step's shortcut.

A backend declines with None rather than raising: :mod:`ropelab.kernels` then asks the
next one, and the reference path (:mod:`ropelab.kernels.reference`) takes what none
takes. Angles other than :class:`Rows` (a later form may carry ``inv_freq`` and
positions for kernels that compute their rows themselves) are declined the same way by a
backend that does not know them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["Rows", "Status"]


class Status(NamedTuple):
    """Whether a backend can run here; ``note`` says what it runs (a version, threads) or
    why it cannot."""

    usable: bool
    note: str


class Rows(NamedTuple):
    """The angles of a call as cos/sin rows.

    ``cos``/``sin`` broadcastable to x's ``(..., T, R/2)``; or, with ``positions``
    (integers broadcastable to ``(..., T)``), ``(P, R/2)`` tables whose row
    ``positions[..., t]`` rotates token t.
    """

    cos: Any
    sin: Any
    positions: Any = None
