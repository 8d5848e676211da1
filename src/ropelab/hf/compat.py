"""Where transformers' API differs between the versions ropelab supports (>= 4.45, < 6).

Everything in ropelab, and its tests, that calls transformers where its API moved between
releases goes through these functions, so a new release is met in one file. Each function
asks the installed transformers what it accepts (a signature, an attribute) rather than
comparing version numbers, so a release that changes nothing needs nothing here.

What has moved so far:
- a config's RoPE settings live in ``config.rope_parameters`` (5.0), where 4.x kept them in
  ``config.rope_scaling`` (and ``rope_theta`` beside it);
- the mask helpers of ``transformers.masking_utils`` take the KV cache as ``cache`` (5.24;
  ``past_key_values`` is deprecated there and goes in 5.40);
- GPT-J's attention takes its ``(sin, cos)`` from the model as ``position_embeddings``
  (5.24), where it used to read its own table by ``position_ids``;
- a config's (and ``from_pretrained``'s) dtype is ``dtype`` (5.x), formerly ``torch_dtype``.
"""

from __future__ import annotations

import inspect
import sys

__all__ = [
    "attention_forward",
    "causal_mask",
    "dtype_key",
    "rope_form",
    "rope_parameters",
    "transformers_version",
]


def transformers_version() -> tuple[int, ...]:
    """The installed transformers' release as a tuple of ints, e.g. ``(5, 24, 0)``."""
    import transformers

    parts = []
    for piece in transformers.__version__.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def rope_parameters(config) -> dict:
    """A transformers config's RoPE settings as one dict (``rope_parameters`` in 5.x,
    ``rope_scaling`` in 4.x; empty where the config has neither)."""
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None)
    return dict(params or {})


def _accepts(fn, name: str) -> bool:
    return name in inspect.signature(fn).parameters


def rope_form() -> str:
    """How the installed transformers reads a config's RoPE settings, as
    :meth:`ropelab.RopeConfig.to_hf` writes them: ``"rope_parameters"`` (5.x; also the
    answer without transformers, the newer form) or ``"rope_scaling"`` (4.x)."""
    try:
        import transformers
    except ImportError:
        return "rope_parameters"
    return "rope_parameters" if _accepts(transformers.LlamaConfig.__init__, "rope_parameters") else "rope_scaling"


def dtype_key() -> str:
    """The name of the dtype in a config.json and in ``from_pretrained``'s arguments:
    ``"dtype"`` (5.x; also without transformers) or ``"torch_dtype"`` (older releases)."""
    try:
        import transformers
    except ImportError:
        return "dtype"
    return "dtype" if _accepts(transformers.PretrainedConfig.__init__, "dtype") else "torch_dtype"


def causal_mask(make, *, config, inputs_embeds, attention_mask, position_ids, cache=None):
    """Call one of ``transformers.masking_utils``' mask helpers (``create_causal_mask``,
    ``create_sliding_window_causal_mask``, ``create_chunked_causal_mask``) with the cache
    under the keyword the installed release takes."""
    key = "cache" if _accepts(make, "cache") else "past_key_values"
    return make(
        config=config,
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        position_ids=position_ids,
        **{key: cache},
    )


def _rotary_class(module):
    """The rotary-embedding class that ``module``'s own model file defines for it
    (``GPTJAttention`` -> ``GPTJRotaryEmbedding``)."""
    family = type(module).__name__.removesuffix("Attention")
    name = f"{family}RotaryEmbedding"
    cls = getattr(sys.modules[type(module).__module__], name, None)
    if cls is None:
        raise TypeError(
            f"{type(module).__name__}.forward takes position_embeddings, and its module "
            f"{type(module).__module__} defines no {name} to make them"
        )
    return cls


def attention_forward(module, hidden_states, *, attention_mask, position_ids, position_embeddings=None):
    """Run a transformers attention module as its model runs it; returns its output.

    Args:
        module: a transformers attention module (eager).
        hidden_states: ``(B, T, d_model)``.
        attention_mask: the additive mask from :func:`causal_mask` (or None).
        position_ids: ``(B, T)`` integer positions.
        position_embeddings: what the model's rotary module returns, for modules that take
            it; made here with the family's own rotary class when left out.
    """
    kwargs = {"attention_mask": attention_mask}
    if _accepts(module.forward, "position_embeddings"):
        if position_embeddings is None:
            position_embeddings = _rotary_class(module)(module.config)(hidden_states, position_ids)
        kwargs["position_embeddings"] = position_embeddings
    if _accepts(module.forward, "position_ids"):
        kwargs["position_ids"] = position_ids
    return module(hidden_states, **kwargs)[0]
