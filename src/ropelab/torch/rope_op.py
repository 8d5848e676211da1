"""The rotation op used by the PyTorch front end (one place to swap in fused kernels).

``rotate(x, cos, sin, layout)`` has :func:`ropelab.apply_rope`'s meaning; modules call
it rather than apply_rope so the kernel choice stays here.
"""

from __future__ import annotations

from ..rotary import apply_rope

__all__ = ["rotate"]


def rotate(x, cos, sin, layout: str):
    """x: (..., T, D) tensor; cos/sin: tensors broadcastable to (..., T, R/2)."""
    return apply_rope(x, cos, sin, layout=layout)
