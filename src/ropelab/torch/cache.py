"""Preallocated key/value cache for incremental decoding.

Keys are stored already rotated (RoPE is applied once per token, at its true
position), beside each slot's position so chunked and sliding-window masks can be
built for cached keys too.

Shapes: B batch, K kv heads, C capacity, S filled slots, T new tokens, D head dim.
    keys, values (B, K, C, D); positions (B, C) long.
"""

from __future__ import annotations

from .._optional import require
from ..checks import check_int

torch = require("torch", feature="ropelab.torch")

from .checks import check_padding_mask  # noqa: E402

__all__ = ["Cache", "KVCache", "positions_from_mask"]


def positions_from_mask(mask):
    """Token positions from a ``(B, S)`` 1/0 padding mask: ``cumsum - 1``, pads at 0.

    A left-padded row ``[0, 0, 1, 1, 1]`` gets positions ``[0, 0, 0, 1, 2]``, so every
    sequence starts at position 0 whatever its padding (as transformers' ``generate``
    does, except that pads get 0 here rather than 1; pads are masked either way).
    ``mask`` is a bool or integer tensor (:func:`ropelab.torch.checks.check_padding_mask`).
    """
    check_padding_mask(mask, name="mask")
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


class KVCache:
    """One layer's cache: ``capacity`` slots of keys, values and their positions.

    ``update(k, v, positions)`` writes ``T`` new tokens after the ``length`` filled
    slots and returns views of everything filled so far: keys and values
    ``(B, K, S, D)`` and positions ``(B, S)``, with ``S = length + T``.
    """

    def __init__(self, batch, num_kv_heads, capacity, head_dim, *, dtype=None, device=None):
        check_int("batch", batch, minimum=1)
        check_int("num_kv_heads", num_kv_heads, minimum=1)
        check_int("capacity", capacity, minimum=1)
        check_int("head_dim", head_dim, minimum=1)
        dtype = dtype or torch.get_default_dtype()
        shape = (batch, num_kv_heads, capacity, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.positions = torch.zeros((batch, capacity), dtype=torch.long, device=device)
        self.length = 0

    @property
    def capacity(self) -> int:
        return int(self.keys.shape[2])

    @property
    def batch(self) -> int:
        return int(self.keys.shape[0])

    @property
    def dtype(self):
        """The dtype of the cached keys and values."""
        return self.keys.dtype

    def check_room(self, new: int) -> None:
        """Raise ValueError if ``new`` more tokens do not fit."""
        wanted = self.length + new
        if wanted > self.capacity:
            raise ValueError(
                f"KV cache of capacity {self.capacity} cannot hold {wanted} tokens "
                f"({self.length} cached + {new} new); make a cache with capacity >= {wanted}"
            )

    def update(self, k, v, positions):
        """Append k, v ``(B, K, T, D)`` at positions ``(B, T)``; return all filled slots.

        k and v are written in the cache's dtype (under autocast they may come in
        another; :class:`Attention` refuses a cache whose dtype is not its weights')."""
        if k.shape != v.shape or k.dim() != 4:
            raise ValueError(
                f"k and v must both be (B, K, T, D), got {tuple(k.shape)} and {tuple(v.shape)}"
            )
        b, heads, new, dim = k.shape
        if (b, heads, dim) != (self.batch, self.keys.shape[1], self.keys.shape[3]):
            raise ValueError(
                f"new keys of shape {tuple(k.shape)} do not fit a cache of shape "
                f"(B, K, C, D) = {tuple(self.keys.shape)}"
            )
        self.check_room(new)
        start, end = self.length, self.length + new
        self.keys[:, :, start:end] = k.to(self.keys.dtype)
        self.values[:, :, start:end] = v.to(self.values.dtype)
        self.positions[:, start:end] = positions.expand(b, new)
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end], self.positions[:, :end]

    def reset(self) -> None:
        self.length = 0

    def __repr__(self) -> str:
        b, k, c, d = self.keys.shape
        return f"KVCache(B={b}, K={k}, capacity={c}, D={d}, length={self.length})"


class Cache:
    """A :class:`KVCache` per layer, all of one capacity; ``cache[i]`` is layer i's."""

    def __init__(
        self, num_layers, batch, num_kv_heads, capacity, head_dim, dtype=None, *, device=None
    ):
        check_int("num_layers", num_layers, minimum=1)
        self.layers = [
            KVCache(batch, num_kv_heads, capacity, head_dim, dtype=dtype, device=device)
            for _ in range(num_layers)
        ]

    def __getitem__(self, index: int) -> KVCache:
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def length(self) -> int:
        """Tokens cached so far (those of the first layer; all layers agree between calls)."""
        return self.layers[0].length

    @property
    def capacity(self) -> int:
        return self.layers[0].capacity

    def reset(self) -> None:
        for layer in self.layers:
            layer.reset()

    def __repr__(self) -> str:
        return f"Cache(layers={len(self)}, {self.layers[0]!r})"
