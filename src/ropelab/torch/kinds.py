"""Layer kinds: how each entry of a transformer's layer pattern builds its attention.

``LAYER_KINDS[name](config, layer_index) -> dict`` gives the keyword arguments of a
layer's attention (the Transformer adds the shared ones: kv heads, head dim, causality);
an ``"attention_class"`` entry swaps :class:`ropelab.torch.Attention` for another class
with its constructor. ``config.kind_options[name]`` carries a kind's extra options:
the module's own (``{"prope": {"p": 0.25}}``) and any other Attention argument
(``{"rope": {"window": 256}}``).

Every built-in kind is in the one table :data:`LAYER_KINDS` below; a new positional
scheme is one function added to it, or registered from outside with
:func:`register_layer_kind`. This module imports the modules it builds; none of them
imports it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..checks import check_str, show
from ..positional import PRoPE
from .linear_attention import LinearAttention
from .positional import ALiBiBias, AxialRoPE, MRoPE, T5Bias, XPos
from .shaw import ShawAttention

if TYPE_CHECKING:
    from .transformer import TransformerConfig

__all__ = ["LAYER_KINDS", "register_layer_kind"]

LayerKind = Callable[["TransformerConfig", int], dict[str, Any]]


def _split(config, name: str, module_keys: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """kind_options[name] split into the module's own options and extra Attention ones."""
    options = dict(config.kind_options.get(name, {}))
    own = {key: options.pop(key) for key in module_keys if key in options}
    return own, options


def rope_layer(config, index: int) -> dict[str, Any]:
    """RoPE with ``config.rope``; Llama 4's chunking and qk norm apply to these layers
    (the qk norm with the model's ``norm_eps``, as Llama 4 uses ``rms_norm_eps`` for both)."""
    _, extra = _split(config, "rope", ())
    return {
        "rope": config.rope,
        "chunk_size": config.chunk_size,
        "qk_norm": config.qk_norm,
        "qk_norm_eps": config.norm_eps,
        **extra,
    }


def nope_layer(config, index: int) -> dict[str, Any]:
    """No positional encoding (the causal mask alone); temperature tuning applies here."""
    _, extra = _split(config, "nope", ())
    return {"rope": None, "temperature_tuning": config.temperature_tuning, **extra}


def alibi_layer(config, index: int) -> dict[str, Any]:
    """No rotation; ALiBi's linear distance penalty on the scores (inside SDPA)."""
    _, extra = _split(config, "alibi", ())
    return {"rope": None, "score_bias": ALiBiBias(config.num_heads), **extra}


def t5_layer(config, index: int) -> dict[str, Any]:
    """No rotation; a learned bias per head and T5 bucket (options: num_buckets, max_distance)."""
    own, extra = _split(config, "t5", ("num_buckets", "max_distance", "bidirectional"))
    own.setdefault("bidirectional", not config.causal)
    return {"rope": None, "score_bias": T5Bias(config.num_heads, **own), **extra}


def xpos_layer(config, index: int) -> dict[str, Any]:
    """xPos on ``config.rope`` (options: scale_base, gamma, center)."""
    own, extra = _split(config, "xpos", ("scale_base", "gamma", "center"))
    return {"rope": XPos(config.rope, **own), **extra}


def prope_layer(config, index: int) -> dict[str, Any]:
    """p-RoPE: ``config.rope`` with only the fastest fraction p of pairs rotating (option p, default 0.75)."""
    own, extra = _split(config, "prope", ("p",))
    rope = dataclasses.replace(config.rope, scaling=PRoPE(own.get("p", 0.75)))
    return {"rope": rope, **extra}


def mrope_layer(config, index: int) -> dict[str, Any]:
    """M-RoPE on ``config.rope`` (option mrope_section); text positions make it RoPE."""
    own, extra = _split(config, "mrope", ("mrope_section",))
    return {
        "rope": MRoPE(config.rope, own.get("mrope_section")),
        **extra,
    }


def axial_layer(config, index: int) -> dict[str, Any]:
    """2-D axial RoPE on ``config.rope`` for patches on a grid (option cols, required)."""
    own, extra = _split(config, "axial", ("cols",))
    if "cols" not in own:
        raise ValueError(
            'the "axial" layer kind needs kind_options={"axial": {"cols": GRID_WIDTH}}'
        )
    return {
        "rope": AxialRoPE(config.rope, own["cols"]),
        **extra,
    }


def shaw_layer(config, index: int) -> dict[str, Any]:
    """Shaw et al. relative attention (option clip, default 16)."""
    own, extra = _split(config, "shaw", ("clip",))
    return {"attention_class": ShawAttention, "clip": own.get("clip", 16), **extra}


def linear_attention_layer(config, index: int) -> dict[str, Any]:
    """Katharopoulos et al. linear attention with RoPE after the feature map (RoFormer eq. 19)."""
    own, extra = _split(config, "linear_attention", ("block_size", "eps"))
    return {"attention_class": LinearAttention, "rope": config.rope, **own, **extra}


#: what ``TransformerConfig(layers=...)`` accepts: kind name -> function(config, layer_index)
#: -> attention keyword arguments; the built-in kinds, then any registered ones
LAYER_KINDS: dict[str, LayerKind] = {
    "rope": rope_layer,
    "nope": nope_layer,
    "alibi": alibi_layer,
    "t5": t5_layer,
    "xpos": xpos_layer,
    "prope": prope_layer,
    "mrope": mrope_layer,
    "axial": axial_layer,
    "shaw": shaw_layer,
    "linear_attention": linear_attention_layer,
}


def register_layer_kind(name: str):
    """Decorator: add ``fn(config, layer_index) -> dict`` to :data:`LAYER_KINDS` as the kind ``name``.

    ``config`` is the :class:`~ropelab.torch.TransformerConfig`; the dict holds the
    layer's attention arguments (``"attention_class"`` picks another attention class).
    A name already taken by another function raises ValueError; registering the same
    function again (a module imported twice) is allowed.
    """
    check_str("a layer kind name", name)

    def decorate(fn):
        if not callable(fn):
            raise TypeError(f"a layer kind must be a function (config, layer_index) -> dict, got {show(fn)}")
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
