"""Torch weights into NNX modules: :func:`load_torch_state_dict`.

A torch ``nn.Linear.weight`` is ``(out, in)`` and computes ``x @ weight.T``; an
``nnx.Linear.kernel`` is ``(in, out)`` and computes ``x @ kernel``. So a torch state dict
of the four attention projections (``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``, as in
:class:`ropelab.torch.Attention` and Hugging Face's Llama attention, or :class:`RopeMHA`'s
``out_proj``) loads by transposing each weight; biases copy as they are.

Torch is not imported here: a tensor is recognised by its ``detach`` method.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = ["load_torch_state_dict"]

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

    Works for :class:`ropelab.nnx.Attention` (``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``) and
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
