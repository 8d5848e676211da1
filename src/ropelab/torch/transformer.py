"""A decoder transformer built from a per-layer pattern, so RoPE, NoPE and iRoPE are data.

Pre-norm blocks (RMSNorm, attention, RMSNorm, MLP; Xiong et al. 2020,
arXiv:2002.04745), SwiGLU (Shazeer 2020, arXiv:2002.05202) or GELU MLP, final norm, and
a (tied) language-model head. Each layer's attention comes from its kind in
:data:`ropelab.torch.kinds.LAYER_KINDS`: ``("rope", "rope", "rope", "nope")`` is
Llama 4's iRoPE pattern.

Shapes: B batch, T time, V vocabulary; tokens (B, T) long -> logits (B, T, V).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .._optional import require
from ..checks import check_bool, check_choice, check_float, check_int
from ..config import RopeConfig

torch = require("torch", feature="ropelab.torch")
nn = torch.nn
F = torch.nn.functional

from .attention import Attention  # noqa: E402
from .cache import Cache, positions_from_mask  # noqa: E402
from .kinds import LAYER_KINDS  # noqa: E402
from .rotary import RotaryEmbedding  # noqa: E402

__all__ = ["PATTERNS", "Transformer", "TransformerConfig", "pattern"]

#: repeating units of common layer patterns (see :func:`pattern`)
PATTERNS: dict[str, tuple[str, ...]] = {
    "rope": ("rope",),
    "nope": ("nope",),
    "irope": ("rope", "rope", "rope", "nope"),  # Llama 4: every fourth layer NoPE
    "alternating": ("rope", "nope"),
}

ABSOLUTE = (None, "sinusoidal", "learned")
MLPS = ("swiglu", "gelu")


def pattern(name: str, num_layers: int) -> tuple[str, ...]:
    """The layer kinds of ``num_layers`` layers: the unit ``PATTERNS[name]`` repeated, cut.

    A pattern that mixes NoPE layers in keeps at least one: when the cut is too short to
    reach the unit's first NoPE layer, the last layer is NoPE (``pattern("irope", 2)`` is
    ``("rope", "nope")``; a model without a NoPE layer would not be iRoPE at all).
    """
    if name not in PATTERNS:
        raise ValueError(f"unknown pattern {name!r}; known patterns: {sorted(PATTERNS)}")
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}")
    unit = PATTERNS[name]
    kinds = [unit[i % len(unit)] for i in range(num_layers)]
    if "nope" in unit and len(set(unit)) > 1 and "nope" not in kinds:
        kinds[-1] = "nope"
    return tuple(kinds)


@dataclass(frozen=True)
class TransformerConfig:
    """Everything a :class:`Transformer` is built from.

    Args:
        vocab_size: V.
        d_model, num_heads, num_kv_heads: width, query heads, key/value heads (default
            ``num_heads``).
        head_dim: width of each head; default ``d_model // num_heads`` (some
            checkpoints, e.g. Qwen3 and Mistral NeMo, set it apart from d_model).
        layers: one layer kind per layer (see :data:`PATTERNS` and :func:`pattern`).
        rope: the schedule of "rope" layers; default
            ``RopeConfig(head_dim, theta=10000.0, layout="half")``.
        absolute: ``"sinusoidal"`` or ``"learned"`` positions added to the token
            embeddings, or None.
        max_positions: rows of the learned position table (positions at or past it
            raise ValueError); initial size of the cached tables otherwise.
        mlp: ``"swiglu"`` (hidden ``2/3 * mlp_ratio * d_model``, the parameters of a
            GELU MLP of ratio ``mlp_ratio``) or ``"gelu"`` (hidden ``mlp_ratio * d_model``).
        mlp_hidden: the MLP's hidden width, set outright (a checkpoint's
            ``intermediate_size``); overrides ``mlp_ratio``.
        chunk_size, qk_norm: Llama 4 options of the "rope" layers.
        temperature_tuning: ``(attn_scale, floor_scale)`` of the "nope" layers.
        causal: decoder (True) or encoder (False) attention.
        tie_embeddings: the head shares the token embedding matrix.
        absolute_scale: multiplies the sinusoidal table (unit amplitude) before it is
            added. Beside token embeddings of std 0.02 in a pre-norm stack, full-amplitude
            sinusoids are a residual stream 35x larger than anything the blocks add at
            first, which slows training; a scale near the token std keeps the two level.
        kind_options: per-kind extra options, e.g. ``{"prope": {"p": 0.25}}``; for
            "rope" and "nope" these are extra Attention arguments, e.g.
            ``{"rope": {"window": 256}}``.
    """

    vocab_size: int
    d_model: int = 128
    num_heads: int = 4
    layers: tuple[str, ...] = ("rope", "rope")
    num_kv_heads: int | None = None
    rope: RopeConfig | None = None
    absolute: str | None = None
    max_positions: int = 2048
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-5
    chunk_size: int | None = None
    temperature_tuning: tuple[float, float] | None = None
    qk_norm: bool = False
    causal: bool = True
    tie_embeddings: bool = True
    absolute_scale: float = 1.0
    kind_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    mlp: str = "swiglu"
    head_dim: int | None = None
    mlp_hidden: int | None = None

    def __post_init__(self):
        set_ = object.__setattr__
        check_int("vocab_size", self.vocab_size, minimum=1)
        check_int("d_model", self.d_model, minimum=1)
        check_int("num_heads", self.num_heads, minimum=1)
        if self.head_dim is not None:
            check_int("head_dim", self.head_dim, minimum=1)
        elif self.d_model % self.num_heads:
            raise ValueError(
                f"d_model={self.d_model} is not divisible by num_heads={self.num_heads} "
                f"(set head_dim to give heads a width of their own)"
            )
        if self.mlp_hidden is not None:
            check_int("mlp_hidden", self.mlp_hidden, minimum=1)
        kv = self.num_heads if self.num_kv_heads is None else self.num_kv_heads
        check_int("num_kv_heads", kv, minimum=1)
        if self.num_heads % kv:
            raise ValueError(f"num_heads={self.num_heads} is not divisible by num_kv_heads={kv}")
        set_(self, "num_kv_heads", kv)
        layers = (self.layers,) if isinstance(self.layers, str) else tuple(self.layers)
        if not layers:
            raise ValueError("layers must name at least one layer kind")
        unknown = [kind for kind in layers if kind not in LAYER_KINDS]
        if unknown:
            raise ValueError(f"unknown layer kind(s) {unknown}; known kinds: {sorted(LAYER_KINDS)}")
        set_(self, "layers", layers)
        head_dim = self.head_dim or self.d_model // self.num_heads
        set_(self, "head_dim", head_dim)
        if self.rope is None:
            set_(self, "rope", RopeConfig(head_dim, theta=10000.0, layout="half"))
        elif not isinstance(self.rope, RopeConfig):
            raise TypeError(
                f"rope must be a ropelab.RopeConfig or None, got {type(self.rope).__name__}"
            )
        elif self.rope.head_dim != head_dim:
            raise ValueError(
                f"rope.head_dim={self.rope.head_dim} does not match the model's head_dim={head_dim}"
            )
        if self.absolute is not None:
            check_choice("absolute", self.absolute, ABSOLUTE[1:])
        if self.absolute == "sinusoidal" and self.d_model % 2:
            raise ValueError(f"sinusoidal positions need an even d_model, got {self.d_model}")
        check_int("max_positions", self.max_positions, minimum=1)
        for name in ("mlp_ratio", "norm_eps", "absolute_scale"):
            check_float(name, getattr(self, name), above=0.0)
        for name in ("qk_norm", "causal", "tie_embeddings"):
            check_bool(name, getattr(self, name))
        if self.absolute_scale != 1.0 and self.absolute != "sinusoidal":
            raise ValueError(
                f"absolute_scale={self.absolute_scale!r} scales the sinusoidal table, but "
                f"absolute={self.absolute!r}; use absolute='sinusoidal' or leave it at 1.0"
            )
        if self.chunk_size is not None:
            check_int("chunk_size", self.chunk_size, minimum=1)
        if self.temperature_tuning is not None:
            tt = tuple(self.temperature_tuning)
            if len(tt) != 2:
                raise ValueError(
                    f"temperature_tuning must be (attn_scale, floor_scale), got {self.temperature_tuning!r}"
                )
            set_(self, "temperature_tuning", tuple(
                check_float(f"temperature_tuning[{i}]", v) for i, v in enumerate(tt)
            ))
        check_choice("mlp", self.mlp, MLPS)
        if not isinstance(self.kind_options, dict):
            raise TypeError(f"kind_options must be a dict, got {type(self.kind_options).__name__}")
        for kind, options in self.kind_options.items():
            if kind not in LAYER_KINDS:
                raise ValueError(
                    f"kind_options names unknown layer kind {kind!r}; known kinds: {sorted(LAYER_KINDS)}"
                )
            if not isinstance(options, dict):
                raise TypeError(
                    f"kind_options[{kind!r}] must be a dict, got {type(options).__name__}"
                )

    @property
    def num_layers(self) -> int:
        return len(self.layers)


class MLP(nn.Module):
    """SwiGLU (``down(silu(gate(x)) * up(x))``) or GELU (``proj(gelu(fc(x)))``)."""

    def __init__(self, d_model: int, ratio: float, kind: str, hidden: int | None = None):
        super().__init__()
        self.kind = kind
        if kind == "swiglu":
            hidden = hidden or max(1, round(2 * ratio * d_model / 3))
            self.gate = nn.Linear(d_model, hidden, bias=False)
            self.up = nn.Linear(d_model, hidden, bias=False)
            self.down = nn.Linear(hidden, d_model, bias=False)
        else:
            hidden = hidden or max(1, round(ratio * d_model))
            self.fc = nn.Linear(d_model, hidden, bias=False)
            self.proj = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x):
        if self.kind == "swiglu":
            return self.down(F.silu(self.gate(x)) * self.up(x))
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    """Pre-norm block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, config: TransformerConfig, index: int):
        super().__init__()
        self.kind = config.layers[index]
        options = {
            "num_kv_heads": config.num_kv_heads,
            "head_dim": config.head_dim,
            "causal": config.causal,
            **LAYER_KINDS[self.kind](config, index),
        }
        # a kind may swap the attention class (Shaw relative, linear attention)
        attention_class = options.pop("attention_class", Attention)
        self.attn_norm = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self.attn = attention_class(config.d_model, config.num_heads, **options)
        self.mlp_norm = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self.mlp = MLP(config.d_model, config.mlp_ratio, config.mlp, config.mlp_hidden)

    def forward(self, x, positions=None, cache=None, attention_mask=None):
        x = x + self.attn(self.attn_norm(x), positions, cache, attention_mask)
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    """Decoder (or encoder, ``causal=False``) language model from a TransformerConfig.

    ``forward(tokens, *, positions=None, attention_mask=None, cache=None)``: tokens
    ``(B, T)`` long -> logits ``(B, T, V)``. ``positions`` ``(T,)`` or ``(B, T)``
    default to ``positions_from_mask(attention_mask)`` for the new tokens, or to
    ``cache.length + arange(T)``. ``cache`` comes from :meth:`new_cache` and is filled
    in place, so a prompt followed by one token at a time equals the full forward.
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        if not isinstance(config, TransformerConfig):
            raise TypeError(f"config must be a TransformerConfig, got {type(config).__name__}")
        self.config = config
        d = config.d_model
        self.embed = nn.Embedding(config.vocab_size, d)
        if config.absolute == "learned":
            self.pos_embed = nn.Embedding(config.max_positions, d)
        elif config.absolute == "sinusoidal":
            self.register_buffer("sinusoid", torch.empty(0), persistent=False)
            self._grow_sinusoid(config.max_positions)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.num_layers))
        self.norm = nn.RMSNorm(d, eps=config.norm_eps)
        self.lm_head = nn.Linear(d, config.vocab_size, bias=False)
        self.apply(self._init)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight

    @staticmethod
    def _init(module):
        # GPT-2's initialisation: small normal weights, zero biases
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def _grow_sinusoid(self, n: int):
        from ..positional import sinusoidal

        table = sinusoidal(np.arange(n), self.config.d_model)
        self.sinusoid = torch.from_numpy(table).to(
            device=self.embed.weight.device, dtype=torch.float32
        )

    def _absolute(self, positions, length, past):
        """(B or 1, T, d_model) absolute position embeddings."""
        pos = (
            positions
            if positions is not None
            else torch.arange(past, past + length, device=self.embed.weight.device)[None]
        )
        compiling = torch.compiler.is_compiling()
        top = None if compiling else int(pos.max()) + 1
        if self.config.absolute == "learned":
            if top is not None and top > self.config.max_positions:
                raise ValueError(
                    f"position {top - 1} is past the learned position table of "
                    f"max_positions={self.config.max_positions}"
                )
            return self.pos_embed(pos)
        if top is not None and top > self.sinusoid.shape[0]:
            size = self.sinusoid.shape[0]
            while size < top:
                size *= 2
            self._grow_sinusoid(size)
        table = self.sinusoid[pos].to(self.embed.weight.dtype)
        return table if self.config.absolute_scale == 1.0 else table * self.config.absolute_scale

    def new_cache(self, batch: int, capacity: int) -> Cache:
        """An empty :class:`Cache` for this model: ``batch`` rows of ``capacity`` tokens."""
        c = self.config
        w = self.embed.weight
        return Cache(
            c.num_layers, batch, c.num_kv_heads, capacity, c.head_dim, w.dtype, device=w.device
        )

    def set_rope(self, rope: RopeConfig) -> None:
        """Give every "rope" layer a new schedule (e.g. YaRN extension at inference)."""
        if not isinstance(rope, RopeConfig):
            raise TypeError(f"rope must be a ropelab.RopeConfig, got {type(rope).__name__}")
        if rope.head_dim != self.config.head_dim:
            raise ValueError(
                f"rope.head_dim={rope.head_dim} does not match the model's head_dim={self.config.head_dim}"
            )
        for block in self.blocks:
            if block.kind == "rope" and isinstance(block.attn.rope, RotaryEmbedding):
                block.attn.rope.set_config(rope)
        self.config = replace(self.config, rope=rope)

    def forward(self, tokens, *, positions=None, attention_mask=None, cache=None):
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2:
            shape = (
                tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            )
            raise ValueError(f"tokens must be shaped (B, T), got {shape}")
        if tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
            raise TypeError(f"tokens must be an integer tensor, got dtype {tokens.dtype}")
        batch, length = tokens.shape
        if cache is not None:
            if not isinstance(cache, Cache):
                raise TypeError(f"cache must be a ropelab.torch.Cache, got {type(cache).__name__}")
            if len(cache) != len(self.blocks):
                raise ValueError(f"cache has {len(cache)} layers, the model {len(self.blocks)}")
        past = 0 if cache is None else cache.length
        if positions is None and attention_mask is not None:
            if not isinstance(attention_mask, torch.Tensor) or tuple(attention_mask.shape) != (
                batch,
                past + length,
            ):
                shape = (
                    tuple(attention_mask.shape)
                    if isinstance(attention_mask, torch.Tensor)
                    else type(attention_mask).__name__
                )
                raise ValueError(
                    f"attention_mask must be shaped (B, S) = ({batch}, {past + length}) (cached {past} + "
                    f"new {length} tokens), got {shape}"
                )
            positions = positions_from_mask(attention_mask)[:, past:]
        x = self.embed(tokens)  # (B, T, d_model)
        if self.config.absolute is not None:
            if positions is not None:
                positions = self.blocks[0].attn._check_positions(positions, batch, length)
            x = x + self._absolute(positions, length, past)
        for i, block in enumerate(self.blocks):
            x = block(x, positions, None if cache is None else cache[i], attention_mask)
        return self.lm_head(self.norm(x))
