"""transformers' full-width cos/sin tables <-> ropelab's rows, both layouts.

A transformers rotary module returns cos and sin of shape ``(..., T, R)``: every angle
twice, once for each member of its pair. ``torch.cat((freqs, freqs), -1)`` in the half
layout (Llama, Mistral, Qwen, GPT-NeoX: pair i is ``(x[i], x[i + R/2])``), and
``repeat_interleave(freqs, 2, -1)`` in the interleaved one (Cohere, GLM: pair i is
``(x[2i], x[2i+1])``). ropelab's tables hold each angle once, ``(..., T, R/2)``.

Shapes: full-width ``(..., T, R)``; rows ``(..., T, R/2)``. transformers' tables are
``(B, T, R)`` and are broadcast over heads by ``apply_rotary_pos_emb``
(``unsqueeze_dim=1``); for q of shape ``(B, H, T, D)`` give ropelab ``rows.cos[:, None]``
(or convert ``cos[:, None]``).

Works on numpy arrays, torch tensors and jax arrays, in their own kind; no framework is
imported here.
"""

from __future__ import annotations

import sys

from ._optional import array_kind
from .checks import show
from .config import check_layout
from .rotary import LAYOUT_FAMILIES
from .tables_type import RopeTables

__all__ = ["hf_from_rows", "rows_from_hf"]


def _kind(name: str, t) -> str:
    try:
        return array_kind(t)
    except TypeError:
        raise TypeError(
            f"{name} must be a numpy array, torch tensor or jax array, got {show(t)} ({type(t).__name__})"
        ) from None


def _layout(name: str, layout) -> str:
    if layout is None:
        raise TypeError(f"{name} needs layout=, the pairing the tables are for: {LAYOUT_FAMILIES}")
    return check_layout(layout)


def _concrete(t, kind: str) -> bool:
    """Whether the values can be read (not traced by jax.jit or torch.compile, not meta)."""
    if kind == "numpy":
        return True
    if kind == "torch":
        torch = sys.modules["torch"]
        return not torch.compiler.is_compiling() and t.device.type != "meta"
    import jax

    return not isinstance(t, jax.core.Tracer)


def _equal(a, b, kind: str) -> tuple[bool, float]:
    """(a == b everywhere, the largest difference)."""
    if kind == "numpy":
        import numpy as np

        diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    elif kind == "torch":
        diff = float((a - b).detach().abs().max()) if a.numel() else 0.0
    else:
        import jax.numpy as jnp

        diff = float(jnp.max(jnp.abs(a - b))) if a.size else 0.0
    return diff == 0.0, diff


def _copy(t, kind: str):
    if kind == "torch":
        return t.contiguous()
    if kind == "numpy":
        return t.copy()
    return t  # jax slices are new arrays


def rows_from_hf(cos, sin, *, layout: str | None = None) -> RopeTables:
    """ropelab rows ``(..., T, R/2)`` from transformers' full-width tables ``(..., T, R)``.

    Args:
        cos, sin: what a transformers rotary module returns (``cos, sin =
            model.model.rotary_emb(x, position_ids)``), any array kind, R even.
        layout: the pairing they are for: ``"half"`` (``cat((freqs, freqs), -1)``:
            Llama, Mistral, Qwen, GPT-NeoX) or ``"interleaved"`` (``repeat_interleave``:
            Cohere, GLM). Required.

    Returns:
        A :class:`ropelab.RopeTables` (unpacks as ``cos, sin``) carrying ``layout``;
        ``apply_rope(x, rows)`` needs no layout.

    Where the values can be read (not under jit or compile), each angle's two copies are
    checked equal: tables of the other pairing raise ValueError instead of giving a
    silently wrong rotation.
    """
    layout = _layout("rows_from_hf", layout)
    kinds = {_kind("cos", cos), _kind("sin", sin)}
    if len(kinds) != 1:
        raise TypeError(f"cos and sin must be arrays of one kind, got {type(cos).__name__} and {type(sin).__name__}")
    kind = kinds.pop()
    if tuple(cos.shape) != tuple(sin.shape):
        raise ValueError(f"cos and sin must have the same shape, got {tuple(cos.shape)} and {tuple(sin.shape)}")
    if len(cos.shape) < 1 or int(cos.shape[-1]) < 2 or int(cos.shape[-1]) % 2:
        raise ValueError(
            f"full-width tables must be shaped (..., T, R) with R even and >= 2, got shape {tuple(cos.shape)}"
        )
    width = int(cos.shape[-1])
    rows = []
    for name, t in (("cos", cos), ("sin", sin)):
        if layout == "half":
            first, second = t[..., : width // 2], t[..., width // 2 :]
        else:
            first, second = t[..., 0::2], t[..., 1::2]
        if _concrete(t, kind):
            same, diff = _equal(first, second, kind)
            if not same:
                other = "interleaved" if layout == "half" else "half"
                how = "its two halves differ" if layout == "half" else "its even and odd columns differ"
                raise ValueError(
                    f"{name} is not a full-width table of the {layout!r} layout: {how} (by up to "
                    f"{diff:.3g}); tables of the {other!r} layout need layout={other!r}"
                )
        rows.append(_copy(first, kind))
    return RopeTables(rows[0], rows[1], layout)


def hf_from_rows(cos, sin=None, *, layout: str | None = None) -> tuple:
    """transformers' full-width tables ``(..., T, R)`` from ropelab rows ``(..., T, R/2)``.

    ``hf_from_rows(tables)`` for a :class:`ropelab.RopeTables` (its own layout), or
    ``hf_from_rows(cos, sin, layout=...)``. The half layout repeats the rows side by side
    (``cat((c, c), -1)``), the interleaved one repeats each column in place
    (``repeat_interleave(c, 2, -1)``), as transformers' rotary modules build them.
    Returns ``(cos, sin)`` of the rows' kind, for ``apply_rotary_pos_emb``.
    """
    if isinstance(cos, RopeTables):
        if sin is not None:
            raise TypeError("hf_from_rows takes a RopeTables whole or cos and sin apart, not both")
        if layout is not None and check_layout(layout) != cos.layout:
            raise ValueError(f"layout={layout!r} disagrees with the tables' own layout {cos.layout!r}")
        cos, sin, layout = cos.cos, cos.sin, cos.layout
    elif sin is None:
        raise TypeError("hf_from_rows needs cos and sin, or a RopeTables passed whole; got cos alone")
    layout = _layout("hf_from_rows", layout)
    kinds = {_kind("cos", cos), _kind("sin", sin)}
    if len(kinds) != 1:
        raise TypeError(f"cos and sin must be arrays of one kind, got {type(cos).__name__} and {type(sin).__name__}")
    kind = kinds.pop()
    if tuple(cos.shape) != tuple(sin.shape):
        raise ValueError(f"cos and sin must have the same shape, got {tuple(cos.shape)} and {tuple(sin.shape)}")
    if len(cos.shape) < 1 or int(cos.shape[-1]) < 1:
        raise ValueError(f"rows must be shaped (..., T, R/2) with R/2 >= 1, got shape {tuple(cos.shape)}")
    return tuple(_widen(t, layout, kind) for t in (cos, sin))


def _widen(t, layout: str, kind: str):
    shape = tuple(t.shape[:-1]) + (2 * int(t.shape[-1]),)
    if kind == "torch":
        torch = sys.modules["torch"]
        if layout == "half":
            return torch.cat((t, t), dim=-1)
        return torch.stack((t, t), dim=-1).reshape(shape)
    if kind == "numpy":
        import numpy as xp
    else:
        import jax.numpy as xp
    if layout == "half":
        return xp.concatenate((t, t), axis=-1)
    return xp.stack((t, t), axis=-1).reshape(shape)
