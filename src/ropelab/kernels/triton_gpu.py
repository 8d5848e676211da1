"""The Triton backend: torch tensors on a GPU, q and k in one launch.

The kernel (:mod:`ropelab.kernels._triton`) takes float32, bfloat16 and float16 tensors
of up to four dims sharing B and T, with float32 tables whose rows are the same for
every head; this module moves the tables and positions to the tensors' device as
float32 and int tensors and hands over. It declines (None) other kinds, devices and
dtypes (float64 on a GPU goes to the reference path).

The backend contract is :mod:`ropelab.kernels.interface`. Triton is imported by
:func:`status`, never at module load; ``ROPELAB_DISABLE_TRITON=1`` turns the backend off.

Shapes: x ``(..., T, D)``; cos/sin broadcastable to ``(..., T, R/2)``, or ``(P, R/2)``
tables with positions broadcastable to ``(..., T)``.
"""

from __future__ import annotations

import os
import sys

from .interface import Rows, Status

__all__ = ["DISABLE_ENV", "devices", "name", "rope", "rope_at", "rope_out", "rotate_at", "rotate_at_", "status", "turn_rows"]

name = "triton"

#: device types whose torch tensors this backend takes; tests add "cpu" to run the kernel
#: under Triton's interpreter (TRITON_INTERPRET=1)
devices = ("cuda",)

DISABLE_ENV = "ROPELAB_DISABLE_TRITON"

_kernel = None  # the kernel module, once status() has found triton


def status() -> Status:
    """Usable unless triton is missing or ``ROPELAB_DISABLE_TRITON`` is set."""
    global _kernel
    if os.environ.get(DISABLE_ENV, "").strip() not in ("", "0"):
        return Status(False, f"triton disabled by {DISABLE_ENV}=1")
    try:
        from . import _triton
    except ImportError as err:
        return Status(False, f"triton is not installed ({err})")
    _kernel = _triton
    return Status(True, f"Triton kernel (triton {_triton.triton.__version__})")


def rope(xs: tuple, angles, *, layout: str, inverse: bool, inplace: bool):
    """The backend's rotation (see :mod:`ropelab.kernels.interface`): one launch for all
    of ``xs`` (one or two tensors), or None."""
    return _launch(xs, angles, None, layout=layout, inverse=inverse, inplace=inplace)


def rope_out(xs: tuple, angles, outs: tuple, *, layout: str, inverse: bool):
    """One launch rotating ``xs`` into the caller's buffers ``outs`` (see
    :mod:`ropelab.kernels.interface`), or None."""
    return _launch(xs, angles, outs, layout=layout, inverse=inverse, inplace=False)


def _launch(xs: tuple, angles, outs, *, layout: str, inverse: bool, inplace: bool):
    if type(angles) is not Rows:
        return None
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(xs[0], torch.Tensor) or xs[0].device.type not in devices:
        return None  # (the common refusal, numpy arrays and CPU tensors, kept cheap)
    if not all(isinstance(x, torch.Tensor) for x in xs):
        return None
    device = xs[0].device
    # tables and positions on the kernel's terms: float32 tensors on x's device
    cos, sin = (torch.as_tensor(t, device=device).to(torch.float32) for t in (angles.cos, angles.sin))
    positions = angles.positions
    if positions is not None:
        positions = torch.as_tensor(positions, device=device)
    return _kernel.rope(tuple(xs), cos, sin, layout=layout, positions=positions, inverse=inverse, inplace=inplace,
                        outs=outs)


def rope_at(xs: tuple, config, positions, *, inverse: bool = False, inplace: bool = False, outs=None,
            seq_len: int | None = None):
    """Rotate ``xs`` (q, or q and k, ``(..., T, D)`` torch tensors) by ``config``'s angles
    at integer ``positions`` (broadcastable to ``(..., T)``) in one launch, each token's
    cos/sin computed in the kernel from its position (:mod:`ropelab.rows`' exact
    arithmetic): no table, no length limit, exact at every ``|p| < 2**31``. The outputs
    as :func:`rope` gives them, or None when the kernel does not apply (then rotate by
    ``ropelab.rope_tables(config, positions)`` instead). ``seq_len`` as for
    :func:`ropelab.rope_tables` (length-dependent schemes need it).
    """
    if not status().usable:
        return None
    torch = sys.modules.get("torch")
    if torch is None or not all(isinstance(x, torch.Tensor) for x in xs) or xs[0].device.type not in devices:
        return None
    if not isinstance(positions, torch.Tensor) or positions.dtype.is_floating_point:
        return None
    if config.dynamic and seq_len is None:
        return None  # max(positions) + 1 would be a host round trip
    from ..rows import limbs_for, torch_limbs

    device = xs[0].device
    limbs = torch_limbs(limbs_for(config, seq_len), device)  # (6, R/2) float32, copied there once
    return _kernel.rope(tuple(xs), None, None, layout=config.layout, positions=positions.to(device),
                        inverse=inverse, inplace=inplace, outs=outs, limbs=limbs,
                        attention_factor=config.attention_factor)


def rotate_at(xs: tuple, positions, limbs, *, attention_factor: float = 1.0, layout: str):
    """Each ``(B, H, T, D)`` tensor of ``xs`` (q, or q and k; any strides with a unit
    stride over D, e.g. a ``(B, T, H, D)`` tensor's ``transpose(1, 2)``) rotated into a
    fresh tensor with x's strides, one launch, each token's cos/sin made in the kernel
    from integer ``positions`` ``(T,)`` or ``(1 or B, T)`` and the kept turn ``limbs``
    (:func:`ropelab.rows.limbs_for`, copied to the device once); None when the kernel
    does not take them. Values and shapes are checked by the caller."""
    return _rotate_at(xs, positions, limbs, attention_factor, layout, inplace=False)


def rotate_at_(xs: tuple, positions, limbs, *, attention_factor: float = 1.0, layout: str):
    """:func:`rotate_at` in place: returns ``xs``, or None having written nothing."""
    return _rotate_at(xs, positions, limbs, attention_factor, layout, inplace=True)


def _rotate_at(xs: tuple, positions, limbs, attention_factor: float, layout: str, *, inplace: bool):
    torch = sys.modules.get("torch")
    if torch is None or not all(isinstance(x, torch.Tensor) for x in xs) or xs[0].device.type not in devices:
        return None
    if not isinstance(positions, torch.Tensor) or positions.dim() not in (1, 2) or any(x.dim() != 4 for x in xs):
        return None
    from ..rows import torch_limbs

    device = xs[0].device
    # (1 or B, 1, T): one row per token, the same for every head
    per_token = positions.to(device).reshape(-1, 1, positions.shape[-1])
    outs = None if inplace else tuple(torch.empty_like(x) for x in xs)  # x's strides
    return _kernel.rope(tuple(xs), None, None, layout=layout, positions=per_token, inplace=inplace, outs=outs,
                        limbs=torch_limbs(limbs, device), attention_factor=attention_factor)


def turn_rows(positions, limbs, *, attention_factor: float = 1.0):
    """Exact float32 ``(cos, sin)`` torch rows ``positions.shape + (R/2,)`` of integer
    ``positions`` on the kernel's device, one launch, from the kept turn ``limbs``
    (:func:`ropelab.rows.limbs_for`, copied to the device once; values and dtype checked
    by the caller); None for tensors on other devices."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(positions, torch.Tensor) or positions.device.type not in devices:
        return None
    from ..rows import torch_limbs

    return _kernel.rows(positions, torch_limbs(limbs, positions.device), attention_factor)
