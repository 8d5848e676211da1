"""The extension schemes ``ropelab extend`` compares, built for a checkpoint and a length.

Each name maps to one :mod:`ropelab.scaling` scheme; its settings come from flags or
from the checkpoint's original length ``L0``. The extension factor at length ``L`` is
``max(1, L / L0)`` (each length gets the scheme configured for it), or one ``--factor``
for every length (one configuration, as a shipped config is). LongRoPE's factors are the
searched ones (:mod:`ropelab.extend.search`), the same at every length.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .. import scaling
from ..config import RopeConfig

__all__ = ["NAMES", "SchemeSettings", "factor_at", "longrope_scheme", "rope_at"]


@dataclass(frozen=True)
class SchemeSettings:
    original: int  # L0: the length the checkpoint was trained at
    factor: float | None = None  # None: L / L0 at each length
    yarn_beta_fast: float = 32.0
    yarn_beta_slow: float = 1.0
    llama3_low_freq_factor: float = 1.0
    llama3_high_freq_factor: float = 4.0


def _unsearched():
    raise ValueError("longrope needs its searched factors")


#: name -> builder(settings, factor, searched LongRoPE or None) -> scheme or None
_BUILDERS = {
    "none": lambda s, f, searched: None,
    "linear": lambda s, f, searched: scaling.Linear(f),
    "ntk": lambda s, f, searched: scaling.NTK(f),
    "dynamic": lambda s, f, searched: scaling.DynamicNTK(f, s.original),
    "yarn": lambda s, f, searched: scaling.YaRN(f, s.original, beta_fast=s.yarn_beta_fast, beta_slow=s.yarn_beta_slow),
    "llama3": lambda s, f, searched: scaling.Llama3(f, s.llama3_low_freq_factor, s.llama3_high_freq_factor, s.original),
    "longrope": lambda s, f, searched: searched if searched is not None else _unsearched(),
}
NAMES = tuple(_BUILDERS)


def factor_at(settings: SchemeSettings, length: int) -> float:
    return settings.factor if settings.factor is not None else max(1.0, length / settings.original)


def longrope_scheme(factors, original: int, search_length: int) -> scaling.LongRoPE:
    """Searched long factors; short factors 1 (the checkpoint unchanged up to ``original``);
    the attention factor of the extension ratio ``search_length / original``."""
    return scaling.LongRoPE([1.0] * len(factors), list(factors), original, factor=max(1.0, search_length / original))


def rope_at(base: RopeConfig, name: str, length: int, settings: SchemeSettings, searched=None) -> RopeConfig:
    """``base`` (the checkpoint's schedule) with scheme ``name`` for ``length``."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown scheme {name!r}; known schemes: {', '.join(NAMES)}")
    return replace(base, scaling=_BUILDERS[name](settings, factor_at(settings, length), searched))
