"""Key/value cache for incremental decoding with :class:`ropelab.nnx.Attention`, the JAX way.

The cache is an immutable pytree (a frozen dataclass registered with
``jax.tree_util``), not NNX state inside the module: ``update`` returns a new cache and
leaves the old one as it was. That keeps the module pure weights (``nnx.state`` of an
``Attention`` is its four projections, with or without decoding), lets one module serve
any number of sequences at once, and lets a decode step be an ordinary function of
``(module, token, cache) -> (output, cache)`` under ``jax.jit``, ``nnx.jit`` or
``jax.lax.scan``. Every array has a fixed shape (``capacity`` slots, filled or not) and
the fill level ``length`` is an array too, so one compiled step serves every position.

Keys are stored already rotated (RoPE is applied once per token, at its true position),
beside each slot's position, so chunked and sliding-window masks can be built for cached
keys too, and beside a ``valid`` flag that remembers which slots hold left padding.

Shapes: B batch, C capacity, T new tokens, K kv heads, D head dim.
    keys, values (B, C, K, D); positions (B, C) int32; valid (B, C) bool; length () int32.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ..checks import check_int

__all__ = ["KVCache", "positions_from_mask"]


def positions_from_mask(mask):
    """Token positions from a ``(B, S)`` 1/0 padding mask: ``cumsum - 1``, pads at 0.

    A left-padded row ``[0, 0, 1, 1, 1]`` gets positions ``[0, 0, 0, 1, 2]``, so every
    sequence starts at position 0 whatever its padding; the same rule as
    :func:`ropelab.torch.positions_from_mask`. Returns int32 ``(B, S)``.
    """
    if not hasattr(mask, "shape"):
        mask = np.asarray(mask)
    if len(mask.shape) != 2:
        raise ValueError(f"mask must be shaped (B, S), got shape {tuple(mask.shape)}")
    counts = jnp.cumsum(jnp.asarray(mask) != 0, axis=-1, dtype=jnp.int32)
    return jnp.maximum(counts - 1, 0)


def _overflow(length, new: int, capacity: int) -> None:
    """ValueError when ``length`` cached and ``new`` tokens overflow ``capacity`` (also run
    as a host callback under jit)."""
    length = int(length)
    wanted = length + new
    if wanted > capacity:
        raise ValueError(
            f"KV cache of capacity {capacity} cannot hold {wanted} tokens "
            f"({length} cached + {new} new); make a cache with capacity >= {wanted}"
        )


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
    """One layer's cache: ``capacity`` slots of keys, values, positions and padding flags.

    Make one with :meth:`KVCache.create`; pass it to ``Attention(x, cache=cache)``, which
    returns ``(output, new_cache)``. Slots ``0..length-1`` are filled; the rest hold
    zeros and are never attended to.
    """

    keys: jax.Array  # (B, C, K, D)
    values: jax.Array  # (B, C, K, D)
    positions: jax.Array  # (B, C) int32
    valid: jax.Array  # (B, C) bool: a filled slot that is a token, not padding
    length: jax.Array  # () int32: filled slots

    @classmethod
    def create(cls, batch: int, num_kv_heads: int, capacity: int, head_dim: int, *, dtype=jnp.float32) -> KVCache:
        """An empty cache of ``capacity`` slots for ``batch`` sequences."""
        batch = check_int("batch", batch, minimum=1)
        num_kv_heads = check_int("num_kv_heads", num_kv_heads, minimum=1)
        capacity = check_int("capacity", capacity, minimum=1)
        head_dim = check_int("head_dim", head_dim, minimum=1)
        dtype = jnp.dtype(dtype)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"dtype must be a floating-point dtype, got {dtype}")
        shape = (batch, capacity, num_kv_heads, head_dim)
        return cls(
            keys=jnp.zeros(shape, dtype),
            values=jnp.zeros(shape, dtype),
            positions=jnp.zeros((batch, capacity), jnp.int32),
            valid=jnp.zeros((batch, capacity), bool),
            length=jnp.zeros((), jnp.int32),
        )

    @property
    def batch(self) -> int:
        return int(self.keys.shape[0])

    @property
    def capacity(self) -> int:
        return int(self.keys.shape[1])

    @property
    def num_kv_heads(self) -> int:
        return int(self.keys.shape[2])

    @property
    def head_dim(self) -> int:
        return int(self.keys.shape[3])

    def check_room(self, new: int) -> None:
        """Raise ValueError if ``new`` more tokens do not fit.

        Outside ``jax.jit`` (a concrete ``length``) at once. Under jit, ``new`` beyond the
        capacity at trace time; an overflow that depends on the traced length raises when
        the step runs: the ValueError's message arrives inside jax's runtime error
        (``jax.errors.JaxRuntimeError``, a RuntimeError), and the step's output is NaN,
        never a silently wrong answer.
        """
        if new > self.capacity:
            raise ValueError(
                f"KV cache of capacity {self.capacity} cannot hold {new} new tokens; "
                f"make a cache with capacity >= {new}"
            )
        try:
            length = int(self.length)
        except (jax.errors.TracerIntegerConversionError, jax.errors.ConcretizationTypeError):
            jax.lax.cond(
                self.length + new > self.capacity,
                lambda: jax.debug.callback(_overflow, self.length, new, self.capacity),
                lambda: None,
            )
            return
        _overflow(length, new, self.capacity)

    def last_token_positions(self):
        """Each row's last token: ``(position, has_token)``, int32 and bool ``(B,)``.

        The last filled slot that holds a token, not padding; ``has_token`` is False
        (and the position 0) for a row whose filled slots are all padding, or none.
        """
        slots = jnp.arange(self.capacity, dtype=jnp.int32)
        tokens = self.valid & (slots < self.length)  # (B, C)
        last = jnp.max(jnp.where(tokens, slots, -1), axis=1)  # (B,) slot, -1 for none
        position = jnp.take_along_axis(self.positions, jnp.maximum(last, 0)[:, None], axis=1)[:, 0]
        has_token = last >= 0
        return jnp.where(has_token, position, 0), has_token

    def update(self, k, v, positions, valid=None) -> KVCache:
        """A new cache with k, v ``(B, T, K, D)`` written at slots ``length..length+T-1``.

        ``positions`` ``(B, T)`` (or ``(1, T)``) integers; ``valid`` ``(B, T)`` bool, by
        default all True. Keys and values are stored in the cache's dtype.
        """
        if k.shape != v.shape or len(k.shape) != 4:
            raise ValueError(f"k and v must both be (B, T, K, D), got {tuple(k.shape)} and {tuple(v.shape)}")
        b, new, heads, dim = k.shape
        if (b, heads, dim) != (self.batch, self.num_kv_heads, self.head_dim):
            raise ValueError(
                f"new keys of shape {tuple(k.shape)} do not fit a cache of shape "
                f"(B, C, K, D) = {tuple(self.keys.shape)}"
            )
        self.check_room(new)
        start = jnp.asarray(self.length, jnp.int32)
        zero = jnp.zeros((), jnp.int32)
        positions = jnp.broadcast_to(jnp.asarray(positions, jnp.int32), (b, new))
        valid = jnp.ones((b, new), bool) if valid is None else jnp.broadcast_to(jnp.asarray(valid, bool), (b, new))
        return KVCache(
            keys=jax.lax.dynamic_update_slice(self.keys, k.astype(self.keys.dtype), (zero, start, zero, zero)),
            values=jax.lax.dynamic_update_slice(self.values, v.astype(self.values.dtype), (zero, start, zero, zero)),
            positions=jax.lax.dynamic_update_slice(self.positions, positions, (zero, start)),
            valid=jax.lax.dynamic_update_slice(self.valid, valid, (zero, start)),
            length=start + new,
        )

    def __repr__(self) -> str:
        b, c, k, d = self.keys.shape
        try:
            length = int(self.length)
        except (jax.errors.TracerIntegerConversionError, jax.errors.ConcretizationTypeError):
            length = "traced"
        return f"KVCache(B={b}, capacity={c}, K={k}, D={d}, length={length})"
