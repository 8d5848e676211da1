"""RopeTables: cos/sin rows that carry the layout (and head width) they were made for.

Bare cos/sin do not say which pairing they serve, and the two pairings give different
answers, so :func:`ropelab.apply_rope` asks for ``layout=`` with bare tables. Tables
from :func:`ropelab.rope_tables` come as a ``RopeTables``: they unpack as ``cos, sin``
like any pair, and passed whole (``apply_rope(x, tables)``) they supply their config's
layout and head width, so nothing can be mixed up.

Shapes: cos and sin ``(..., T, R/2)``, R the rotary dim; ``head_dim`` D >= R is the
width of the heads the tables are for (None when unknown: then they rotate the whole
head, R = D).

A ``RopeTables`` is a named tuple of two arrays, so it passes through ``jax.jit``,
``jax.tree_util``, ``torch.compile`` and pickle with its layout and head width intact
(each (layout, head width) pair is its own small subclass, whose class attributes hold
them). No framework is imported here.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .checks import MAX_HEAD_DIM, check_int, check_layout

__all__ = ["RopeTables"]


class _Pair(NamedTuple):
    cos: Any
    sin: Any


# (layout, head_dim) -> the RopeTables subclass that carries them
_KINDS: dict[tuple[str, int | None], type] = {}


def _rebuild(cos, sin, layout, head_dim):
    return RopeTables(cos, sin, layout, head_dim=head_dim)


class RopeTables(_Pair):
    """cos and sin tables ``(..., T, R/2)`` with their ``layout`` (and ``head_dim``).

    ``RopeTables(cos, sin, layout, head_dim=None)``. Unpacks as ``cos, sin``; passed
    whole to :func:`ropelab.apply_rope` / :func:`ropelab.apply_rope_` it needs no
    ``layout=``, and an x whose width is not ``head_dim`` is refused (None: the tables
    rotate the whole head, x's width must be R).
    """

    __slots__ = ()
    layout: str | None = None
    head_dim: int | None = None

    def __new__(cls, cos, sin, layout: str | None = None, *, head_dim: int | None = None):
        if cls.layout is not None:  # a carrying subclass rebuilt from its fields (jax, _make)
            return _Pair.__new__(cls, cos, sin)
        if layout is None:
            raise TypeError("RopeTables needs a layout: 'interleaved' or 'half'")
        check_layout(layout)
        if head_dim is not None:
            head_dim = check_int("head_dim", head_dim, minimum=2, maximum=MAX_HEAD_DIM)
            shape = getattr(cos, "shape", None)
            if shape is not None and len(shape) and 2 * int(shape[-1]) > head_dim:
                raise ValueError(
                    f"tables of {int(shape[-1])} columns rotate {2 * int(shape[-1])} features, "
                    f"more than head_dim={head_dim}"
                )
        return _Pair.__new__(tables_kind(layout, head_dim), cos, sin)

    @property
    def rotary_dim(self) -> int:
        """R: twice the tables' last dimension."""
        return 2 * int(self.cos.shape[-1])

    def __reduce__(self):
        return (_rebuild, (self.cos, self.sin, self.layout, self.head_dim))

    def __repr__(self) -> str:
        tail = "" if self.head_dim is None else f", head_dim={self.head_dim}"
        return f"RopeTables(cos={self.cos!r}, sin={self.sin!r}, layout={self.layout!r}{tail})"


def tables_kind(layout: str, head_dim: int | None) -> type:
    """The :class:`RopeTables` subclass carrying ``(layout, head_dim)``, made on first use.

    A :class:`~ropelab.RopeConfig` makes its own when it is built, so code compiled
    before any eager call finds it made: ``torch.compile`` would otherwise guard on its
    absence and compile the same function again on the next call.
    """
    kind = _KINDS.get((layout, head_dim))
    if kind is None:
        kind = type("RopeTables", (RopeTables,), {"__slots__": (), "layout": layout, "head_dim": head_dim,
                                                 "__module__": __name__})
        _KINDS[(layout, head_dim)] = kind
    return kind
