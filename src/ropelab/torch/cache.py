"""Preallocated key/value cache for incremental decoding.

Keys are stored already rotated (RoPE is applied once per token, at its true
position), beside each slot's position so chunked and sliding-window masks can be
built for cached keys too, and whether the slot held a token or padding, so a later
call without a mask keeps the padding hidden and continues each row's positions.

Shapes: B batch, K kv heads, C capacity, S filled slots, T new tokens, D head dim.
    keys, values (B, K, C, D); positions (B, C) long; tokens (B, C) bool.
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
    """One layer's cache: ``capacity`` slots of keys, values, their positions and
    whether each held a token or padding.

    ``update(k, v, positions, mask=None)`` writes ``T`` new tokens after the ``length``
    filled slots and returns views of everything filled so far: keys and values
    ``(B, K, S, D)`` and positions ``(B, S)``, with ``S = length + T``.

    The record of tokens and padding (``tokens``, ``(B, C)`` bool) comes from the
    masks given to :meth:`update` (slots written without one hold tokens). A call
    without a mask reads it back: :meth:`key_mask` hides the recorded padding and
    :meth:`next_positions` continues each row where its tokens stopped, so decoding
    without a mask after a left-padded prompt equals the full forward with the mask
    extended by ones.
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
        #: per slot: True for a token, False for padding (meaningful below ``length``)
        self.tokens = torch.ones((batch, capacity), dtype=torch.bool, device=device)
        self.length = 0
        #: a mask was recorded, so some filled slot may be padding
        self.padded = False
        #: every filled slot's position is its slot index (written without positions)
        self.counted = True

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

    def update(self, k, v, positions=None, *, mask=None):
        """Append k, v ``(B, K, T, D)``; return all filled slots.

        Args:
            k, v: the new keys (already rotated) and values.
            positions: ``(B or 1, T)`` their positions; None for their slot indices
                ``length + arange(T)``.
            mask: ``(B, S)`` 1 for tokens and 0 for padding over every filled slot,
                cached and new (``S = length + T``), recorded as the slots' record; None:
                the new slots hold tokens.

        Returns:
            keys and values ``(B, K, S, D)``, positions ``(B, S)``: views of the filled
            slots. k and v are written in the cache's dtype (under autocast they may
            come in another; :class:`Attention` refuses a cache whose dtype is not its
            weights').
        """
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
        if mask is not None:
            check_padding_mask(mask, (b, end), name="mask", covers=f"(cached {start} + new {new} slots)")
        self.keys[:, :, start:end] = k.to(self.keys.dtype)
        self.values[:, :, start:end] = v.to(self.values.dtype)
        if positions is None:
            self.positions[:, start:end] = torch.arange(start, end, device=self.positions.device)
        else:
            self.positions[:, start:end] = positions.expand(b, new)
        if mask is None:
            self.tokens[:, start:end] = True
        else:
            self.tokens[:, :end] = mask.to(device=self.tokens.device, dtype=torch.bool)
        self.length = end
        self.padded = self.padded or mask is not None
        self.counted = self.counted and positions is None and mask is None
        return self.keys[:, :, :end], self.values[:, :, :end], self.positions[:, :end]

    def key_mask(self, new: int):
        """``(B, length + new)`` bool: the record of the filled slots (False for padding),
        then True for ``new`` tokens; None when no padding was recorded."""
        if not self.padded:
            return None
        fresh = torch.ones((self.batch, new), dtype=torch.bool, device=self.tokens.device)
        return torch.cat([self.tokens[:, : self.length], fresh], dim=1)

    def next_positions(self, new: int):
        """``(B, new)`` long positions that continue each row: the position of the row's
        last recorded token + 1, then on by one (0 on for a row that holds no token
        yet); None when every filled slot's position is its slot index (then they are
        ``length + arange(new)``). Computed on the cache's device, with no host read."""
        filled = self.length
        if self.counted or not filled:
            return None
        steps = torch.arange(new, device=self.positions.device)
        if not self.padded:  # every slot a token: the last one is the row's last token
            return self.positions[:, filled - 1 : filled] + 1 + steps
        slots = torch.arange(filled, device=self.positions.device)
        last = torch.where(self.tokens[:, :filled], slots, -1).amax(-1, keepdim=True)  # (B, 1)
        after = self.positions[:, :filled].gather(1, last.clamp(min=0)) + 1
        return torch.where(last >= 0, after, 0) + steps

    def reset(self) -> None:
        """Empty the cache (its record of padding and positions too)."""
        self.length = 0
        self.padded = False
        self.counted = True

    def __repr__(self) -> str:
        b, k, c, d = self.keys.shape
        padded = ", padded" if self.padded else ""
        return f"KVCache(B={b}, K={k}, capacity={c}, D={d}, length={self.length}{padded})"


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

    def next_positions(self, new: int):
        """:meth:`KVCache.next_positions` (of the first layer; all layers agree between calls)."""
        return self.layers[0].next_positions(new)

    def reset(self) -> None:
        for layer in self.layers:
            layer.reset()

    def __repr__(self) -> str:
        return f"Cache(layers={len(self)}, {self.layers[0]!r})"
