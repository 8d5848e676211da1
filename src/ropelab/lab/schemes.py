"""The positional schemes the lab compares, and RoPE's inference-time extensions.

A scheme is data: which layer kind each layer gets (``ropelab.torch.kinds``), an
optional absolute position embedding, and options for its kind. Schemes whose layer
kind is not built in this installation are left out of the default list (and refused
by name with a clear message).

Extensions (``linear`` = Position Interpolation, Chen et al. 2023, arXiv:2306.15595;
``ntk`` = NTK-aware base scaling; ``yarn`` = Peng et al. 2023, arXiv:2309.00071) swap
the RoPE layers' schedule at evaluation time with factor ``eval_len / train_len``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import scaling
from ..config import RopeConfig

__all__ = ["EXTENSIONS", "SCHEMES", "Scheme", "available_schemes", "extended_rope", "layer_kinds"]


@dataclass(frozen=True)
class Scheme:
    """One positional scheme: layer kinds, absolute embedding, kind options."""

    name: str
    kind: str  # the layer kind of its positional layers
    absolute: str | None = None  # None, "sinusoidal" or "learned"
    irope: bool = False  # every fourth layer (at least the last one) is NoPE
    kind_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    extendable: bool = False  # RoPE layers whose schedule inference-time extension swaps
    absolute_scale: float = 1.0  # TransformerConfig.absolute_scale (sinusoid amplitude)
    summary: str = ""


#: Sinusoids of per-feature rms 0.03 / sqrt(2) = 0.021, level with the 0.02-std token
#: embeddings. At full amplitude they are a residual stream 35x larger than what the
#: pre-norm blocks add at first: copy did not train in 2400 steps (loss 0.9), nor with
#: tokens scaled up to match (Vaswani et al.'s sqrt(d_model)); at 0.03 it reaches 1.0.
SINUSOID_SCALE = 0.03

SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in (
        Scheme("nope", "nope", summary="no positional encoding; the causal mask alone (Kazemnejad et al. 2023)"),
        Scheme("rope", "rope", extendable=True, summary="rotary position embedding in every layer (Su et al. 2021)"),
        Scheme("irope", "rope", irope=True, summary="Llama 4's iRoPE: RoPE layers with every fourth layer NoPE"),
        Scheme("sinusoidal", "nope", absolute="sinusoidal", absolute_scale=SINUSOID_SCALE, summary="absolute sinusoids added to the embeddings (Vaswani et al. 2017)"),
        Scheme("learned", "nope", absolute="learned", summary="a learned absolute table of train_len positions (GPT-2)"),
        Scheme("alibi", "alibi", summary="ALiBi linear distance biases (Press et al. 2022)"),
        Scheme("t5", "t5", summary="T5 relative bias buckets (Raffel et al. 2020)"),
        Scheme("xpos", "xpos", summary="xPos: RoPE with exponential decay (Sun et al. 2022)"),
        Scheme("p-rope", "prope", kind_options={"prope": {"p": 0.75}}, summary="p-RoPE: RoPE without its lowest quarter of frequencies (Barbero et al. 2024)"),
    )
}

EXTENSIONS = ("linear", "ntk", "yarn")


def _known_kinds() -> set[str]:
    from ..torch.kinds import LAYER_KINDS

    return set(LAYER_KINDS)


def available_schemes() -> tuple[str, ...]:
    """The schemes whose layer kind exists in this installation, in :data:`SCHEMES` order."""
    kinds = _known_kinds()
    return tuple(name for name, s in SCHEMES.items() if s.kind in kinds)


def check_scheme(name: str) -> Scheme:
    if name not in SCHEMES:
        raise ValueError(f"unknown scheme {name!r}; known schemes: {', '.join(SCHEMES)}")
    scheme = SCHEMES[name]
    if scheme.kind not in _known_kinds():
        raise ValueError(
            f"scheme {name!r} needs the layer kind {scheme.kind!r}, which this installation of "
            f"ropelab.torch does not provide; available schemes: {', '.join(available_schemes())}"
        )
    return scheme


def layer_kinds(scheme: Scheme, num_layers: int) -> tuple[str, ...]:
    """The kind of each layer. iRoPE: layers 4, 8, ... are NoPE, and so is the last layer
    when there are fewer than four (Llama 4's pattern, cut to small models)."""
    kinds = [scheme.kind] * num_layers
    if scheme.irope:
        for i in range(3, num_layers, 4):
            kinds[i] = "nope"
        if num_layers < 4:
            kinds[-1] = "nope"
    return tuple(kinds)


def extended_rope(base: RopeConfig, extension: str, factor: float, train_len: int) -> RopeConfig:
    """``base`` with the extension's scaling for a context ``factor`` times ``train_len``."""
    if extension == "linear":
        scheme = scaling.Linear(factor)
    elif extension == "ntk":
        scheme = scaling.NTK(factor)
    elif extension == "yarn":
        scheme = scaling.YaRN(factor, train_len)
    else:
        raise ValueError(f"unknown extension {extension!r}; known extensions: {', '.join(EXTENSIONS)}")
    return RopeConfig(base.head_dim, theta=base.theta, rotary_dim=base.rotary_dim, layout=base.layout, scaling=scheme)
