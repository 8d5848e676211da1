"""Flax NNX attention with RoPE or NoPE, grouped-query heads, causal or bidirectional.

Shapes: B batch, T time, H heads, K kv heads, D head dim, R rotary dim.

The positional part is the core's: cos/sin come from :func:`ropelab.rope_tables` (float64
on the host, exact at any position) and the rotation from :func:`ropelab.apply_rope`.
Nothing here re-derives frequencies. ``rope=None`` is NoPE: no rotation at all.

The projections are named ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj`` like
:class:`ropelab.torch.Attention` and Hugging Face's Llama attention, and
:func:`load_torch_state_dict` copies a torch state dict in (a torch ``Linear.weight`` is
``(out, in)``; an NNX ``Linear.kernel`` is ``(in, out)``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..config import RopeConfig
from ..rotary import apply_rope
from ..tables import rope_tables

__all__ = ["Attention", "attend", "load_torch_state_dict", "position_tables"]


def _check_count(name: str, value, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


@functools.lru_cache(maxsize=64)
def _cached_tables(config: RopeConfig, length: int) -> tuple[np.ndarray, np.ndarray]:
    cos, sin = rope_tables(config, np.arange(length))
    cos.setflags(write=False)
    sin.setflags(write=False)
    return cos, sin


def position_tables(config: RopeConfig, length: int) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin for positions ``0..length-1``, float64 ``(length, R/2)``, cached per config.

    For length-dependent schemes (dynamic NTK, LongRoPE) the table is the one for a
    sequence of exactly ``length`` tokens, as transformers computes it.
    """
    try:
        return _cached_tables(config, int(length))
    except TypeError:  # an unhashable scheme: compute without the cache
        return rope_tables(config, np.arange(int(length)))


def _concrete(positions):
    """positions as a numpy array, or None when they are traced (inside jit)."""
    try:
        return np.asarray(positions)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def check_positions(positions, batch: int, length: int) -> None:
    """positions must be ``(T,)``, ``(1, T)`` or ``(B, T)``; ValueError otherwise."""
    shape = tuple(positions.shape)
    if shape not in ((length,), (1, length), (batch, length)):
        raise ValueError(
            f"positions must be shaped (T,) = ({length},) or (B, T) = ({batch}, {length}), got {shape}"
        )


def rope_for(config: RopeConfig, positions, batch: int, length: int, *, max_positions: int):
    """cos/sin for ``positions`` shaped to rotate ``(B, T, H, D)`` arrays: ``(..., T, 1, R/2)``.

    ``positions`` is None (``0..T-1``), ``(T,)``, ``(1, T)`` or ``(B, T)``. Concrete positions get
    exact host tables. Traced positions (under ``jax.jit``) are looked up in a cached
    table of ``max_positions`` rows; a position outside it gives NaN, never a silently
    wrong angle.
    """
    if positions is None:
        cos, sin = position_tables(config, length)
        return cos[:, None, :], sin[:, None, :]
    check_positions(positions, batch, length)
    host = _concrete(positions)
    if host is not None:
        cos, sin = rope_tables(config, host)
        return cos[..., None, :], sin[..., None, :]
    if config.dynamic:
        raise ValueError(
            f"the rope scheme {config.scaling!r} depends on the sequence length, which traced "
            "positions do not give; under jit pass positions=None or concrete positions"
        )
    if not jnp.issubdtype(positions.dtype, jnp.integer):
        raise TypeError(f"traced positions must be integers, got dtype {positions.dtype}")
    table_cos, table_sin = position_tables(config, max_positions)
    cos = jnp.take(jnp.asarray(table_cos, jnp.float32), positions, axis=0, mode="fill", fill_value=jnp.nan)
    sin = jnp.take(jnp.asarray(table_sin, jnp.float32), positions, axis=0, mode="fill", fill_value=jnp.nan)
    return cos[..., None, :], sin[..., None, :]


def attend(q, k, v, *, causal: bool):
    """Scaled dot-product attention over ``(B, T, H, D)`` q and ``(B, T, K, D)`` k, v.

    Uses :func:`jax.nn.dot_product_attention` (XLA's fused path, cuDNN where present);
    query head ``h`` reads kv head ``h // (H // K)``. Scale ``1 / sqrt(D)``. Returns
    ``(B, T, H, D)``. :func:`ropelab.reference.attention` is the float64 reference.
    """
    return jax.nn.dot_product_attention(q, k, v, is_causal=causal)


class Attention(nnx.Module):
    """Multi-head / grouped-query self-attention with RoPE (or NoPE), for Flax NNX.

    RoFormer (Su et al. 2021, arXiv:2104.09864) rotary positions; GQA (Ainslie et al.
    2023, arXiv:2305.13245); NoPE (Kazemnejad et al. 2023, arXiv:2305.19466) when
    ``rope=None``. Same meaning as :class:`ropelab.torch.Attention` with the same weights.

    Args:
        d_model: model width.
        num_heads: query heads H.
        num_kv_heads: key/value heads K (must divide H); defaults to H.
        head_dim: D; defaults to ``d_model // num_heads``.
        rope: a :class:`ropelab.RopeConfig` with ``head_dim == D``, or None for NoPE.
        causal: causal (decoder) or bidirectional (encoder) attention.
        bias: biases on all four projections.
        max_positions: rows of the cached table used for positions traced under jit.
        rngs: ``nnx.Rngs`` for the projection weights.

    Call: ``x`` ``(B, T, d_model)`` (or ``(T, d_model)``), ``positions`` None
    (``0..T-1``), ``(T,)``, ``(1, T)`` or ``(B, T)`` integers; returns x's shape.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        *,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        rope: RopeConfig | None = None,
        causal: bool = True,
        bias: bool = False,
        max_positions: int = 8192,
        rngs: nnx.Rngs,
    ):
        d_model = _check_count("d_model", d_model)
        num_heads = _check_count("num_heads", num_heads)
        num_kv_heads = num_heads if num_kv_heads is None else _check_count("num_kv_heads", num_kv_heads)
        if num_heads % num_kv_heads:
            raise ValueError(
                f"num_heads={num_heads} must be a multiple of num_kv_heads={num_kv_heads}"
            )
        if head_dim is None:
            if d_model % num_heads:
                raise ValueError(
                    f"d_model={d_model} is not divisible by num_heads={num_heads}; "
                    "pass head_dim explicitly or change the sizes"
                )
            head_dim = d_model // num_heads
        head_dim = _check_count("head_dim", head_dim)
        if rope is not None:
            if not isinstance(rope, RopeConfig):
                raise TypeError(f"rope must be a ropelab.RopeConfig or None (NoPE), got {rope!r}")
            if rope.head_dim != head_dim:
                raise ValueError(
                    f"rope.head_dim={rope.head_dim} does not match the attention head_dim={head_dim}"
                )
        if not isinstance(causal, bool):
            raise TypeError(f"causal must be a bool, got {causal!r}")
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be a bool, got {bias!r}")
        self.d_model = d_model
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.rope = rope
        self.causal = causal
        self.max_positions = _check_count("max_positions", max_positions)
        self.q_proj = nnx.Linear(d_model, num_heads * head_dim, use_bias=bias, rngs=rngs)
        self.k_proj = nnx.Linear(d_model, num_kv_heads * head_dim, use_bias=bias, rngs=rngs)
        self.v_proj = nnx.Linear(d_model, num_kv_heads * head_dim, use_bias=bias, rngs=rngs)
        self.o_proj = nnx.Linear(num_heads * head_dim, d_model, use_bias=bias, rngs=rngs)

    def __call__(self, x, positions=None):
        x = jnp.asarray(x)
        unbatched = x.ndim == 2
        if unbatched:
            x = x[None]
        if x.ndim != 3 or x.shape[-1] != self.d_model:
            raise ValueError(
                f"x must be shaped (B, T, d_model={self.d_model}) or (T, d_model), got {tuple(x.shape)}"
            )
        if positions is not None and not hasattr(positions, "shape"):
            positions = np.asarray(positions)
        if positions is not None and unbatched and len(positions.shape) != 1:
            raise ValueError(f"an unbatched x needs positions shaped (T,), got {tuple(positions.shape)}")
        B, T, _ = x.shape
        H, K, D = self.num_heads, self.num_kv_heads, self.head_dim
        q = self.q_proj(x).reshape(B, T, H, D)  # (B, T, H, D)
        k = self.k_proj(x).reshape(B, T, K, D)  # (B, T, K, D)
        v = self.v_proj(x).reshape(B, T, K, D)
        if self.rope is not None:
            # (..., T, 1, R/2): one row per token, broadcast over heads
            cos, sin = rope_for(self.rope, positions, B, T, max_positions=self.max_positions)
            q = apply_rope(q, cos, sin, layout=self.rope.layout)
            k = apply_rope(k, cos, sin, layout=self.rope.layout)
        elif positions is not None:  # NoPE ignores positions, but a wrong shape is a bug
            check_positions(positions, B, T)
        out = attend(q, k, v, causal=self.causal).reshape(B, T, H * D)  # (B, T, H*D)
        out = self.o_proj(out)
        return out[0] if unbatched else out

    @classmethod
    def from_torch_state_dict(
        cls,
        state_dict: Mapping,
        *,
        num_heads: int,
        num_kv_heads: int | None = None,
        rope: RopeConfig | None = None,
        causal: bool = True,
        max_positions: int = 8192,
    ) -> Attention:
        """Build an Attention holding the weights of a torch ``Attention`` state dict.

        ``d_model``, ``head_dim`` and ``bias`` are read from the weight shapes; the
        rest (which the weights do not say) must be given.
        """
        if "q_proj.weight" not in state_dict or "o_proj.weight" not in state_dict:
            raise ValueError(
                "state_dict must hold q_proj.weight and o_proj.weight, got keys "
                f"{sorted(state_dict)}"
            )
        q_rows, d_model = tuple(state_dict["q_proj.weight"].shape)
        num_heads = _check_count("num_heads", num_heads)
        if q_rows % num_heads:
            raise ValueError(
                f"q_proj.weight has {q_rows} rows, not a multiple of num_heads={num_heads}"
            )
        module = cls(
            int(d_model),
            num_heads,
            num_kv_heads=num_kv_heads,
            head_dim=q_rows // num_heads,
            rope=rope,
            causal=causal,
            bias="q_proj.bias" in state_dict,
            max_positions=max_positions,
            rngs=nnx.Rngs(0),
        )
        return load_torch_state_dict(module, state_dict)


_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "out_proj")


def _to_numpy(name: str, value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch here
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    arr = np.asarray(value)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {arr.dtype}")
    return arr


def load_torch_state_dict(module: nnx.Module, state_dict: Mapping, *, strict: bool = True) -> nnx.Module:
    """Copy a torch state dict's projection weights into an NNX attention module, in place.

    Works for :class:`Attention` (``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``) and
    :class:`ropelab.nnx.RopeMHA` (``out_proj``). Torch ``Linear.weight`` ``(out, in)``
    becomes the kernel ``(in, out)``; biases copy as they are. Values may be torch
    tensors or numpy arrays; they are stored in each parameter's own dtype.

    With ``strict`` (the default) a key the module has no parameter for, a missing key
    or a shape mismatch raises ValueError. Returns ``module``.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of names to arrays, got {type(state_dict).__name__}")
    expected: dict[str, tuple[nnx.Linear, str]] = {}
    for name in _PROJECTIONS:
        layer = getattr(module, name, None)
        if isinstance(layer, nnx.Linear):
            expected[f"{name}.weight"] = (layer, "kernel")
            if layer.bias is not None:
                expected[f"{name}.bias"] = (layer, "bias")
    if not expected:
        raise TypeError(f"{type(module).__name__} has none of the projections {_PROJECTIONS}")
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or (strict and unexpected):
        raise ValueError(
            f"state_dict does not fit {type(module).__name__}: missing keys {missing}, "
            f"unexpected keys {unexpected}"
        )
    updates = []
    for key, (layer, attr) in expected.items():
        value = _to_numpy(key, state_dict[key])
        param = getattr(layer, attr)
        if attr == "kernel":
            value = value.T  # torch (out, in) -> nnx (in, out)
        if tuple(value.shape) != tuple(param.get_value().shape):
            want = tuple(param.get_value().shape)
            if attr == "kernel":
                want = want[::-1]
            raise ValueError(
                f"{key} has shape {tuple(state_dict[key].shape)}, expected {want} (torch (out, in) layout)"
            )
        updates.append((param, jnp.asarray(value, dtype=param.get_value().dtype)))
    for param, value in updates:  # all checked first: a failed load changes nothing
        param.set_value(value)
    return module
