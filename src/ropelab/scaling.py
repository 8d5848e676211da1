"""Context-extension schemes for RoPE frequencies.

Every scheme is a frozen dataclass with the same members:

- ``inv_freq(theta, rotary_dim, seq_len) -> numpy.ndarray``: the scheme's float64
  inverse frequencies, shape ``(rotary_dim // 2,)``;
- ``attention_factor``: the factor Hugging Face multiplies cos and sin by (1.0 unless
  the scheme asks for a logit temperature);
- ``dynamic``, ``regime(seq_len)`` and ``extended_length``: whether the frequencies
  depend on the current length, which :class:`Regime` (lengths that share one set of
  frequencies) a length falls in, and the length a length-dependent scheme's factor is
  meant for.
  Callers that cache tables per length (the torch front end) or show a schedule
  (``ropelab inspect``) ask these, never a scheme's name or class.

``SCHEMES`` maps the ``rope_type`` names used in Hugging Face configs to the classes,
and each class reads its own parameters from such a config through ``from_hf``.
Adding a scheme means adding one class and one registry entry.

Formulas follow the papers and, where they differ in details, the behaviour of
``transformers.modeling_rope_utils`` (which real checkpoints are run with):

- Linear / Position Interpolation: Chen et al. 2023, arXiv:2306.15595.
- NTK-aware: bloc97 (2023), base rescaled by ``factor ** (R / (R - 2))``.
- Dynamic NTK: the same, with the factor grown from the current length.
- YaRN: Peng et al. 2023, arXiv:2309.00071.
- Llama 3: Meta's Llama 3.1 release (piecewise by wavelength).
- LongRoPE: Ding et al. 2024, arXiv:2402.13753 (Phi-3's per-pair factors).
- p-RoPE: Barbero et al. 2024, arXiv:2410.06205 (no Hugging Face rope_type).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np

from .checks import MAX_POSITION, check_bool, check_float, check_int, derived, is_derived

__all__ = [
    "HF_EXTRA_KEY",
    "SCHEMES",
    "DynamicNTK",
    "Linear",
    "Llama3",
    "LongRoPE",
    "NTK",
    "PRoPE",
    "Regime",
    "Scheme",
    "YaRN",
    "default_inv_freq",
    "scheme_from_hf",
]


def default_inv_freq(theta: float, rotary_dim: int) -> np.ndarray:
    """RoFormer's frequencies ``theta ** (-2i / rotary_dim)``, float64, shape (R/2,)."""
    exponents = np.arange(0, rotary_dim, 2, dtype=np.float64) / rotary_dim
    return 1.0 / (float(theta) ** exponents)


# a scheme's arguments, through ropelab.checks: TypeError for a wrong type, ValueError for
# a wrong value, the message naming the scheme and the argument


def _check_factor(name: str, factor: Any, *, minimum: float = 1.0) -> float:
    return check_float(f"{name} factor", factor, minimum=minimum)


def _check_length(name: str, value: Any) -> int:
    return check_int(name, value, minimum=1, maximum=MAX_POSITION)


def _check_positive(name: str, value: Any) -> float:
    return check_float(name, value, above=0.0)


def _original_length(params: Mapping, config: Mapping) -> int:
    """The pre-training length, read as transformers reads it.

    Phi-3 keeps ``original_max_position_embeddings`` at the top level of its config,
    and transformers gives that one priority over the one in the scaling dict.
    """
    value = config.get("original_max_position_embeddings")
    if value is None:
        value = params.get("original_max_position_embeddings")
    if value is None:
        value = config.get("max_position_embeddings")
    if value is None:
        raise ValueError(
            f"rope scaling {params.get('rope_type')!r} needs original_max_position_embeddings "
            "or max_position_embeddings in the config; neither is set"
        )
    return int(value)


class Regime(NamedTuple):
    """Lengths that share one set of frequencies: ``first`` to ``last`` (None: no end).

    Two lengths in equal regimes give equal ``inv_freq``, so a regime keys a cache of
    tables. ``name`` says which set it is ("base" for the frequencies a scheme uses
    without a length; "short"/"long" for LongRoPE, "grown" for dynamic NTK past its
    original length, where every length is a regime of its own).
    """

    name: str
    first: int
    last: int | None


class Scheme:
    """Base of the scaling schemes (see the module docstring for the protocol)."""

    name: ClassVar[str]
    #: whether ``inv_freq`` depends on ``seq_len``
    dynamic: ClassVar[bool] = False

    def inv_freq(self, theta: float, rotary_dim: int, seq_len: int | None = None) -> np.ndarray:
        raise NotImplementedError

    @property
    def attention_factor(self) -> float:
        return 1.0

    def regime(self, seq_len: int | None = None) -> Regime:
        """The regime ``seq_len`` falls in (None: the base one, as ``inv_freq`` reads it).

        A scheme that does not depend on the length has one regime, every length.
        """
        return Regime("base", 1, None)

    @property
    def extended_length(self) -> int | None:
        """For a length-dependent scheme, the length its factor is meant for (factor x the
        original length): where ``ropelab inspect`` shows it. None when it does not say."""
        return None

    def check_dims(self, rotary_dim: int) -> None:
        """Raise ValueError if the scheme cannot serve this rotary dimension."""

    @classmethod
    def from_hf(cls, params: Mapping, config: Mapping) -> Scheme:
        raise NotImplementedError

    def describe(self) -> str:
        """One line for ``ropelab inspect``."""
        return repr(self)

    def to_hf(self, theta: float, rotary_dim: int) -> tuple[dict, dict]:
        """This scheme in transformers' form: ``(rope parameters, other config keys)``.

        The first dict goes into ``rope_parameters`` (``rope_scaling`` in 4.x) beside
        ``rope_theta``; the second holds top-level config.json keys the scheme needs.
        ``RopeConfig.from_hf`` reads both back to an equal scheme.
        """
        raise NotImplementedError


@dataclass(frozen=True)
class Linear(Scheme):
    """Position Interpolation (Chen et al. 2023): every frequency divided by ``factor``."""

    factor: float
    name: ClassVar[str] = "linear"

    def __post_init__(self):
        object.__setattr__(self, "factor", _check_factor("Linear", self.factor))

    def inv_freq(self, theta, rotary_dim, seq_len=None):
        return default_inv_freq(theta, rotary_dim) / self.factor

    @classmethod
    def from_hf(cls, params, config):
        return cls(params["factor"])

    def describe(self):
        return f"linear (position interpolation): every frequency / {self.factor:g}"

    def to_hf(self, theta, rotary_dim):
        return {"rope_type": "linear", "factor": self.factor}, {}


def _ntk_base(theta: float, rotary_dim: int, growth: float, name: str, factor: float) -> float:
    """``theta * growth ** (R / (R - 2))``; ValueError naming ``factor`` when float64
    cannot hold it."""
    try:
        base = theta * growth ** (rotary_dim / (rotary_dim - 2))
    except OverflowError:
        base = math.inf
    if not (math.isfinite(base) and base > 0):
        raise ValueError(
            f"{name} factor {factor:g} makes the base theta * {growth:g} ** (R / (R - 2)) = "
            f"{base:g} with theta={theta:g}, R={rotary_dim}: not a finite positive float64; "
            "use a smaller factor"
        )
    return base


def _check_ntk_dims(name: str, rotary_dim: int) -> None:
    if rotary_dim <= 2:
        raise ValueError(
            f"{name} rescales the base by factor ** (R / (R - 2)) and needs rotary_dim > 2, "
            f"got rotary_dim={rotary_dim}"
        )


@dataclass(frozen=True)
class NTK(Scheme):
    """NTK-aware scaling: the base becomes ``theta * factor ** (R / (R - 2))``.

    The lowest frequency is then divided by exactly ``factor`` while the highest is
    unchanged (static form; see :class:`DynamicNTK` for the length-dependent one).
    """

    factor: float
    name: ClassVar[str] = "ntk"

    def __post_init__(self):
        object.__setattr__(self, "factor", _check_factor("NTK", self.factor))

    def check_dims(self, rotary_dim):
        _check_ntk_dims("NTK", rotary_dim)

    def inv_freq(self, theta, rotary_dim, seq_len=None):
        return default_inv_freq(_ntk_base(theta, rotary_dim, self.factor, "NTK", self.factor), rotary_dim)

    @classmethod
    def from_hf(cls, params, config):
        return cls(params["factor"])

    def describe(self):
        return f"NTK-aware: base * {self.factor:g} ** (R / (R - 2))"

    def to_hf(self, theta, rotary_dim):
        # transformers has no static NTK type: its default type with the rescaled base
        # computes the same frequencies; HF_EXTRA_KEY keeps the scheme for ropelab
        base = _ntk_base(theta, rotary_dim, self.factor, "NTK", self.factor)
        extra = {"rope_type": self.name, "factor": self.factor, "rope_theta": float(theta)}
        return {"rope_type": "default", "rope_theta": base}, {HF_EXTRA_KEY: extra}


@dataclass(frozen=True)
class DynamicNTK(Scheme):
    """Dynamic NTK: NTK scaling whose growth follows the current length.

    For ``seq_len <= original_max_position`` the frequencies are the default ones; above,
    the base is ``theta * (factor * L / L0 - (factor - 1)) ** (R / (R - 2))`` as in
    transformers' ``dynamic`` rope type.
    """

    factor: float
    original_max_position: int
    name: ClassVar[str] = "dynamic"
    dynamic: ClassVar[bool] = True

    def __post_init__(self):
        object.__setattr__(self, "factor", _check_factor("DynamicNTK", self.factor))
        object.__setattr__(
            self,
            "original_max_position",
            _check_length("DynamicNTK original_max_position", self.original_max_position),
        )

    def check_dims(self, rotary_dim):
        _check_ntk_dims("DynamicNTK", rotary_dim)

    def inv_freq(self, theta, rotary_dim, seq_len=None):
        if seq_len is None or seq_len <= self.original_max_position:
            return default_inv_freq(theta, rotary_dim)  # the base regime: growth 1, exactly
        growth = self.factor * seq_len / self.original_max_position - (self.factor - 1)
        return default_inv_freq(_ntk_base(theta, rotary_dim, growth, "DynamicNTK", self.factor), rotary_dim)

    def regime(self, seq_len=None):
        # the base frequencies up to the original length; past it every length grows its own
        if seq_len is None or seq_len <= self.original_max_position:
            return Regime("base", 1, self.original_max_position)
        return Regime("grown", seq_len, seq_len)

    @property
    def extended_length(self):
        return round(self.factor * self.original_max_position)

    @classmethod
    def from_hf(cls, params, config):
        # transformers' dynamic type measures growth against max_position_embeddings
        return cls(params["factor"], int(config["max_position_embeddings"]))

    def describe(self):
        return (
            f"dynamic NTK: factor {self.factor:g}, grows past {self.original_max_position} tokens"
        )

    def to_hf(self, theta, rotary_dim):
        # transformers' dynamic type grows past max_position_embeddings
        return {"rope_type": "dynamic", "factor": self.factor}, {
            "max_position_embeddings": self.original_max_position
        }


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


@dataclass(frozen=True)
class YaRN(Scheme):
    """YaRN (Peng et al. 2023): NTK-by-parts interpolation plus a logit temperature.

    Pairs that complete more than ``beta_fast`` rotations within the original context
    keep their frequency, pairs with fewer than ``beta_slow`` are interpolated by
    ``factor``, and a linear ramp blends the pairs between. ``attention_factor``
    defaults to ``0.1 * ln(factor) + 1`` (or DeepSeek's ratio of two such terms when
    ``mscale`` and ``mscale_all_dim`` are both given).
    """

    factor: float
    original_max_position: int
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float | None = None
    mscale_all_dim: float | None = None
    #: the factor on cos and sin; computed from the others unless given (see the docstring)
    attention_factor: float | None = None
    truncate: bool = True
    name: ClassVar[str] = "yarn"

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "factor", _check_factor("YaRN", self.factor))
        set_(self, "original_max_position", _check_length("YaRN original_max_position", self.original_max_position))
        set_(self, "beta_fast", _check_positive("YaRN beta_fast", self.beta_fast))
        set_(self, "beta_slow", _check_positive("YaRN beta_slow", self.beta_slow))
        if self.beta_fast <= self.beta_slow:
            raise ValueError(
                f"YaRN needs beta_fast > beta_slow (rotations of the fast and slow ends of the "
                f"ramp), got beta_fast={self.beta_fast!r}, beta_slow={self.beta_slow!r}"
            )
        for label in ("mscale", "mscale_all_dim"):
            value = getattr(self, label)
            set_(self, label, None if value is None else check_float(f"YaRN {label}", value, minimum=0.0))
        set_(self, "truncate", check_bool("YaRN truncate", self.truncate))
        # computed (and recomputed by dataclasses.replace) unless the caller set it
        if self.attention_factor is None or is_derived(self.attention_factor):
            set_(self, "attention_factor", derived(self._computed_attention_factor()))
        else:
            set_(self, "attention_factor", _check_positive("YaRN attention_factor", self.attention_factor))

    @property
    def attention_factor_override(self) -> float | None:
        """The attention factor the caller set, or None when it is computed."""
        return None if is_derived(self.attention_factor) else self.attention_factor

    def _computed_attention_factor(self) -> float:
        if self.mscale and self.mscale_all_dim:
            return _yarn_mscale(self.factor, self.mscale) / _yarn_mscale(
                self.factor, self.mscale_all_dim
            )
        return _yarn_mscale(self.factor)

    def correction_range(self, theta: float, rotary_dim: int) -> tuple[float, float]:
        """The pair indices where the ramp starts and ends (YaRN's ``low``, ``high``)."""

        def pair_for(rotations):
            # the (fractional) pair index that turns `rotations` times in the original context
            return (
                rotary_dim
                * math.log(self.original_max_position / (rotations * 2 * math.pi))
                / (2 * math.log(theta))
            )

        low, high = pair_for(self.beta_fast), pair_for(self.beta_slow)
        if self.truncate:
            low, high = math.floor(low), math.ceil(high)
        return max(low, 0), min(high, rotary_dim - 1)

    def inv_freq(self, theta, rotary_dim, seq_len=None):
        base = default_inv_freq(theta, rotary_dim)
        low, high = self.correction_range(theta, rotary_dim)
        if low == high:
            high += 0.001  # a one-point ramp would divide by zero (as in the reference code)
        ramp = np.clip((np.arange(rotary_dim // 2, dtype=np.float64) - low) / (high - low), 0, 1)
        keep = 1.0 - ramp  # 1: extrapolate (keep the frequency), 0: interpolate
        return base / self.factor * (1.0 - keep) + base * keep

    @classmethod
    def from_hf(cls, params, config):
        original = _original_length(params, config)
        factor = params.get("factor")
        if factor is None:
            factor = config["max_position_embeddings"] / original
            if factor < 1:  # the ratio would shrink the context: name where it came from
                raise ValueError(
                    f"YaRN without a factor takes max_position_embeddings / "
                    f"original_max_position_embeddings = {config['max_position_embeddings']} / "
                    f"{original} = {factor:g}, which must be >= 1; set rope factor explicitly"
                )
        return cls(
            factor,
            original,
            beta_fast=params.get("beta_fast") or 32,
            beta_slow=params.get("beta_slow") or 1,
            mscale=params.get("mscale"),
            mscale_all_dim=params.get("mscale_all_dim"),
            attention_factor=params.get("attention_factor"),
            # transformers reads a null truncate as "do not truncate"
            truncate=bool(params.get("truncate", True)),
        )

    def describe(self):
        return (
            f"YaRN: factor {self.factor:g} over {self.original_max_position} tokens, "
            f"ramp between {self.beta_slow:g} and {self.beta_fast:g} rotations"
        )

    def to_hf(self, theta, rotary_dim):
        params = {
            "rope_type": "yarn",
            "factor": self.factor,
            "original_max_position_embeddings": self.original_max_position,
            "beta_fast": self.beta_fast,
            "beta_slow": self.beta_slow,
            "truncate": self.truncate,
        }
        optional = {"mscale": self.mscale, "mscale_all_dim": self.mscale_all_dim,
                    "attention_factor": self.attention_factor_override}
        params.update({k: v for k, v in optional.items() if v is not None})
        return params, {}


@dataclass(frozen=True)
class Llama3(Scheme):
    """Llama 3.1's scaling: by wavelength, keep the short, divide the long, blend between.

    Wavelengths below ``L0 / high_freq_factor`` are kept, those above
    ``L0 / low_freq_factor`` are divided by ``factor``, and the band between is a linear
    blend in ``L0 / wavelength``. ``low_freq_factor == high_freq_factor`` (Llama 4
    Scout ships 1.0 and 1.0) leaves no band: every pair is either kept or divided.
    """

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position: int
    name: ClassVar[str] = "llama3"

    def __post_init__(self):
        object.__setattr__(self, "factor", _check_factor("Llama3", self.factor))
        lo = _check_positive("Llama3 low_freq_factor", self.low_freq_factor)
        hi = _check_positive("Llama3 high_freq_factor", self.high_freq_factor)
        if lo > hi:
            raise ValueError(
                f"Llama3 needs low_freq_factor <= high_freq_factor, got "
                f"low_freq_factor={self.low_freq_factor!r} > high_freq_factor={self.high_freq_factor!r}"
            )
        object.__setattr__(self, "low_freq_factor", lo)
        object.__setattr__(self, "high_freq_factor", hi)
        object.__setattr__(
            self,
            "original_max_position",
            _check_length("Llama3 original_max_position", self.original_max_position),
        )

    def inv_freq(self, theta, rotary_dim, seq_len=None):
        base = default_inv_freq(theta, rotary_dim)
        context = self.original_max_position
        wavelen = 2 * math.pi / base
        long_wave = wavelen > context / self.low_freq_factor
        short_wave = wavelen < context / self.high_freq_factor
        out = np.where(long_wave, base / self.factor, base)
        middle = ~long_wave & ~short_wave
        if middle.any():  # empty when low_freq_factor == high_freq_factor
            smooth = (context / wavelen[middle] - self.low_freq_factor) / (
                self.high_freq_factor - self.low_freq_factor
            )
            out[middle] = (1 - smooth) * base[middle] / self.factor + smooth * base[middle]
        return out

    @classmethod
    def from_hf(cls, params, config):
        return cls(
            params["factor"],
            params["low_freq_factor"],
            params["high_freq_factor"],
            _original_length(params, config),
        )

    def describe(self):
        return (
            f"Llama 3: factor {self.factor:g} over {self.original_max_position} tokens, "
            f"low/high frequency factors {self.low_freq_factor:g}/{self.high_freq_factor:g}"
        )

    def to_hf(self, theta, rotary_dim):
        return {
            "rope_type": "llama3",
            "factor": self.factor,
            "low_freq_factor": self.low_freq_factor,
            "high_freq_factor": self.high_freq_factor,
            "original_max_position_embeddings": self.original_max_position,
        }, {}


@dataclass(frozen=True)
class LongRoPE(Scheme):
    """LongRoPE (Ding et al. 2024): searched per-pair divisors, short and long sets.

    ``short_factor`` applies while the length is at most ``original_max_position``,
    ``long_factor`` beyond it. ``attention_factor`` defaults to
    ``sqrt(1 + ln(factor) / ln(L0))`` with ``factor`` the extension ratio.
    """

    short_factor: tuple[float, ...]
    long_factor: tuple[float, ...]
    original_max_position: int
    factor: float | None = None
    #: the factor on cos and sin; computed from factor unless given (see the docstring)
    attention_factor: float | None = None
    name: ClassVar[str] = "longrope"
    dynamic: ClassVar[bool] = True

    def __post_init__(self):
        set_ = object.__setattr__
        for label in ("short_factor", "long_factor"):
            given = getattr(self, label)
            if isinstance(given, (str, bytes)) or not isinstance(given, (Sequence, np.ndarray)):
                raise TypeError(f"LongRoPE {label} must be a list of numbers, got {given!r}")
            values = tuple(check_float(f"LongRoPE {label}[{i}]", v) for i, v in enumerate(given))
            if not values or not all(v > 0 for v in values):
                raise ValueError(
                    f"LongRoPE {label} must be a non-empty list of positive numbers, got {values!r}"
                )
            set_(self, label, values)
        if len(self.short_factor) != len(self.long_factor):
            raise ValueError(
                f"LongRoPE short_factor and long_factor must have the same length, got "
                f"{len(self.short_factor)} and {len(self.long_factor)}"
            )
        set_(self, "original_max_position", _check_length("LongRoPE original_max_position", self.original_max_position))
        set_(self, "factor", None if self.factor is None else _check_factor("LongRoPE", self.factor))
        if self.attention_factor is None or is_derived(self.attention_factor):
            set_(self, "attention_factor", derived(self._computed_attention_factor()))
        else:
            set_(self, "attention_factor", _check_positive("LongRoPE attention_factor", self.attention_factor))

    @property
    def attention_factor_override(self) -> float | None:
        """The attention factor the caller set, or None when it is computed."""
        return None if is_derived(self.attention_factor) else self.attention_factor

    def check_dims(self, rotary_dim):
        if len(self.short_factor) != rotary_dim // 2:
            raise ValueError(
                f"LongRoPE factor lists need one entry per rotary pair (rotary_dim // 2 = "
                f"{rotary_dim // 2}), got {len(self.short_factor)}"
            )

    def _computed_attention_factor(self) -> float:
        if self.factor is None or self.factor <= 1.0:
            return 1.0
        return math.sqrt(1 + math.log(self.factor) / math.log(self.original_max_position))

    def inv_freq(self, theta, rotary_dim, seq_len=None):
        long = seq_len is not None and seq_len > self.original_max_position
        factors = np.asarray(self.long_factor if long else self.short_factor, dtype=np.float64)
        return default_inv_freq(theta, rotary_dim) / factors

    def regime(self, seq_len=None):
        if seq_len is None or seq_len <= self.original_max_position:
            return Regime("short", 1, self.original_max_position)
        return Regime("long", self.original_max_position + 1, None)

    @property
    def extended_length(self):
        return None if self.factor is None else round(self.factor * self.original_max_position)

    @classmethod
    def from_hf(cls, params, config):
        original = _original_length(params, config)
        factor = params.get("factor")
        if factor is None:
            factor = config["max_position_embeddings"] / original
            # no extension (a context kept at or below the original, as transformers runs
            # it: attention factor 1): as if unset
            factor = None if factor <= 1 else factor
        return cls(
            params["short_factor"],
            params["long_factor"],
            original,
            factor=factor,
            attention_factor=params.get("attention_factor"),
        )

    def describe(self):
        return (
            f"LongRoPE: searched per-pair factors, short up to {self.original_max_position} "
            f"tokens, long beyond"
        )

    def to_hf(self, theta, rotary_dim):
        params = {
            "rope_type": "longrope",
            "short_factor": list(self.short_factor),
            "long_factor": list(self.long_factor),
            "original_max_position_embeddings": self.original_max_position,
        }
        if self.attention_factor_override is not None:
            params["attention_factor"] = self.attention_factor_override
        if self.factor is None:  # transformers then takes max_position_embeddings / original
            return params, {"max_position_embeddings": self.original_max_position}
        return {**params, "factor": self.factor}, {}


@dataclass(frozen=True)
class PRoPE(Scheme):
    """p-RoPE (Barbero et al. 2024, arXiv:2410.06205): rotate only the fastest pairs.

    The first ``int(p * R/2)`` pairs (the highest frequencies) keep RoPE's frequencies;
    the others get frequency 0, i.e. they are never rotated and act as NoPE features
    that carry semantics unaffected by distance. ``p=1`` is RoPE, ``p=0`` is NoPE.
    Use it as ``RopeConfig(head_dim, scaling=PRoPE(0.75))``. Hugging Face configs have
    no rope_type for it, so it is not in :data:`SCHEMES`.
    """

    p: float
    name: ClassVar[str] = "p-rope"

    def __post_init__(self):
        object.__setattr__(self, "p", check_float("PRoPE p", self.p, minimum=0.0, maximum=1.0))

    def rotated_pairs(self, rotary_dim: int) -> int:
        """How many of the R/2 pairs are rotated."""
        return int(self.p * (rotary_dim // 2))

    def inv_freq(self, theta, rotary_dim, seq_len=None):
        out = default_inv_freq(theta, rotary_dim)
        out[self.rotated_pairs(rotary_dim) :] = 0.0
        return out

    def describe(self):
        return f"p-RoPE: only the fastest {self.p:.0%} of the pairs rotate, the rest are NoPE"

    def to_hf(self, theta, rotary_dim):
        raise NotImplementedError(
            f"PRoPE({self.p:g}) has no transformers config that ropelab writes: transformers' "
            "rope types (default, linear, dynamic, yarn, longrope, llama3) cannot say that "
            "some pairs never rotate; keep the config as a ropelab RopeConfig"
        )


#: rope_type name (as in Hugging Face configs) -> scheme class
SCHEMES: dict[str, type[Scheme]] = {
    cls.name: cls for cls in (Linear, NTK, DynamicNTK, YaRN, Llama3, LongRoPE)
}
#: top-level config.json key holding a scheme transformers has no type for (static NTK,
#: written for transformers as its default type with the rescaled base)
HF_EXTRA_KEY = "ropelab_scaling"
# older names found in released configs
# ("mrope" is Qwen2-VL's label: default frequencies, with the pairs split between time,
# height and width positions by ropelab.positional.mrope_tables)
_ALIASES = {"su": "longrope", "default": None, "mrope": None}


def scheme_from_hf(params: Mapping | None, config: Mapping) -> Scheme | None:
    """Build the scheme described by a config's rope parameters (None: unscaled)."""
    if not params:
        return None
    rope_type = params.get("rope_type", params.get("type", "default"))
    rope_type = _ALIASES.get(rope_type, rope_type)
    if rope_type is None:
        return None
    if rope_type not in SCHEMES:
        raise ValueError(
            f"unknown rope_type {rope_type!r} in the config; ropelab knows "
            f"{sorted(SCHEMES)} (and 'default')"
        )
    try:
        return SCHEMES[rope_type].from_hf(params, config)
    except KeyError as err:
        raise ValueError(
            f"rope_type {rope_type!r} needs the key {err.args[0]!r}, missing from the config "
            "(looked in its rope parameters and, for lengths, at its top level)"
        ) from None
