"""Layer kinds: how each entry of a transformer's layer pattern builds its attention.

``LAYER_KINDS[name](config, layer_index) -> dict`` gives the keyword arguments of
:class:`ropelab.torch.Attention` for a layer of that kind (the Transformer adds the
shared ones: width, heads, kv heads, causality). A new positional scheme is one
function registered with :func:`register_layer_kind`; ``config.kind_options[name]``
carries its extra options.

"rope" and "nope" live here (Llama 4's iRoPE: chunked attention and qk norm on RoPE
layers, temperature tuning on NoPE layers); ``ropelab.torch.positional`` registers
the others (ALiBi, T5 bias, xPos, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .transformer import TransformerConfig

__all__ = ["LAYER_KINDS", "register_layer_kind"]

#: kind name -> function(config, layer_index) -> Attention keyword arguments
LAYER_KINDS: dict[str, Callable[[TransformerConfig, int], dict[str, Any]]] = {}


def register_layer_kind(name: str):
    """Decorator: register ``fn(config, layer_index) -> dict`` as the layer kind ``name``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a layer kind name must be a non-empty string, got {name!r}")

    def decorate(fn):
        old = LAYER_KINDS.get(name)
        # a module imported twice re-registers the same function; anything else is a clash
        if old is not None and (old.__module__, old.__qualname__) != (
            fn.__module__,
            fn.__qualname__,
        ):
            raise ValueError(
                f"layer kind {name!r} is already registered by {old.__module__}.{old.__qualname__}"
            )
        LAYER_KINDS[name] = fn
        return fn

    return decorate


def _options(config, name: str) -> dict[str, Any]:
    return dict(config.kind_options.get(name, {}))


@register_layer_kind("rope")
def rope_layer(config, index: int) -> dict[str, Any]:
    """RoPE with ``config.rope``; Llama 4's chunking and qk norm apply to these layers."""
    return {
        "rope": config.rope,
        "chunk_size": config.chunk_size,
        "qk_norm": config.qk_norm,
        **_options(config, "rope"),
    }


@register_layer_kind("nope")
def nope_layer(config, index: int) -> dict[str, Any]:
    """No positional encoding (the causal mask alone); temperature tuning applies here."""
    return {
        "rope": None,
        "temperature_tuning": config.temperature_tuning,
        **_options(config, "nope"),
    }


# ropelab.torch.positional registers the other kinds: ropelab.torch's __init__ imports it
# (importing it here instead would be a cycle: it imports register_layer_kind from here)
