"""The positional schemes the lab compares (its contenders), and RoPE's inference-time extensions.

A contender is data: which layer kind its layers get (``ropelab.torch.kinds``), laid out
by a layer pattern (``ropelab.torch.pattern``), an optional absolute position embedding,
options for its kind, and the family it belongs to (for the plot). Contenders whose
layer kind is not built in this installation are left out of the default list (and
refused by name with a clear message). They are called contenders, not schemes, so as
not to be confused with the RoPE scaling schemes of :mod:`ropelab.scaling`; on the
command line and in the results they are ``--schemes`` and ``scheme``.

Extensions (``linear`` = Position Interpolation, Chen et al. 2023, arXiv:2306.15595;
``ntk`` = NTK-aware base scaling; ``yarn`` = Peng et al. 2023, arXiv:2309.00071) swap
the RoPE layers' schedule at evaluation time with factor ``eval_len / train_len``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import scaling
from ..config import RopeConfig

__all__ = [
    "CONTENDERS",
    "EXTENSIONS",
    "FAMILIES",
    "Contender",
    "available_contenders",
    "check_contender",
    "extended_rope",
    "layer_kinds",
]

#: family -> what the plot calls it, in the plot's order
FAMILIES = {
    "rope": "rotary (RoPE and relatives)",
    "bias": "relative biases",
    "absolute": "no or absolute positions",
}


@dataclass(frozen=True)
class Contender:
    """One positional scheme the lab trains: layer kinds, absolute embedding, kind options."""

    name: str
    kind: str  # the layer kind of its positional layers
    family: str  # a key of FAMILIES
    pattern: str = "rope"  # ropelab.torch.PATTERNS entry; its "rope" layers get `kind`
    absolute: str | None = None  # None, "sinusoidal" or "learned"
    kind_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    extendable: bool = False  # RoPE layers whose schedule inference-time extension swaps
    absolute_scale: float = 1.0  # TransformerConfig.absolute_scale (sinusoid amplitude)
    summary: str = ""


#: Sinusoids of per-feature rms 0.03 / sqrt(2) = 0.021, level with the 0.02-std token
#: embeddings. At full amplitude they are a residual stream 35x larger than what the
#: pre-norm blocks add at first: copy did not train in 2400 steps (loss 0.9), nor with
#: tokens scaled up to match (Vaswani et al.'s sqrt(d_model)); at 0.03 it reaches 1.0.
SINUSOID_SCALE = 0.03

CONTENDERS: dict[str, Contender] = {
    c.name: c
    for c in (
        Contender("nope", "nope", "absolute", summary="no positional encoding; the causal mask alone (Kazemnejad et al. 2023)"),
        Contender("rope", "rope", "rope", extendable=True, summary="rotary position embedding in every layer (Su et al. 2021)"),
        Contender("irope", "rope", "rope", pattern="irope", summary="Llama 4's iRoPE: RoPE layers with every fourth layer NoPE"),
        Contender("sinusoidal", "nope", "absolute", absolute="sinusoidal", absolute_scale=SINUSOID_SCALE, summary="absolute sinusoids added to the embeddings (Vaswani et al. 2017)"),
        Contender("learned", "nope", "absolute", absolute="learned", summary="a learned absolute table of train_len positions (GPT-2)"),
        Contender("alibi", "alibi", "bias", summary="ALiBi linear distance biases (Press et al. 2022)"),
        Contender("t5", "t5", "bias", summary="T5 relative bias buckets (Raffel et al. 2020)"),
        Contender("xpos", "xpos", "rope", summary="xPos: RoPE with exponential decay (Sun et al. 2022)"),
        Contender("p-rope", "prope", "rope", kind_options={"prope": {"p": 0.75}}, summary="p-RoPE: RoPE without its lowest quarter of frequencies (Barbero et al. 2024)"),
    )
}

EXTENSIONS = ("linear", "ntk", "yarn")


def _known_kinds() -> set[str]:
    from ..torch.kinds import LAYER_KINDS

    return set(LAYER_KINDS)


def available_contenders() -> tuple[str, ...]:
    """The contenders whose layer kind exists in this installation, in :data:`CONTENDERS` order."""
    kinds = _known_kinds()
    return tuple(name for name, c in CONTENDERS.items() if c.kind in kinds)


def check_contender(name: str) -> Contender:
    if name not in CONTENDERS:
        raise ValueError(f"unknown scheme {name!r}; known schemes: {', '.join(CONTENDERS)}")
    contender = CONTENDERS[name]
    if contender.kind not in _known_kinds():
        raise ValueError(
            f"scheme {name!r} needs the layer kind {contender.kind!r}, which this installation of "
            f"ropelab.torch does not provide; available schemes: {', '.join(available_contenders())}"
        )
    return contender


def layer_kinds(contender: Contender, num_layers: int) -> tuple[str, ...]:
    """The kind of each layer: the contender's pattern, its "rope" layers of the
    contender's kind (iRoPE: ``ropelab.torch.pattern("irope", n)``)."""
    from ..torch.transformer import pattern

    return tuple(contender.kind if k == "rope" else k for k in pattern(contender.pattern, num_layers))


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
