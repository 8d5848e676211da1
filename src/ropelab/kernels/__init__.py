"""Kernel choice, in one place: fused kernels where available, the reference path beside.

Every fast path here is held equal to :func:`ropelab.apply_rope` by the tests.
"""

from __future__ import annotations

from .._optional import array_kind

__all__ = ["rope_inplace"]


def rope_inplace(x, cos, sin, *, layout: str):
    """Rotate ``x`` in place (reference path: compute out of place, copy back)."""
    from ..rotary import apply_rope

    out = apply_rope(x, cos, sin, layout=layout)
    if array_kind(x) == "torch":
        with __import__("torch").no_grad():
            x.copy_(out)
    else:
        x[...] = out
    return x
