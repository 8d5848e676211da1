"""What an attention layer means, apart from its weights and its kernel: one spec for every front end.

Vaswani et al. 2017 (arXiv:1706.03762) attention with grouped-query heads (Ainslie et
al. 2023, arXiv:2305.13245) and Llama 4's options: chunked attention and query/key RMS
norm on RoPE layers, attention temperature tuning on NoPE layers (Nakanishi 2025,
arXiv:2501.19399); a sliding window (Beltagy et al. 2020, arXiv:2004.05150).

:class:`AttentionSpec` holds the validated options, says which keys each query sees
(:meth:`~AttentionSpec.keep`) and by how much each query is scaled
(:meth:`~AttentionSpec.query_scale`). :class:`ropelab.torch.Attention` and
:class:`ropelab.nnx.Attention` each hold one as ``module.spec``, so the two front ends
mean the same thing by construction; each keeps its own array layout, projections and
kernel.

No framework is imported here. The keep-mask is written with the operators and methods
that numpy arrays, torch tensors and jax arrays share (comparisons, ``//``, ``&``, ``|``,
``~``, ``[:, None]``, ``.any(axis=..., keepdims=True)``), so one function serves all
three, traced (``torch.compile``, ``jax.jit``) or not.

Shapes: B batch (1 when shared by the batch), T queries (the new tokens), S keys (cached
+ new, or a cache's capacity).
    q_slot (T,), k_slot (S,): each token's index in the key sequence (causality is by slot);
    q_pos (B, T), k_pos (B, S): each token's position (chunks and windows are by position);
    key_valid (B, S) bool: False for padding; filled (S,) bool: False for unwritten slots;
    keep (B or 1, 1, T, S) bool: True where the query attends to the key.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence

from ._optional import array_kind
from .checks import check_bool, check_float, check_int, show
from .config import MAX_HEAD_DIM
from .rows import host_readable

__all__ = ["AttentionSpec", "SpecField"]


def _optional_count(name: str, value):
    """None, or ``value`` as an int >= 1 (:func:`ropelab.checks.check_int`)."""
    return None if value is None else check_int(name, value, minimum=1)


def _check_temperature_tuning(value):
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"temperature_tuning must be a pair (attn_scale, floor_scale) or None, got {show(value)}")
    if len(value) != 2:
        raise ValueError(f"temperature_tuning must be a pair (attn_scale, floor_scale), got {len(value)} values")
    attn_scale = check_float("temperature_tuning's attn_scale", value[0])
    floor_scale = check_float("temperature_tuning's floor_scale", value[1], above=0.0)
    return (attn_scale, floor_scale)


def _check_not_negative(positions) -> None:
    """ValueError for a negative position among those that can be read without a trace
    or a device sync (temperature tuning is defined for positions >= 0)."""
    if isinstance(positions, numbers.Real):
        lowest = positions
    else:
        if not host_readable(positions, array_kind(positions)) or not math.prod(positions.shape):
            return
        lowest = positions.min()
    if lowest < 0:
        raise ValueError(
            f"temperature_tuning is defined for positions >= 0 (Llama 4), got position {float(lowest):g}; "
            "give positions from 0 (positions_from_mask starts every row there)"
        )


@dataclasses.dataclass(frozen=True)
class AttentionSpec:
    """The options of a grouped-query attention layer, validated once for every front end.

    Args:
        d_model: model width (input and output features).
        num_heads: query heads H.
        num_kv_heads: key/value heads K (divides H; default H).
        head_dim: D (default ``d_model // num_heads``, which must then divide evenly).
        causal: a token sees the keys in earlier slots and its own; False for bidirectional.
        bias: biases on the four projections.
        chunk_size: Llama 4 chunked attention: a token sees only keys of its own chunk
            of positions (``pos // chunk_size`` equal).
        window: sliding window: a token sees keys fewer than ``window`` positions away
            (on both sides when not causal).
        qk_norm: weightless RMS norm of q and k after RoPE (Llama 4), eps ``qk_norm_eps``.
        temperature_tuning: ``(attn_scale, floor_scale)`` of Llama 4's NoPE layers (see
            :meth:`query_scale`).

    Wrong types raise TypeError, wrong values ValueError, each naming the argument.
    ``dataclasses.replace`` validates the copy the same way.
    """

    d_model: int
    num_heads: int
    num_kv_heads: int | None = None
    head_dim: int | None = None
    causal: bool = True
    bias: bool = False
    chunk_size: int | None = None
    window: int | None = None
    qk_norm: bool = False
    qk_norm_eps: float = 1e-6
    temperature_tuning: tuple[float, float] | None = None

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "d_model", check_int("d_model", self.d_model, minimum=1))
        set_(self, "num_heads", check_int("num_heads", self.num_heads, minimum=1))
        head_dim = self.head_dim
        if head_dim is None:
            if self.d_model % self.num_heads:
                raise ValueError(
                    f"d_model={self.d_model} is not divisible by num_heads={self.num_heads}; "
                    "pass head_dim or choose num_heads dividing d_model"
                )
            head_dim = self.d_model // self.num_heads
        set_(self, "head_dim", check_int("head_dim", head_dim, minimum=1, maximum=MAX_HEAD_DIM))
        kv = self.num_heads if self.num_kv_heads is None else self.num_kv_heads
        kv = check_int("num_kv_heads", kv, minimum=1)
        if self.num_heads % kv:
            raise ValueError(f"num_heads={self.num_heads} is not divisible by num_kv_heads={kv}")
        set_(self, "num_kv_heads", kv)
        for name in ("causal", "bias", "qk_norm"):
            set_(self, name, check_bool(name, getattr(self, name)))
        set_(self, "chunk_size", _optional_count("chunk_size", self.chunk_size))
        set_(self, "window", _optional_count("window", self.window))
        set_(self, "qk_norm_eps", check_float("qk_norm_eps", self.qk_norm_eps, above=0.0))
        set_(self, "temperature_tuning", _check_temperature_tuning(self.temperature_tuning))

    def check_rope(self, rope) -> None:
        """ValueError unless the rotary config ``rope`` turns heads of this layer's head_dim."""
        if rope.head_dim != self.head_dim:
            raise ValueError(
                f"rope.head_dim={rope.head_dim} does not match the attention head_dim={self.head_dim}"
            )

    def plain(self, *, padded: bool) -> bool:
        """True when causality alone decides which keys a query sees: no padding, chunk or window.

        A kernel's causal flag (or nothing, when not causal) then says it all, and no
        mask need be built.
        """
        return not padded and self.chunk_size is None and self.window is None

    def keep(self, q_slot, k_slot, q_pos, k_pos, *, key_valid=None, filled=None):
        """Which keys each query sees: boolean ``(B or 1, 1, T, S)``, or None when it sees all.

        Causality is by slot (a token sees the keys written before it and itself); the
        chunk and the window are by position, so a left-padded sequence is masked like
        the same sequence unpadded. ``q_pos`` and ``k_pos`` are read only with a chunk or
        a window (None will do otherwise), the slots only when causal. ``key_valid``
        hides padding; ``filled`` hides a fixed-size cache's unwritten slots.

        A row that would see no key at all (a left pad under a causal mask) would give
        NaN in the softmax; it sees every filled key instead: its output is a pad's and
        is never used.
        """
        keep = None

        def both(a, b):
            return b if a is None else a & b

        if self.causal:
            keep = k_slot[None, None, :] <= q_slot[None, :, None]  # (1, T, S)
        if self.chunk_size is not None or self.window is not None:
            qp, kp = q_pos[:, :, None], k_pos[:, None, :]  # (B, T, 1), (B, 1, S)
            if self.chunk_size is not None:
                keep = both(keep, (qp // self.chunk_size) == (kp // self.chunk_size))
            if self.window is not None:
                near = (qp - kp) < self.window
                if not self.causal:
                    near = near & ((kp - qp) < self.window)
                keep = both(keep, near)
        if key_valid is not None:
            keep = both(keep, key_valid[:, None, :])  # (B, 1, S)
        if filled is not None:
            keep = both(keep, filled[None, None, :])  # (1, 1, S)
        if keep is None:
            return None
        empty = ~keep.any(axis=-1, keepdims=True)  # (B or 1, T, 1)
        if filled is not None:
            empty = empty & filled[None, None, :]
        return (keep | empty)[:, None]  # (B or 1, 1, T, S)

    def query_scale(self, positions, xp):
        """Llama 4's attention temperature: the factor each query is multiplied by.

        ``1 + attn_scale * log(floor((pos + 1) / floor_scale) + 1)`` (Nakanishi 2025),
        in the form of transformers' ``Llama4TextAttention``. ``positions`` are the
        tokens' positions (not their slots, so left-padded rows are scaled like unpadded
        ones) as float32, any shape; ``xp`` is their array module (``torch``,
        ``jax.numpy``, ``numpy``; ``math`` for one number). Returns positions' shape.

        Llama 4 defines it for positions >= 0 only: a negative position raises
        ValueError where the values can be read (a number, numpy, CPU torch and jax
        arrays outside ``torch.compile`` and ``jax.jit``); traced or on an accelerator
        they are not read, and a negative position there gives NaN.
        """
        if self.temperature_tuning is None:
            raise ValueError("query_scale needs a spec with temperature_tuning, which this one has not")
        _check_not_negative(positions)
        attn_scale, floor_scale = self.temperature_tuning
        return xp.log1p(xp.floor((positions + 1.0) / floor_scale)) * attn_scale + 1.0

    def summary(self) -> str:
        """The options in one line for a module's repr: sizes, causality, the options that are set."""
        opts = [
            f"d_model={self.d_model}",
            f"heads={self.num_heads}",
            f"kv_heads={self.num_kv_heads}",
            f"head_dim={self.head_dim}",
            f"causal={self.causal}",
        ]
        for name in ("chunk_size", "window", "temperature_tuning"):
            if getattr(self, name) is not None:
                opts.append(f"{name}={getattr(self, name)}")
        if self.qk_norm:
            opts.append(f"qk_norm_eps={self.qk_norm_eps}")
        return ", ".join(opts)


#: the options a module may change after construction; the others fix the weights' shapes
SETTABLE = ("causal", "chunk_size", "window", "qk_norm", "qk_norm_eps", "temperature_tuning")


class SpecField:
    """A front end's attribute that is one field of its ``spec``: ``chunk_size = SpecField()``.

    Reading gives ``module.spec.<name>``. Setting one of :data:`SETTABLE` replaces the
    spec with a validated copy, so an option changed after construction is checked as
    the constructor checks it; the sizes (d_model, heads, head_dim) are fixed by the
    weights and refuse to be set.
    """

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, module, owner=None):
        if module is None:
            return self
        return getattr(module.spec, self.name)

    def __set__(self, module, value) -> None:
        if self.name not in SETTABLE:
            raise AttributeError(
                f"{self.name} is fixed by the projection weights; build a new "
                f"{type(module).__name__} to change it"
            )
        module.spec = dataclasses.replace(module.spec, **{self.name: value})
