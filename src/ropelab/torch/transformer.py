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
from ..rows import rope_rows

torch = require("torch", feature="ropelab.torch")
nn = torch.nn
F = torch.nn.functional

from .attention import Attention  # noqa: E402
from .cache import Cache, positions_from_mask  # noqa: E402
from .checks import check_integer_tensor, check_padding_mask  # noqa: E402
from .kinds import LAYER_KINDS  # noqa: E402
from .positional import check_table_positions  # noqa: E402
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
    check_choice("pattern name", name, sorted(PATTERNS))
    num_layers = check_int("num_layers", num_layers, minimum=1)
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
            raise ValueError). Sinusoidal and rotary positions keep no table: they are
            made for each call's positions, exact at any position.
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
        """x ``(..., d_model)`` -> ``(..., d_model)``, position by position."""
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
        """x ``(B, T, d_model)`` -> ``(B, T, d_model)``.

        ``positions``, ``cache`` (this layer's :class:`KVCache`) and ``attention_mask``
        ``(B, S)`` go to the layer's attention unchanged (see
        :meth:`ropelab.torch.Attention.forward`).
        """
        x = x + self.attn(self.attn_norm(x), positions, cache, attention_mask)
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    """Decoder (or encoder, ``causal=False``) language model from a TransformerConfig.

    ``forward(tokens, *, positions=None, attention_mask=None, cache=None)``: tokens
    ``(B, T)`` long -> logits ``(B, T, V)``. ``positions`` ``(T,)`` or ``(B, T)``
    default to ``positions_from_mask(attention_mask)`` for the new tokens, or continue
    each row of the cache (``cache.length + arange(T)`` when it holds no padding). ``cache`` comes from :meth:`new_cache` and is filled
    in place, so a prompt followed by one token at a time equals the full forward.

    ``generate(tokens, max_new_tokens, ...)`` decodes through that cache (greedy or
    sampled, left padding, an end token) and returns prompt and new tokens, as
    transformers' ``generate`` does; ``stream(...)`` yields each step's new tokens.
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
            # the sinusoids (Vaswani et al. 2017, sec. 3.5) are the cos/sin rows of the
            # frequencies 10000**(-2i/d_model): made for each call's positions like the
            # rotary ones, exact at any position, with no table kept
            self._sinusoid = RopeConfig(d, theta=10000.0, layout="interleaved")
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

    def _absolute(self, positions, length, past):
        """(B or 1, T, d_model) absolute position embeddings."""
        pos = (
            positions
            if positions is not None
            else torch.arange(past, past + length, device=self.embed.weight.device)[None]
        )
        if self.config.absolute == "learned":
            check_table_positions(pos, self.config.max_positions)
            return self.pos_embed(pos)
        cos, sin = rope_rows(self._sinusoid, pos, "torch")  # pos.shape + (d_model / 2,)
        table = torch.stack((sin, cos), dim=-1).flatten(-2).to(self.embed.weight.dtype)  # sin even, cos odd
        return table if self.config.absolute_scale == 1.0 else table * self.config.absolute_scale

    def new_cache(self, batch: int, capacity: int) -> Cache:
        """An empty :class:`Cache` for this model: ``batch`` rows of ``capacity`` tokens."""
        c = self.config
        w = self.embed.weight
        return Cache(
            c.num_layers, batch, c.num_kv_heads, capacity, c.head_dim, w.dtype, device=w.device
        )

    def set_rope(self, rope: RopeConfig) -> None:
        """Give every layer built from ``config.rope`` a new schedule (e.g. YaRN
        extension at inference).

        Each layer gets the positional module its kind builds from the new config
        ("rope", "linear_attention", "prope", "xpos", "mrope", "axial" and registered
        kinds alike), so the model then equals ``Transformer(model.config)`` with this
        model's ``state_dict`` loaded. A rotary module shared by several layers stays
        shared. Layers without rotary positions ("nope", "alibi", "t5", "shaw") are
        left as they are.

        Raises:
            TypeError: ``rope`` is not a RopeConfig.
            ValueError: its head_dim is not the model's, or a layer's kind builds a
                positional module with learned weights from ``config.rope`` (a new one
                would lose them); nothing is changed then.
        """
        if not isinstance(rope, RopeConfig):
            raise TypeError(f"rope must be a ropelab.RopeConfig, got {type(rope).__name__}")
        if rope.head_dim != self.config.head_dim:
            raise ValueError(
                f"rope.head_dim={rope.head_dim} does not match the model's head_dim={self.config.head_dim}"
            )
        config = replace(self.config, rope=rope)
        updates = []  # all checked before any layer changes
        for index, block in enumerate(self.blocks):
            new = LAYER_KINDS[block.kind](config, index).get("rope")
            old = block.attn.rope
            if new is None:
                continue
            if isinstance(new, RopeConfig) and isinstance(old, RotaryEmbedding):
                updates.append((old, new))
            elif isinstance(new, nn.Module) and not list(new.parameters()) and not new.state_dict():
                updates.append((block.attn, new))
            else:
                raise ValueError(
                    f"set_rope cannot update layer {index} ({block.kind!r}): its kind builds "
                    f"{type(new).__name__} from config.rope, which this layer cannot take without "
                    "losing weights; build a Transformer from dataclasses.replace(model.config, "
                    "rope=...) and load this model's state_dict instead"
                )
        device = self.embed.weight.device
        for owner, new in updates:
            if isinstance(owner, RotaryEmbedding):
                owner.set_config(new)
            else:
                owner.rope = new.to(device)
        self.config = config

    def forward(self, tokens, *, positions=None, attention_mask=None, cache=None):
        """Logits of the next token at every position: tokens ``(B, T)`` -> ``(B, T, V)``.

        Args:
            tokens: ``(B, T)`` integer token ids; with a ``cache``, only the new ones.
            positions: ``(T,)`` or ``(B, T)`` integer position of each new token. By
                default they follow ``attention_mask`` (:func:`positions_from_mask`:
                left padding starts every row at 0) or continue each row of the cache
                (:meth:`KVCache.next_positions`; ``cache.length`` on for a cache that
                holds no padding and was given no positions).
            attention_mask: ``(B, S)`` 1 for tokens and 0 for padding over every slot
                the call sees (``S = cache.length + T`` with a cache, ``T`` without);
                padded keys are never attended to. The cache records it: a later call
                without a mask treats its new tokens as tokens and keeps the recorded
                padding hidden, so a left-padded prompt then one token per call
                without a mask equals the full forward with the mask extended by ones.
            cache: a :class:`Cache` from :meth:`new_cache`; the new keys and values are
                written into it in place, so a prompt and then one token per call give
                the logits of the full forward.

        Returns:
            Logits ``(B, T, V)`` in the model's dtype (rows of padded slots are
            computed but meaningless).
        """
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2:
            shape = (
                tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            )
            raise ValueError(f"tokens must be shaped (B, T), got {shape}")
        check_integer_tensor("tokens", tokens)
        if tokens.numel() and not torch.compiler.is_compiling():
            # the embedding would index out of its table: an IndexError on the CPU, a
            # device-side assert on a GPU
            low, high = (int(v) for v in torch.aminmax(tokens))
            if low < 0 or high >= self.config.vocab_size:
                bad = low if low < 0 else high
                raise ValueError(
                    f"tokens must be ids in [0, {self.config.vocab_size}) (vocab_size), got {bad}"
                )
        batch, length = tokens.shape
        if cache is not None:
            if not isinstance(cache, Cache):
                raise TypeError(f"cache must be a ropelab.torch.Cache, got {type(cache).__name__}")
            if len(cache) != len(self.blocks):
                raise ValueError(f"cache has {len(cache)} layers, the model {len(self.blocks)}")
        past = 0 if cache is None else cache.length
        if attention_mask is not None:
            # bool from here on: every layer's check then skips reading its values again
            attention_mask = check_padding_mask(
                attention_mask, (batch, past + length), covers=f"(cached {past} + new {length} tokens)"
            ).to(torch.bool)
            if positions is None:
                positions = positions_from_mask(attention_mask)[:, past:]
        elif cache is not None and positions is None:  # each row goes on from its record
            positions = cache.next_positions(length)
        x = self.embed(tokens)  # (B, T, d_model)
        if self.config.absolute is not None:
            if positions is not None:
                positions = self.blocks[0].attn._check_positions(positions, batch, length)
            x = x + self._absolute(positions, length, past)
        for i, block in enumerate(self.blocks):
            x = block(x, positions, None if cache is None else cache[i], attention_mask)
        return self.lm_head(self.norm(x))

    # -- decoding -------------------------------------------------------------------

    def generate(
        self,
        tokens,
        max_new_tokens: int,
        *,
        attention_mask=None,
        temperature: float = 0.0,
        top_k: int | None = None,
        generator=None,
        eos_token_id=None,
        pad_token_id: int | None = None,
    ):
        """Continue each prompt by up to ``max_new_tokens`` tokens through the KV cache.

        The prompt runs once into a cache of :meth:`new_cache`, then one token per step,
        as transformers' ``generate`` does (greedy decoding of a model converted by
        :func:`ropelab.hf.transformer_from_hf` gives transformers' tokens). Runs under
        ``torch.no_grad()`` and leaves the train/eval mode as it is (call ``.eval()``
        for a model with dropout).

        Args:
            tokens: ``(B, T)`` integer prompt ids, ``T >= 1``, each in ``[0, V)``.
            max_new_tokens: how many tokens to add (an integer >= 1).
            attention_mask: ``(B, T)`` 1 for tokens and 0 for padding, padding on the
                left only (a row is zeros, then ones, and holds at least one token).
                Positions are counted along the mask, so each row starts at position
                0 whatever its padding, as in transformers' ``generate``. None: no
                padding.
            temperature: 0 (default) picks the most likely token (greedy); above 0,
                tokens are sampled from ``softmax(logits / temperature)``.
            top_k: sample from the ``top_k`` most likely tokens only (1 <= top_k <=
                V); needs ``temperature > 0``.
            generator: a ``torch.Generator`` (on the model's device) that sampling
                draws from, for reproducible samples; default torch's global one.
                Needs ``temperature > 0``.
            eos_token_id: an end token id, or a list of them: a row that produces one
                is finished, and generation stops early once every row is finished.
            pad_token_id: what finished rows get after their end token (default the
                first ``eos_token_id``); only with ``eos_token_id``.

        Returns:
            A ``(B, T + N)`` long tensor on the tokens' device: the prompt (padding
            included, unchanged) followed by ``N`` new tokens per row, where
            ``N = max_new_tokens`` unless every row ended earlier with an end token
            (then ``N`` is the step of the last one to end; the end token is kept).

        Length-dependent schemes: with dynamic NTK, whose frequencies change with every
        length, cached keys keep the rotation they were cached with and each new token
        is rotated at the current length (as in transformers). A scheme whose
        frequencies switch once, past its original length, and stay (LongRoPE's long
        factors) would leave every cached key rotated by the short ones: when the
        sequence first passes that length, the whole sequence runs again into a fresh
        cache, as transformers' Phi-3 ``generate`` does (there, when the slot count
        passes it; here, when the longest row's position does: the same step whenever
        one row has no padding).

        Raises:
            TypeError: an argument of the wrong type (tokens, mask or generator not
                what is described above, a non-integer count or id).
            ValueError: a value out of range (shapes, ids outside the vocabulary, a
                mask with right padding or an empty row, ``temperature < 0``,
                ``top_k`` or ``generator`` with greedy decoding), or a model built
                with ``causal=False``.
        """
        steps = self.stream(
            tokens,
            max_new_tokens,
            attention_mask=attention_mask,
            temperature=temperature,
            top_k=top_k,
            generator=generator,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
        )
        return torch.cat([tokens.long(), *steps], dim=1)

    def stream(
        self,
        tokens,
        max_new_tokens: int,
        *,
        attention_mask=None,
        temperature: float = 0.0,
        top_k: int | None = None,
        generator=None,
        eos_token_id=None,
        pad_token_id: int | None = None,
    ):
        """:meth:`generate`, one step at a time: an iterator of ``(B, 1)`` long tensors.

        Same arguments, checked when ``stream`` is called (before the first step). Each
        item is the step's new token of every row (``pad_token_id`` for rows already
        finished), yielded as soon as it is chosen, so text can be shown while the
        rest is computed; ``torch.cat([tokens, *model.stream(tokens, n)], dim=1)``
        equals ``model.generate(tokens, n)``. Stopping the iteration early stops the
        computation.
        """
        plan = self._decode_plan(
            tokens,
            max_new_tokens,
            attention_mask,
            temperature,
            top_k,
            generator,
            eos_token_id,
            pad_token_id,
        )
        return self._decode(plan)

    def _decode_plan(
        self, tokens, max_new_tokens, mask, temperature, top_k, generator, eos, pad
    ) -> dict:
        """generate's arguments checked; ValueError/TypeError naming the bad one."""
        vocab = self.config.vocab_size
        if not self.config.causal:
            raise ValueError(
                "generate needs a causal (decoder) model; this Transformer was built with causal=False"
            )
        check_integer_tensor("tokens", tokens, expected="a torch tensor shaped (B, T)")
        if tokens.dim() != 2 or tokens.shape[0] < 1 or tokens.shape[1] < 1:
            raise ValueError(
                f"tokens must be shaped (B, T) with B >= 1 and T >= 1, got {tuple(tokens.shape)}"
            )
        low, high = int(tokens.min()), int(tokens.max())
        if low < 0 or high >= vocab:
            bad = low if low < 0 else high
            raise ValueError(f"tokens must be ids in [0, {vocab}) (vocab_size), got {bad}")
        max_new_tokens = check_int("max_new_tokens", max_new_tokens, minimum=1)
        if mask is not None:
            mask = _check_left_padding(mask, tuple(tokens.shape))
        temperature = check_float("temperature (0: greedy)", temperature, minimum=0.0)
        if top_k is not None:
            top_k = check_int("top_k (at most vocab_size)", top_k, minimum=1, maximum=vocab)
            if temperature == 0:
                raise ValueError(
                    f"top_k={top_k} has no effect with temperature=0 (greedy decoding); "
                    "give temperature > 0 to sample, or leave top_k=None"
                )
        if generator is not None:
            if not isinstance(generator, torch.Generator):
                raise TypeError(
                    f"generator must be a torch.Generator or None, got {type(generator).__name__}"
                )
            if temperature == 0:
                raise ValueError(
                    "generator has no effect with temperature=0 (greedy decoding draws nothing); "
                    "give temperature > 0 to sample, or leave generator=None"
                )
        eos_ids = None
        if eos is not None:
            many = eos if isinstance(eos, (list, tuple)) else [eos]
            if not many:
                raise ValueError("eos_token_id must be an id or a non-empty list of ids, got []")
            for value in many:
                _check_token_id("eos_token_id", value, vocab)
            eos_ids = torch.tensor(list(many), dtype=torch.long, device=tokens.device)
            pad = many[0] if pad is None else _check_token_id("pad_token_id", pad, vocab)
        elif pad is not None:
            raise ValueError(
                f"pad_token_id={pad!r} fills rows finished by an end token, but eos_token_id "
                "is None; give eos_token_id too"
            )
        return dict(
            tokens=tokens.long(),
            steps=max_new_tokens,
            mask=mask,
            temperature=float(temperature),
            top_k=top_k,
            generator=generator,
            eos=eos_ids,
            pad=pad,
        )

    def _switch_lengths(self) -> list[int]:
        """Lengths past which the rotary frequencies switch once and for all (LongRoPE).

        Read from what the schemes give, not their names: the frequencies of a
        length-dependent scheme change just past its original length and are the same
        at any longer length. Dynamic NTK's keep changing, so it has none.
        """
        lengths = set()
        for module in self.modules():
            if isinstance(module, RotaryEmbedding) and module.config.dynamic:
                config = module.config
                n = config.scaling.original_max_position
                at, past, far = (config.inv_freq(seq_len=s) for s in (n, n + 1, 4 * n))
                if not np.array_equal(at, past) and np.array_equal(past, far):
                    lengths.add(n)
        return sorted(lengths)

    @torch.no_grad()
    def _decode(self, plan: dict):
        """The decoding loop behind generate and stream: yields (B, 1) per step."""
        tokens, steps, mask = plan["tokens"], plan["steps"], plan["mask"]
        eos, pad = plan["eos"], plan["pad"]
        batch, length = tokens.shape
        capacity = length + steps - 1  # the last new token is returned, never fed back
        switches = self._switch_lengths()
        # the longest row's reach (its largest position + 1): what length-dependent
        # schemes read, counted along the mask like the positions
        reach = length if mask is None else int(mask.sum(-1).max())
        cache = self.new_cache(batch, capacity)
        logits = self(tokens, attention_mask=mask, cache=cache)[:, -1]  # (B, V)
        sequence = [tokens]
        finished = torch.zeros(batch, dtype=torch.bool, device=tokens.device)
        for step in range(steps):
            token = _next_token(logits, plan["temperature"], plan["top_k"], plan["generator"])
            if eos is not None:
                token = token.masked_fill(finished, pad)
                finished = finished | torch.isin(token, eos)
            token = token[:, None]  # (B, 1)
            yield token
            if step == steps - 1 or (eos is not None and bool(finished.all())):
                return
            sequence.append(token)
            if mask is not None:
                mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=1)
            reach += 1
            if reach - 1 in switches:  # the longest row has just passed a switch
                # every cached key was rotated with the frequencies below the switch:
                # run the whole sequence again, as transformers' Phi-3 generate does
                cache = self.new_cache(batch, capacity)
                logits = self(torch.cat(sequence, dim=1), attention_mask=mask, cache=cache)[:, -1]
            else:
                logits = self(token, attention_mask=mask, cache=cache)[:, -1]


def _check_token_id(name: str, value, vocab: int) -> int:
    return check_int(f"{name} (a token id below vocab_size)", value, minimum=0, maximum=vocab - 1)


def _check_left_padding(mask, shape: tuple[int, int]):
    """A (B, T) 0/1 mask with padding on the left only, as a long tensor (its values are
    read wherever it is: generate reads them once, before decoding)."""
    check_padding_mask(mask, shape, covers="(like tokens)", values=True)
    mask = mask.long()
    if bool((mask.sum(-1) == 0).any()):
        row = int((mask.sum(-1) == 0).nonzero()[0])
        raise ValueError(f"attention_mask row {row} is all padding; every prompt needs a token")
    if bool((mask[:, 1:] < mask[:, :-1]).any()):
        row = int((mask[:, 1:] < mask[:, :-1]).any(-1).nonzero()[0])
        raise ValueError(
            f"attention_mask row {row} has padding after a token; generate needs left padding "
            "(the new tokens follow the last slot of every row)"
        )
    return mask


def _next_token(logits, temperature: float, top_k: int | None, generator):
    """(B, V) logits -> (B,) long: argmax at temperature 0, else a sample of
    softmax(logits / temperature) over the top_k largest (transformers' order)."""
    if temperature == 0:
        return logits.argmax(-1)
    scores = logits.float() / temperature
    if top_k is not None:
        kth = torch.topk(scores, top_k, dim=-1).values[..., -1:]  # (B, 1)
        scores = scores.masked_fill(scores < kth, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
