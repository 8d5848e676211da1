"""RopeConfig: one head's rotary schedule, validated, and read from Hugging Face configs."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import families
from .checks import (
    LAYOUTS,
    MAX_HEAD_DIM,
    check_bool,
    check_float,
    check_int,
    check_layout,
    derived,
    is_derived,
    show,
)
from .rows import limbs_for
from .scaling import HF_EXTRA_KEY, Scheme, default_inv_freq, scheme_from_hf
from .tables_type import tables_kind

__all__ = ["HF_FORMS", "LAYOUTS", "MAX_HEAD_DIM", "RopeConfig", "check_layout", "read_config_json"]

#: the two shapes of a config's RoPE settings: transformers 5.x's ``rope_parameters`` (with
#: ``rope_theta`` inside) and 4.x's ``rope_scaling`` (``rope_theta`` at the top level)
HF_FORMS = ("rope_parameters", "rope_scaling")


@dataclass(frozen=True)
class RopeConfig:
    """The rotary schedule of one attention head.

    Args:
        head_dim: features per head (D), at most :data:`MAX_HEAD_DIM`.
        theta: the RoPE base; ``inv_freq[i] = theta ** (-2i / rotary_dim)`` before scaling.
        rotary_dim: how many leading features are rotated (R, even, <= head_dim);
            defaults to ``head_dim`` (and follows it through ``dataclasses.replace``
            unless given). The rest pass through unchanged (partial rotary).
        layout: ``"interleaved"`` or ``"half"`` pairing (see :data:`LAYOUTS`).
        scaling: a scheme from :mod:`ropelab.scaling`, or None for plain RoPE.
    """

    head_dim: int
    theta: float = 10000.0
    rotary_dim: int | None = None
    layout: str = "interleaved"
    scaling: Scheme | None = None

    def __post_init__(self):
        head_dim = check_int("head_dim", self.head_dim, minimum=1, maximum=MAX_HEAD_DIM)
        given = self.rotary_dim is not None and not is_derived(self.rotary_dim)
        if given:
            rotary_dim = check_int("rotary_dim", self.rotary_dim, minimum=2)
            if rotary_dim > head_dim:
                raise ValueError(f"rotary_dim must be <= head_dim={head_dim}, got {rotary_dim}")
        else:
            rotary_dim = head_dim
        if rotary_dim % 2:
            what = "rotary_dim" if given else "rotary_dim (= head_dim when not given)"
            raise ValueError(f"{what} must be even, got {rotary_dim}")
        # theta <= 1 would make frequencies grow with the pair index (or all equal 1)
        theta = check_float("theta", self.theta, above=1.0)
        check_layout(self.layout)
        if self.scaling is not None:
            if not isinstance(self.scaling, Scheme):
                raise TypeError(
                    f"scaling must be a ropelab.scaling scheme or None, got {show(self.scaling)}"
                )
            self.scaling.check_dims(rotary_dim)
        object.__setattr__(self, "head_dim", head_dim)
        object.__setattr__(self, "rotary_dim", rotary_dim if given else derived(rotary_dim))
        object.__setattr__(self, "theta", theta)
        # exact turn limbs of the frequencies, made now so that traced code reads them as
        # a constant (ropelab.rows.limbs_for); not a field: equality and hashing ignore it
        object.__setattr__(self, "_turn_limbs", {})
        limbs_for(self)
        tables_kind(self.layout, head_dim)  # made now for the same reason

    @property
    def num_pairs(self) -> int:
        return self.rotary_dim // 2

    def inv_freq(self, seq_len: int | None = None) -> np.ndarray:
        """Inverse frequencies (radians per token), float64, shape ``(rotary_dim // 2,)``.

        ``seq_len`` is the current length, read by the schemes that depend on it
        (dynamic NTK; LongRoPE picks its long factors above the original length).
        """
        if seq_len is not None:
            seq_len = check_int("seq_len", seq_len, minimum=1)
        if self.scaling is None:
            return default_inv_freq(self.theta, self.rotary_dim)
        return self.scaling.inv_freq(self.theta, self.rotary_dim, seq_len)

    @property
    def attention_factor(self) -> float:
        """Factor on cos and sin asked for by the scheme (YaRN, LongRoPE); else 1.0."""
        return 1.0 if self.scaling is None else float(self.scaling.attention_factor)

    @property
    def dynamic(self) -> bool:
        """True when the frequencies depend on the current length."""
        return self.scaling is not None and self.scaling.dynamic

    def to_hf(self, *, form: str = "rope_parameters") -> dict:
        """This schedule as transformers reads it: config.json keys, ``from_hf``'s inverse.

        Returns ``head_dim``, the RoPE settings in ``form`` (:data:`HF_FORMS`: 5.x's
        ``rope_parameters`` holding ``rope_theta``, or 4.x's ``rope_scaling`` beside a
        top-level ``rope_theta``; :func:`ropelab.hf.compat.rope_form` names the installed
        release's), ``partial_rotary_factor`` when ``rotary_dim < head_dim``, the keys a
        scheme reads beside them (dynamic NTK's ``max_position_embeddings``), and
        ``rope_interleave: True`` for the interleaved layout (otherwise implied by a
        config's ``model_type``). ``RopeConfig.from_hf(cfg.to_hf()) == cfg`` for every
        scheme; transformers computes the same ``inv_freq`` and attention factor from it.
        A static NTK scheme, which transformers has no type for, is written as its
        default type with the rescaled base, plus ``ropelab_scaling`` naming the scheme.
        """
        if form not in HF_FORMS:
            raise ValueError(f"form must be one of {HF_FORMS}, got {form!r}")
        params = {"rope_type": "default", "rope_theta": self.theta}
        top: dict[str, Any] = {"head_dim": self.head_dim}
        if self.scaling is not None:
            scheme_params, scheme_top = self.scaling.to_hf(self.theta, self.rotary_dim)
            params.update(scheme_params)
            top.update(scheme_top)
        if self.rotary_dim != self.head_dim:
            # transformers takes int(head_dim * fraction): nudge the float up to land on rotary_dim
            fraction = self.rotary_dim / self.head_dim
            while int(self.head_dim * fraction) < self.rotary_dim:
                fraction = math.nextafter(fraction, math.inf)
            params["partial_rotary_factor"] = fraction
        if self.layout == "interleaved":
            top["rope_interleave"] = True
        if form == "rope_parameters":
            return {**top, "rope_parameters": params}
        top["rope_theta"] = params.pop("rope_theta")
        if "partial_rotary_factor" in params:
            top["partial_rotary_factor"] = params.pop("partial_rotary_factor")
        top["rope_scaling"] = None if params["rope_type"] == "default" else params
        return top

    @classmethod
    def from_hf(cls, config: Any, *, layout: str | None = None) -> RopeConfig:
        """Read a Hugging Face config: a ``PretrainedConfig``, a config.json dict, a
        config.json path or a checkpoint folder (its config.json).

        Reads each family the way its transformers code computes it: the older
        ``rope_theta`` / ``rope_scaling`` keys and the newer ``rope_parameters``;
        ``partial_rotary_factor``, GPT-NeoX's ``rotary_pct`` and GPT-J's ``rotary_dim``;
        ``head_dim`` or ``hidden_size / num_attention_heads``; DeepSeek's
        ``qk_rope_head_dim``; and the layout the family's attention uses (see
        :mod:`ropelab.families`; pass ``layout`` to override). A multimodal config is read
        from its text part (``text_config``). A config.json without ``model_type`` is read
        the way transformers' generic code reads it (half layout). A ``ropelab_scaling``
        key (written by :meth:`to_hf` for a scheme transformers has no type for) gives the
        scheme, after checking that transformers' reading of the same config has the same
        frequencies.

        Every value is checked (type, range, sizes bounded) before anything is built.
        Raises ValueError naming the model type and the reason for a config without RoPE,
        a family whose RoPE ropelab does not read, or a bad value (TypeError for a value
        of the wrong type); FileNotFoundError for a path that does not exist or a folder
        without config.json.
        """
        if isinstance(config, (str, os.PathLike)):
            config = read_config_json(config)
        outer, cfg = _as_dict(config)
        model_type = cfg.get("model_type") or None
        label = "the config" if model_type is None else f"model_type {show(model_type)}"
        if outer is not None and outer != model_type:
            label = f"model_type {show(outer)} (its text part: {label})"
        try:
            if model_type is not None and not isinstance(model_type, str):
                raise TypeError(f"model_type must be a string, got {show(model_type)}")
            # a multimodal config's class may give its text part other defaults than the
            # text config class alone does: look the outer one up first
            defaults = families.DEFAULT_ROPE.get(outer) or families.DEFAULT_ROPE.get(model_type, {})
            return _read_hf(cls, cfg, model_type, layout, defaults)
        except (ValueError, TypeError) as err:
            raise type(err)(f"cannot read the RoPE of {label}: {err}") from None


# keys that say a config.json describes RoPE
_ROPE_KEYS = (
    "rope_parameters",
    "rope_scaling",
    "rope_theta",
    "rotary_emb_base",
    "rotary_pct",
    "rotary_dim",
    "partial_rotary_factor",
    "qk_rope_head_dim",
)
# numbers inside rope parameters, checked for type and finiteness before a scheme reads them
_PARAM_NUMBERS = (
    "rope_theta",
    "factor",
    "beta_fast",
    "beta_slow",
    "mscale",
    "mscale_all_dim",
    "attention_factor",
    "low_freq_factor",
    "high_freq_factor",
    "partial_rotary_factor",
)
_LENGTH_KEYS = ("max_position_embeddings", "original_max_position_embeddings", "n_positions")
# an extension factor beyond the largest exact position has no use and overflows NTK bases
_MAX_FACTOR = 2.0**62
_MAX_POSITION = 2**62


def _read_hf(
    cls, cfg: dict, model_type: str | None, layout: str | None, defaults: dict
) -> RopeConfig:
    if model_type in families.REFUSED:
        raise ValueError(families.REFUSED[model_type])
    if layout is not None:
        check_layout(layout)
    params = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if not isinstance(params, Mapping):
        raise TypeError(f"rope_parameters must be a JSON object or null, got {show(params)}")
    params = dict(params)
    if params and "rope_type" not in params and "type" not in params and _nested(params):
        raise ValueError(
            f"it holds rope parameters per layer type {sorted(params)}; ropelab reads one "
            "schedule per config, so pass that layer type's parameters as rope_parameters"
        )
    has_rope_key = bool(params) or any(cfg.get(key) is not None for key in _ROPE_KEYS)
    if model_type is None:
        if not has_rope_key:
            raise ValueError(
                "nothing in it says it uses RoPE: no model_type and none of the keys "
                f"{', '.join(_ROPE_KEYS)}"
            )
    elif model_type not in families.ROPE_MODEL_TYPES:
        if not has_rope_key:
            raise ValueError(
                f"{model_type} applies no rotary embedding (it is not a RoPE family, and the "
                f"config has none of {', '.join(_ROPE_KEYS)})"
            )
        if layout is None:
            raise ValueError(
                f"ropelab has not checked how {model_type} applies RoPE (it is not one of the "
                "transformers families in ropelab.families); pass layout='half' or "
                "layout='interleaved' to read it anyway"
            )

    for key in _LENGTH_KEYS:
        for where in (cfg, params):
            if where.get(key) is not None:
                check_int(key, where[key], minimum=1, maximum=_MAX_POSITION)
    for key in _PARAM_NUMBERS:
        if params.get(key) is not None:
            check_float(key, params[key])
    if params.get("truncate") is not None:
        check_bool("truncate", params["truncate"])
    if params.get("factor") is not None:
        check_float("factor", params["factor"], maximum=_MAX_FACTOR)
    for key in ("short_factor", "long_factor"):
        values = params.get(key)
        if values is not None:
            if not isinstance(values, (list, tuple)) or len(values) > MAX_HEAD_DIM // 2:
                raise TypeError(
                    f"{key} must be a list of at most {MAX_HEAD_DIM // 2} numbers, got {show(values)}"
                )
            for i, v in enumerate(values):
                check_float(f"{key}[{i}]", v)

    # what the family's config class assumes for the keys a config.json leaves out
    if not params:
        params = {k: v for k, v in defaults.items() if k not in ("rope_theta", "partial_rotary_factor")}
    head_dim = _head_dim(cfg, model_type)
    rope_head_dim = cfg.get("qk_rope_head_dim")
    if rope_head_dim:  # DeepSeek-style heads rotate only their decoupled rope part, whole
        head_dim = check_int("qk_rope_head_dim", rope_head_dim, minimum=2, maximum=MAX_HEAD_DIM)
        rotary_dim = None
    else:
        rotary_dim = _rotary_dim(cfg, params, model_type, head_dim, defaults)

    theta = params.get("rope_theta")
    for key in ("rope_theta", "rotary_emb_base"):
        if theta is None:
            theta = cfg.get(key)
    if theta is None:
        theta = defaults.get("rope_theta", 10000.0)
    theta = check_float("rope_theta", theta, above=1.0)

    if layout is None:
        flag = cfg.get("rope_interleave")
        if model_type in families.INTERLEAVE_FLAG:
            if flag is None:
                flag = families.INTERLEAVE_FLAG[model_type]
            layout = "interleaved" if check_bool("rope_interleave", flag) else "half"
        elif model_type is None and flag is not None:
            layout = "interleaved" if check_bool("rope_interleave", flag) else "half"
        else:
            layout = "interleaved" if model_type in families.INTERLEAVED else "half"
    scheme = scheme_from_hf(params, cfg)
    read = cls(head_dim, theta=theta, rotary_dim=rotary_dim, layout=layout, scaling=scheme)
    extra = cfg.get(HF_EXTRA_KEY)
    if not extra:
        return read
    if not isinstance(extra, Mapping):
        raise TypeError(f"{HF_EXTRA_KEY} must be a JSON object, got {show(extra)}")
    extra = dict(extra)
    if "rope_theta" not in extra:
        raise ValueError(f"{HF_EXTRA_KEY} {extra!r} has no rope_theta")
    ours = cls(
        head_dim,
        theta=check_float(f"{HF_EXTRA_KEY}.rope_theta", extra["rope_theta"], above=1.0),
        rotary_dim=rotary_dim,
        layout=layout,
        scaling=scheme_from_hf(extra, cfg),
    )
    if not (
        np.allclose(ours.inv_freq(), read.inv_freq(), rtol=1e-9, atol=0)
        and math.isclose(ours.attention_factor, read.attention_factor, rel_tol=1e-9)
    ):
        raise ValueError(
            f"{HF_EXTRA_KEY} {extra!r} does not match its rope settings (transformers reads "
            f"{read!r}); remove one of them"
        )
    return ours


def _first(cfg: dict, *keys: str):
    for key in keys:
        if cfg.get(key) is not None:
            return key, cfg[key]
    return keys[0], None


def _head_dim(cfg: dict, model_type: str | None) -> int:
    """``head_dim``, else ``hidden_size / num_attention_heads`` (which must divide)."""
    head_dim_key = families.HEAD_DIM_KEY.get(model_type, "head_dim")
    head_dim = cfg.get(head_dim_key, cfg.get("head_dim"))
    if head_dim is not None:  # null: derived, as transformers does
        return check_int(head_dim_key, head_dim, minimum=2, maximum=MAX_HEAD_DIM)
    hidden_key, hidden = _first(cfg, "hidden_size", "n_embd", "d_model")
    heads_key, heads = _first(cfg, "num_attention_heads", "n_head", "n_heads")
    if hidden is None or heads is None:
        raise ValueError(
            "it gives neither head_dim nor hidden_size and num_attention_heads"
        )
    hidden = check_int(hidden_key, hidden, minimum=1, maximum=MAX_HEAD_DIM * 2**16)
    heads = check_int(heads_key, heads, minimum=1, maximum=2**16)
    if hidden % heads:
        raise ValueError(
            f"{hidden_key}={hidden} is not divisible by {heads_key}={heads}; give head_dim "
            "explicitly if the heads are not hidden_size / num_attention_heads wide"
        )
    return check_int(
        f"head_dim ({hidden_key} / {heads_key})", hidden // heads, minimum=2, maximum=MAX_HEAD_DIM
    )


def _rotary_dim(
    cfg: dict, params: dict, model_type: str | None, head_dim: int, defaults: dict
) -> int | None:
    """The rotated width: an absolute rotary_dim (GPT-J, CodeGen) or a fraction of the head."""
    if model_type is None or model_type in families.ROTARY_DIM_KEY:
        rotary_dim = cfg.get("rotary_dim", families.DEFAULT_ROTARY_DIM.get(model_type))
        if rotary_dim is not None:
            return check_int("rotary_dim", rotary_dim, minimum=2, maximum=head_dim)
    key, fraction = _first(params, "partial_rotary_factor")
    if fraction is None:
        key, fraction = _first(cfg, "partial_rotary_factor", "rotary_pct")
    if fraction is None:
        key, fraction = "partial_rotary_factor", defaults.get("partial_rotary_factor")
    if fraction is None:
        return None
    fraction = check_float(key, fraction, above=0.0, maximum=1.0)
    return int(head_dim * fraction)  # int() truncates, as transformers does


def _nested(params: Mapping) -> bool:
    return bool(params) and all(isinstance(v, Mapping) or v is None for v in params.values())


def _text_part(cfg: dict) -> dict:
    """The text model's config of a multimodal config.json, as transformers'
    ``get_text_config(decoder=True)`` finds it (``text_config``, ``decoder``, ``generator``)."""
    part = cfg.get("text_config")
    if part is not None and not isinstance(part, Mapping):
        raise TypeError(f"text_config must be a JSON object, got {show(part)}")
    for key in ("text_config", "decoder", "generator"):
        part = cfg.get(key)
        if isinstance(part, Mapping):
            return dict(part)
    return cfg


def _as_dict(config: Any) -> tuple[str | None, dict]:
    """(the outer model_type, the text part's config as a dict)."""
    if isinstance(config, Mapping):
        outer = config.get("model_type")
        return outer if isinstance(outer, str) else None, _text_part(dict(config))
    outer = getattr(config, "model_type", None)
    get_text = getattr(config, "get_text_config", None)
    if get_text is not None:
        try:
            config = get_text(decoder=True)
        except (ValueError, TypeError):
            pass  # ambiguous or absent: read the config itself
    to_dict = getattr(config, "to_dict", None)
    if to_dict is None:
        raise TypeError(
            f"expected a transformers config or a config.json dict, got {type(config).__name__}"
        )
    out = to_dict()
    # attributes that to_dict() may drop but transformers reads with getattr
    for key in (
        "head_dim", "hidden_size", "num_attention_heads", "rope_parameters", "max_position_embeddings"
    ):
        if key not in out and getattr(config, key, None) is not None:
            out[key] = getattr(config, key)
    return outer if isinstance(outer, str) else None, out


# -- config.json on disk ------------------------------------------------------------------

#: config.json files are a few kilobytes; these bounds only stop a malformed file from
#: exhausting memory or the interpreter's stack before any value is checked
MAX_JSON_BYTES = 32 * 2**20
MAX_JSON_DEPTH = 64
_MAX_INT_DIGITS = 40


def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise ValueError(f"an integer literal of {len(text)} digits (at most {_MAX_INT_DIGITS})")
    return int(text)


def _json_depth(text: str) -> int:
    """The deepest nesting of objects and arrays, counted outside strings."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def read_config_json(path) -> dict:
    """A config.json file (or a checkpoint folder's) as a dict, read with bounds on size, nesting and integer length.

    Raises ValueError (naming the file) for a file that is too large, not UTF-8, not JSON,
    nested deeper than :data:`MAX_JSON_DEPTH`, or not a JSON object; OSError when it
    cannot be read.
    """
    from pathlib import Path

    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no config file at {str(path)!r} (expected a config.json or a folder holding one)"
        )

    def refuse(reason: str) -> ValueError:
        return ValueError(f"cannot read {str(path)!r} as a config.json: {reason}")

    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise refuse(f"it is {size} bytes, more than the {MAX_JSON_BYTES} a config.json may be")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise refuse(f"it is not UTF-8 text ({err})") from None
    if _json_depth(text) > MAX_JSON_DEPTH:
        raise refuse(f"it nests objects and arrays deeper than {MAX_JSON_DEPTH} levels")
    try:
        data = json.loads(text, parse_int=_json_int)
    except ValueError as err:  # JSONDecodeError and the integer bound
        raise refuse(f"it is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise refuse(f"it holds a JSON {type(data).__name__}, expected an object")
    return data
