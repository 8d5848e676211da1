"""RopeConfig: one head's rotary schedule, validated, and read from Hugging Face configs."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .scaling import HF_EXTRA_KEY, Scheme, default_inv_freq, scheme_from_hf

__all__ = ["HF_FORMS", "LAYOUTS", "RopeConfig", "check_layout"]

#: "interleaved": pairs (x[2i], x[2i+1]) (RoFormer, GPT-J, Meta's Llama code);
#: "half": pairs (x[i], x[i + R/2]) (GPT-NeoX, Hugging Face Llama).
LAYOUTS = ("interleaved", "half")

# model_type values whose Hugging Face implementation pairs features interleaved;
# every other model_type with RoPE uses the half layout.
_INTERLEAVED_MODEL_TYPES = frozenset(
    {"gptj", "llama4", "llama4_text", "codegen", "deepseek_v2", "deepseek_v3"}
)

# what transformers' config classes assume when a config.json leaves the key out
# (GPTNeoXConfig: rotary_pct 0.25; GPTJConfig and CodeGenConfig: rotary_dim 64)
_DEFAULT_ROTARY_FRACTION = {"gpt_neox": 0.25}
_DEFAULT_ROTARY_DIM = {"gptj": 64, "codegen": 64}


#: the two shapes of a config's RoPE settings: transformers 5.x's ``rope_parameters`` (with
#: ``rope_theta`` inside) and 4.x's ``rope_scaling`` (``rope_theta`` at the top level)
HF_FORMS = ("rope_parameters", "rope_scaling")


def check_layout(layout: Any) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    return layout


@dataclass(frozen=True)
class RopeConfig:
    """The rotary schedule of one attention head.

    Args:
        head_dim: features per head (D).
        theta: the RoPE base; ``inv_freq[i] = theta ** (-2i / rotary_dim)`` before scaling.
        rotary_dim: how many leading features are rotated (R, even, <= head_dim);
            defaults to ``head_dim``. The rest pass through unchanged (partial rotary).
        layout: ``"interleaved"`` or ``"half"`` pairing (see :data:`LAYOUTS`).
        scaling: a scheme from :mod:`ropelab.scaling`, or None for plain RoPE.
    """

    head_dim: int
    theta: float = 10000.0
    rotary_dim: int | None = None
    layout: str = "interleaved"
    scaling: Scheme | None = None

    def __post_init__(self):
        head_dim = self.head_dim
        if isinstance(head_dim, bool) or not isinstance(head_dim, (int, np.integer)) or head_dim < 1:
            raise ValueError(f"head_dim must be a positive integer, got {head_dim!r}")
        rotary_dim = head_dim if self.rotary_dim is None else self.rotary_dim
        if isinstance(rotary_dim, bool) or not isinstance(rotary_dim, (int, np.integer)):
            raise TypeError(f"rotary_dim must be an integer, got {rotary_dim!r}")
        if rotary_dim < 2 or rotary_dim % 2:
            raise ValueError(f"rotary_dim must be even and >= 2, got {rotary_dim}")
        if rotary_dim > head_dim:
            raise ValueError(f"rotary_dim must be <= head_dim={head_dim}, got {rotary_dim}")
        theta = self.theta
        if isinstance(theta, bool) or not isinstance(theta, (int, float, np.floating, np.integer)):
            raise TypeError(f"theta must be a number, got {theta!r}")
        if not math.isfinite(theta) or theta <= 1.0:
            # theta <= 1 would make frequencies grow with the pair index (or all equal 1)
            raise ValueError(f"theta must be a finite number > 1, got {theta!r}")
        check_layout(self.layout)
        if self.scaling is not None:
            if not isinstance(self.scaling, Scheme):
                raise TypeError(
                    f"scaling must be a ropelab.scaling scheme or None, got {self.scaling!r}"
                )
            self.scaling.check_dims(int(rotary_dim))
        object.__setattr__(self, "head_dim", int(head_dim))
        object.__setattr__(self, "rotary_dim", int(rotary_dim))
        object.__setattr__(self, "theta", float(theta))

    @property
    def num_pairs(self) -> int:
        return self.rotary_dim // 2

    def inv_freq(self, seq_len: int | None = None) -> np.ndarray:
        """Inverse frequencies (radians per token), float64, shape ``(rotary_dim // 2,)``.

        ``seq_len`` is the current length, read by the schemes that depend on it
        (dynamic NTK; LongRoPE picks its long factors above the original length).
        """
        if seq_len is not None and (isinstance(seq_len, bool) or int(seq_len) != seq_len or seq_len < 1):
            raise ValueError(f"seq_len must be a positive integer or None, got {seq_len!r}")
        if self.scaling is None:
            return default_inv_freq(self.theta, self.rotary_dim)
        return self.scaling.inv_freq(self.theta, self.rotary_dim, None if seq_len is None else int(seq_len))

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

        Understands the older ``rope_theta`` / ``rope_scaling`` keys and the newer
        ``rope_parameters``; ``partial_rotary_factor``, GPT-NeoX's ``rotary_pct`` and
        GPT-J's ``rotary_dim``; ``head_dim`` or ``hidden_size // num_attention_heads``;
        and the layout implied by ``model_type`` (pass ``layout`` to override).
        A Llama 4 style config with a ``text_config`` is read from its text part.
        A ``ropelab_scaling`` key (written by :meth:`to_hf` for a scheme transformers
        has no type for) gives the scheme, after checking that transformers' reading of
        the same config has the same frequencies.

        Raises:
            FileNotFoundError: a path that does not exist, or a folder without config.json.
            ValueError: a file that is not a JSON object, or a config without RoPE.
        """
        if isinstance(config, (str, os.PathLike)):
            config = _read_config_file(config)
        cfg = _as_dict(config)
        if "text_config" in cfg and "hidden_size" not in cfg:
            cfg = _as_dict(cfg["text_config"])
        params = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
        params = _as_dict(params) if params else {}
        if params and "rope_type" not in params and "type" not in params and _nested(params):
            raise ValueError(
                "the config holds per-layer-type rope parameters "
                f"{sorted(params)}; pass one layer type's config instead"
            )
        hidden = cfg.get("hidden_size", cfg.get("n_embd"))
        heads = cfg.get("num_attention_heads", cfg.get("n_head"))
        head_dim = cfg.get("head_dim")
        if head_dim is None:
            if hidden is None or heads is None:
                raise ValueError(
                    "the config gives neither head_dim nor hidden_size and num_attention_heads"
                )
            head_dim = hidden // heads
        # DeepSeek-V2/V3 rotate only their decoupled rope part of each head
        if cfg.get("qk_rope_head_dim"):
            head_dim = int(cfg["qk_rope_head_dim"])
        theta = params.get("rope_theta", cfg.get("rope_theta", cfg.get("rotary_emb_base", 10000.0)))
        model_type = cfg.get("model_type", "")
        rotary_dim = cfg.get("rotary_dim", _DEFAULT_ROTARY_DIM.get(model_type))
        fraction = params.get(
            "partial_rotary_factor",
            cfg.get("partial_rotary_factor", cfg.get("rotary_pct", _DEFAULT_ROTARY_FRACTION.get(model_type))),
        )
        if rotary_dim is None and fraction is not None:
            rotary_dim = int(head_dim * fraction)  # int() truncates, as transformers does
        if layout is None:
            if "rope_interleave" in cfg:  # DeepSeek-V3's flag in transformers
                layout = "interleaved" if cfg["rope_interleave"] else "half"
            else:
                layout = "interleaved" if model_type in _INTERLEAVED_MODEL_TYPES else "half"
        scheme = scheme_from_hf(params, cfg)
        read = cls(head_dim, theta=float(theta), rotary_dim=rotary_dim, layout=layout, scaling=scheme)
        extra = cfg.get(HF_EXTRA_KEY)
        if not extra:
            return read
        extra = _as_dict(extra)
        if "rope_theta" not in extra:
            raise ValueError(f"the config's {HF_EXTRA_KEY} {extra!r} has no rope_theta")
        ours = cls(head_dim, theta=float(extra["rope_theta"]), rotary_dim=rotary_dim, layout=layout,
                   scaling=scheme_from_hf(extra, cfg))
        if not (
            np.allclose(ours.inv_freq(), read.inv_freq(), rtol=1e-9, atol=0)
            and math.isclose(ours.attention_factor, read.attention_factor, rel_tol=1e-9)
        ):
            raise ValueError(
                f"the config's {HF_EXTRA_KEY} {extra!r} does not match its rope settings "
                f"(transformers reads {read!r}); remove one of them"
            )
        return ours


def _read_config_file(path) -> dict:
    """A config.json path, or a folder holding one, read as a dict (errors name the file)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no config file at {path!r} (expected a config.json or a folder holding one)")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a JSON file: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a JSON {type(data).__name__}, expected an object of config keys")
    return data


def _nested(params: Mapping) -> bool:
    return bool(params) and all(isinstance(v, Mapping) or v is None for v in params.values())


def _as_dict(config: Any) -> dict:
    if isinstance(config, Mapping):
        return dict(config)
    to_dict = getattr(config, "to_dict", None)
    if to_dict is None:
        raise TypeError(
            f"expected a transformers config or a config.json dict, got {type(config).__name__}"
        )
    out = to_dict()
    # attributes that to_dict() may drop but transformers reads with getattr
    for key in ("head_dim", "rope_parameters", "max_position_embeddings"):
        if key not in out and getattr(config, key, None) is not None:
            out[key] = getattr(config, key)
    return out
