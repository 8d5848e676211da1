"""Checkpoint folders: a ropelab Transformer out to transformers' format, and back in.

``save_pretrained(model, folder)`` writes ``config.json`` and ``model.safetensors`` that
``transformers.AutoModelForCausalLM.from_pretrained(folder)`` opens with the same logits:
a stack of "rope" layers as Llama (``LlamaForCausalLM``), a stack with "nope" layers
(iRoPE) as Llama 4 text (``Llama4ForCausalLM``, dense feed-forward layers). Layer kinds
and options those families do not have are refused by name.

``load_pretrained(folder)`` reads a local checkpoint folder of any family
:func:`ropelab.hf.transformer_from_hf` converts (Llama, Mistral, Qwen2, Phi-3, Llama 4
text), checking what it reads first: config values, weight names, shapes and dtypes,
finite values; problems raise :class:`CheckpointError` naming the file.

Weights are safetensors only (never pickle). Files are written to a temporary name in
the folder and moved into place, config.json last.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace

from .._optional import require
from ..checks import MAX_POSITION, check_float, check_int
from ..config import RopeConfig
from ..files import write_atomic, write_json
from ..rotary import permute_for_layout
from .compat import dtype_key, rope_form

__all__ = ["FAMILIES", "READABLE_MODEL_TYPES", "CheckpointError", "load_pretrained", "read_config", "save_pretrained"]

#: model_type -> (architecture, RoPE layout) of the families save_pretrained writes
FAMILIES = {
    "llama": ("LlamaForCausalLM", "half"),
    "llama4_text": ("Llama4ForCausalLM", "interleaved"),
}

#: model_type values load_pretrained reads (their AutoModelForCausalLM class is one of
#: ropelab.hf.MODELS)
READABLE_MODEL_TYPES = ("llama", "mistral", "qwen2", "phi3", "llama4_text")

_FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")


class CheckpointError(ValueError):
    """A checkpoint file whose content is not what its format promises (the message
    names the file)."""


# ---------------------------------------------------------------------------- saving


def _family(model) -> str:
    """The family a model is written as; ValueError naming what does not fit."""
    c = model.config
    for kind in dict.fromkeys(c.layers):
        if kind not in ("rope", "nope"):
            raise ValueError(
                f"layer kind {kind!r} (layers {[i for i, k in enumerate(c.layers) if k == kind]}) has no "
                "transformers family; save_pretrained writes stacks of 'rope' layers (Llama) and of "
                "'rope' and 'nope' layers (Llama 4 text)"
            )
    if c.absolute is not None:
        raise ValueError(f"absolute={c.absolute!r} position embeddings have no place in a Llama-family checkpoint")
    if not c.causal:
        raise ValueError("causal=False: the Llama families are decoders")
    if c.mlp != "swiglu":
        raise ValueError(f"mlp={c.mlp!r}: the Llama families use a SwiGLU MLP")
    return "llama" if all(kind == "rope" for kind in c.layers) else "llama4_text"


def _check_attention(model, family: str) -> dict:
    """Per-layer checks of what the family can say; the family's attention options."""
    from ..torch import Attention, RotaryEmbedding

    c = model.config
    rope_opts, nope_opts, biases = set(), set(), set()
    for i, block in enumerate(model.blocks):
        attn = block.attn
        if type(attn) is not Attention:
            raise ValueError(f"layer {i}: attention {type(attn).__name__} has no transformers family")
        if attn.window is not None:
            raise ValueError(f"layer {i}: a sliding window ({attn.window}) is not written (Llama and Llama 4 attend to all)")
        if attn.score_bias is not None:
            raise ValueError(f"layer {i}: a score bias ({type(attn.score_bias).__name__}) has no transformers family")
        bias = tuple(getattr(attn, name).bias is not None for name in ("q_proj", "k_proj", "v_proj", "o_proj"))
        if len(set(bias)) > 1:
            raise ValueError(f"layer {i}: biases on some projections only {bias}; Llama puts them on all four or none")
        biases.add(bias[0])
        if block.kind == "rope":
            if not isinstance(attn.rope, RotaryEmbedding) or attn.rope.config != c.rope:
                raise ValueError(f"layer {i}: its rotary schedule is not the model's config.rope")
            rope_opts.add((attn.chunk_size, attn.qk_norm, attn.temperature_tuning))
        else:
            nope_opts.add((attn.chunk_size, attn.qk_norm, attn.temperature_tuning))
        if attn.qk_norm and attn.qk_norm_eps != c.norm_eps:
            raise ValueError(
                f"layer {i}: qk_norm_eps={attn.qk_norm_eps} differs from norm_eps={c.norm_eps}; "
                "Llama 4 uses rms_norm_eps for both"
            )
    if len(biases) > 1:
        raise ValueError("attention biases differ between layers; the config has one attention_bias")
    if len(rope_opts) > 1 or len(nope_opts) > 1:
        raise ValueError("attention options differ between layers of one kind; the config holds one set per kind")
    chunk, qk_norm, tuning = next(iter(rope_opts), (None, False, None))
    nope_chunk, nope_qk_norm, nope_tuning = next(iter(nope_opts), (None, False, None))
    if tuning is not None or nope_chunk is not None or nope_qk_norm:
        raise ValueError("temperature tuning on 'rope' layers, or chunking or qk_norm on 'nope' layers, has no Llama 4 form")
    if family == "llama" and (chunk is not None or qk_norm):
        raise ValueError("chunked attention and qk_norm need 'nope' layers too to be written (as Llama 4 text)")
    if nope_tuning is not None and float(nope_tuning[1]) != int(nope_tuning[1]):
        raise ValueError(f"temperature_tuning floor_scale={nope_tuning[1]} must be a whole number for Llama 4")
    if c.rope.rotary_dim != c.head_dim:
        raise ValueError(
            f"rotary_dim={c.rope.rotary_dim} < head_dim={c.head_dim}: Llama and Llama 4 rotate whole heads"
        )
    return {"bias": biases.pop(), "chunk": chunk, "qk_norm": qk_norm, "tuning": nope_tuning}


def _rope_keys(rope: RopeConfig) -> dict:
    """config.json keys of ``rope`` (already in the family's layout, which model_type implies)."""
    keys = rope.to_hf(form=rope_form())
    keys.pop("rope_interleave", None)
    return keys


def _config(model, family: str, opts: dict, *, max_position_embeddings, bos, eos, pad) -> dict:
    c = model.config
    widths = {block.mlp.gate.out_features for block in model.blocks}
    if len(widths) > 1:
        raise ValueError(f"MLP widths {sorted(widths)} differ between layers; the config has one")
    architecture, layout = FAMILIES[family]
    dtype = str(model.embed.weight.dtype).removeprefix("torch.")
    config = {
        "architectures": [architecture],
        "model_type": family,
        "vocab_size": c.vocab_size,
        "hidden_size": c.d_model,
        "intermediate_size": widths.pop(),
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads,
        "head_dim": c.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": max_position_embeddings,
        "rms_norm_eps": c.norm_eps,
        "tie_word_embeddings": c.tie_embeddings,
        "attention_bias": opts["bias"],
        "attention_dropout": 0.0,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": pad,
        "use_cache": True,
        dtype_key(): dtype,
    }
    if family == "llama":
        config["mlp_bias"] = False
    else:
        tuning = opts["tuning"]
        config.update(
            intermediate_size_mlp=config["intermediate_size"],
            moe_layers=[],
            no_rope_layers=[int(kind == "rope") for kind in c.layers],
            attention_chunk_size=opts["chunk"],
            use_qk_norm=opts["qk_norm"],
            attn_temperature_tuning=tuning is not None,
            attn_scale=float(tuning[0]) if tuning else 0.1,
            floor_scale=int(tuning[1]) if tuning else 8192,
        )
    rope = replace(c.rope, layout=layout)
    config.update(_rope_keys(rope))
    if RopeConfig.from_hf(config) != rope:  # what ropelab (and transformers) will read
        raise AssertionError(f"the written config reads back as {RopeConfig.from_hf(config)!r}, not {rope!r}")
    return config


def _tensors(model, family: str) -> dict:
    """HF-named weights (contiguous CPU copies), q/k rows permuted into the family's layout."""
    c = model.config
    layout = FAMILIES[family][1]
    mlp_name = "mlp" if family == "llama" else "feed_forward"
    out = {"model.embed_tokens.weight": model.embed.weight, "model.norm.weight": model.norm.weight}
    if not c.tie_embeddings:
        out["lm_head.weight"] = model.lm_head.weight
    for i, block in enumerate(model.blocks):
        prefix = f"model.layers.{i}."
        out[prefix + "input_layernorm.weight"] = block.attn_norm.weight
        out[prefix + "post_attention_layernorm.weight"] = block.mlp_norm.weight
        for ours, theirs in (("gate", "gate_proj"), ("up", "up_proj"), ("down", "down_proj")):
            out[f"{prefix}{mlp_name}.{theirs}.weight"] = getattr(block.mlp, ours).weight
        attn = block.attn
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            lin = getattr(attn, name)
            for part in ("weight", "bias"):
                value = getattr(lin, part)
                if value is None:
                    continue
                if block.kind == "rope" and name in ("q_proj", "k_proj"):
                    heads = attn.num_heads if name == "q_proj" else attn.num_kv_heads
                    value = permute_for_layout(value, heads, src=c.rope.layout, dst=layout)
                out[f"{prefix}self_attn.{name}.{part}"] = value
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in out.items()}


def write_config(folder: str, config: dict) -> None:
    """Write ``config`` as ``folder/config.json`` (atomically; strict JSON, no NaN)."""
    write_json(os.path.join(folder, "config.json"), config, indent=2, sort_keys=True)


def save_pretrained(
    model,
    folder,
    *,
    max_position_embeddings: int | None = None,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    tokenizer=None,
) -> str:
    """Write a :class:`ropelab.torch.Transformer` as a transformers checkpoint folder.

    Args:
        model: a Transformer whose layers are all "rope" (written as Llama) or "rope"
            and "nope" (iRoPE; written as Llama 4 text with dense MLPs), SwiGLU MLPs,
            no absolute positions, no sliding window, rotary over whole heads. Its
            scheme (``config.rope.scaling``) goes into the config in transformers' form
            (:meth:`ropelab.RopeConfig.to_hf`). Either RoPE layout: q and k rows are
            permuted into the family's (half for Llama, interleaved for Llama 4).
        folder: created if missing; ``config.json`` and ``model.safetensors`` in it are
            replaced.
        max_position_embeddings: the context the checkpoint is made for (``ropelab
            extend`` reads it as the trained length); default the model's
            ``config.max_positions``. A dynamic NTK scheme sets it to its original length
            (transformers' dynamic type grows past it).
        bos_token_id, eos_token_id, pad_token_id: written as given (None: null).
        tokenizer: anything with ``save_pretrained(folder)`` (a transformers tokenizer,
            e.g. :func:`ropelab.hf.byte_tokenizer`), saved beside the weights.

    Returns:
        The folder. ``AutoModelForCausalLM.from_pretrained(folder)`` gives the same
        logits as ``model``; :func:`load_pretrained` reads it back.

    Raises:
        TypeError: ``model`` is not a ropelab Transformer.
        ValueError: the model has something the families cannot hold (named).
    """
    torch = require("torch", feature="ropelab.hf.save_pretrained")
    safetensors = require("safetensors.torch", feature="ropelab.hf.save_pretrained")
    from ..torch import Transformer

    if not isinstance(model, Transformer):
        raise TypeError(f"model must be a ropelab.torch.Transformer, got {type(model).__name__}")
    if max_position_embeddings is None:
        max_position_embeddings = model.config.max_positions
    check_int("max_position_embeddings", max_position_embeddings, minimum=1, maximum=MAX_POSITION)
    for name, value in (("bos_token_id", bos_token_id), ("eos_token_id", eos_token_id), ("pad_token_id", pad_token_id)):
        if value is not None:
            check_int(f"{name} (a token id below vocab_size)", value, minimum=0, maximum=model.config.vocab_size - 1)
    family = _family(model)
    opts = _check_attention(model, family)
    config = _config(model, family, opts, max_position_embeddings=max_position_embeddings,
                     bos=bos_token_id, eos=eos_token_id, pad=pad_token_id)
    with torch.no_grad():
        tensors = _tensors(model, family)
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    write_atomic(os.path.join(folder, "model.safetensors"), safetensors.save(tensors, metadata={"format": "pt"}))
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    write_config(folder, config)  # last: a folder with config.json is complete
    return folder


# ---------------------------------------------------------------------------- loading


def _in_file(path: str, check, *args, **kwargs):
    """``check(*args, **kwargs)`` (a :mod:`ropelab.checks` function) with its error as a
    CheckpointError naming the file."""
    try:
        return check(*args, **kwargs)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: {err}") from None


def _positive_int(config: dict, key: str, path: str, *, required: bool = True):
    value = config.get(key)
    if value is None and not required:
        return None
    return _in_file(path, check_int, key, value, minimum=1)


def read_config(folder) -> dict:
    """The checked config.json of a checkpoint folder that :func:`load_pretrained` reads.

    Raises:
        FileNotFoundError: no such folder, or no config.json in it.
        NotADirectoryError: ``folder`` is a file.
        ValueError: the model type is not one ropelab reads (:data:`READABLE_MODEL_TYPES`).
        CheckpointError: config.json is not a JSON object, or a size in it is not a
            positive integer (and the like), naming the file and the key.
    """
    folder = os.fspath(folder)
    if not os.path.exists(folder):
        raise FileNotFoundError(f"checkpoint folder {folder!r} does not exist")
    if not os.path.isdir(folder):
        raise NotADirectoryError(f"{folder!r} is a file; a checkpoint is a folder holding config.json and weights")
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{folder!r} holds no config.json: not a transformers checkpoint folder")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} holds a JSON {type(config).__name__}, expected an object")
    model_type = config.get("model_type")
    if model_type not in READABLE_MODEL_TYPES:
        raise ValueError(
            f"{path}: model_type {model_type!r} is not one ropelab reads; supported: {', '.join(READABLE_MODEL_TYPES)}"
        )
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"):
        _positive_int(config, key, path)
    for key in ("num_key_value_heads", "head_dim", "max_position_embeddings", "intermediate_size"):
        _positive_int(config, key, path, required=False)
    heads, kv = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    if heads % kv:
        raise CheckpointError(f"{path}: num_attention_heads={heads} is not divisible by num_key_value_heads={kv}")
    _in_file(path, check_float, "rms_norm_eps", config.get("rms_norm_eps", 1e-6), above=0.0)
    try:
        RopeConfig.from_hf(config)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: its RoPE settings do not read: {err}") from None
    return config


def _weight_files(folder: str) -> list[str]:
    index = os.path.join(folder, "model.safetensors.index.json")
    single = os.path.join(folder, "model.safetensors")
    if os.path.isfile(single):
        return [single]
    if os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as f:
                weight_map = json.load(f)["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
            raise CheckpointError(f"{index} is not a safetensors index (a JSON object with a weight_map): {err}") from None
        paths = [os.path.join(folder, name) for name in shards]
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise CheckpointError(f"{index} names shards that are missing: {missing}")
        return paths
    if any(name.endswith((".bin", ".pt", ".pth")) for name in os.listdir(folder)):
        raise ValueError(f"{folder!r} holds pickled weights only; ropelab reads safetensors (never pickle)")
    raise FileNotFoundError(f"{folder!r} holds no model.safetensors (or model.safetensors.index.json)")


def _check_weights(paths: list[str]) -> dict[str, tuple[tuple, str]]:
    """name -> (shape, file) over all files; CheckpointError for an unreadable file, a
    tensor that is not floating point, or one holding NaN or infinity."""
    torch = require("torch", feature="ropelab.hf.load_pretrained")
    safe_open = require("safetensors", feature="ropelab.hf.load_pretrained").safe_open
    found = {}
    for path in paths:
        try:
            with safe_open(path, framework="pt") as f:
                for name in f.keys():
                    tensor = f.get_tensor(name)
                    if not tensor.dtype.is_floating_point:
                        raise CheckpointError(f"{path}: tensor {name!r} has dtype {tensor.dtype}; weights are floating point")
                    if not bool(torch.isfinite(tensor).all()):
                        raise CheckpointError(f"{path}: tensor {name!r} holds NaN or infinite values")
                    if name in found:
                        raise CheckpointError(f"{path}: tensor {name!r} appears in more than one file")
                    found[name] = (tuple(tensor.shape), path)
        except CheckpointError:
            raise
        except Exception as err:  # safetensors raises its own error types for a damaged file
            raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from None
    return found


def _check_layer_count(folder: str, config: dict, found: dict, where: str) -> None:
    """The layers config.json names against those the weight files hold, before a model
    of that many layers is built to compare names (a count edited to a billion would
    take all memory first)."""
    layers = {name.split(".")[2] for name in found if name.startswith("model.layers.")}
    named = config.get("num_hidden_layers")
    if named != len(layers):
        raise CheckpointError(
            f"{os.path.join(folder, 'config.json')}: num_hidden_layers is {named!r}, but {where} holds the "
            f"weights of {len(layers)} layers"
        )


def _check_names(folder: str, found: dict, where: str) -> None:
    """Compare the files' tensors with the names and shapes the config's model has
    (built on the meta device: no memory, no initialisation)."""
    torch = require("torch", feature="ropelab.hf.load_pretrained")
    transformers = require("transformers", feature="ropelab.hf.load_pretrained")
    try:
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
        with torch.device("meta"):
            skeleton = transformers.AutoModelForCausalLM.from_config(config)
    except Exception as err:  # transformers raises many kinds (its strict config fields, attribute lookups)
        message = " ".join(str(err).split()) or type(err).__name__
        raise CheckpointError(f"{os.path.join(folder, 'config.json')}: transformers cannot build the model: "
                              f"{message}") from None
    expected = {name: tuple(t.shape) for name, t in skeleton.state_dict().items()}
    if getattr(config, "tie_word_embeddings", False):
        expected.pop("lm_head.weight", None)  # the embedding, saved once
    missing = sorted(set(expected) - set(found))
    if missing:
        raise CheckpointError(f"{where}: weights missing for the config's model: {missing[:8]}")
    unexpected = sorted(set(found) - set(expected) - {"lm_head.weight"})
    if unexpected:
        raise CheckpointError(f"{where}: tensors the config's model does not have: {unexpected[:8]}")
    for name, (shape, path) in found.items():
        if name in expected and shape != expected[name]:
            raise CheckpointError(f"{path}: tensor {name!r} has shape {list(shape)}, the config's model {list(expected[name])}")


def load_pretrained(folder, *, dtype=None, device="cpu"):
    """A local transformers checkpoint folder as a :class:`ropelab.torch.Transformer`.

    Args:
        folder: holds config.json (model_type one of :data:`READABLE_MODEL_TYPES`) and
            ``model.safetensors`` (or shards with ``model.safetensors.index.json``).
        dtype: the torch dtype to load in (default float32).
        device: where the model goes.

    Returns:
        The Transformer in eval mode, with the logits transformers' model has
        (:func:`ropelab.hf.transformer_from_hf` of ``AutoModelForCausalLM``'s model).

    Raises:
        FileNotFoundError / NotADirectoryError: no such folder, or no config or weights in it.
        ValueError: a model type ropelab does not read; pickled weights only.
        CheckpointError: a file that does not hold what it should (bad JSON, a bad
            size in the config, a config ropelab's Transformer cannot express such as
            ``hidden_act`` other than silu, a weight missing, unexpected, of the wrong
            shape, not floating point, or not finite), naming the file.
    """
    torch = require("torch", feature="ropelab.hf.load_pretrained")
    transformers = require("transformers", feature="ropelab.hf.load_pretrained")
    from .model import transformer_from_hf

    folder = os.fspath(folder)
    config = read_config(folder)
    paths = _weight_files(folder)
    where = paths[0] if len(paths) == 1 else os.path.join(folder, "model.safetensors.index.json")
    found = _check_weights(paths)
    _check_layer_count(folder, config, found, where)
    _check_names(folder, found, where)
    dtype = torch.float32 if dtype is None else dtype
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()  # its per-tensor bar, for files already read
    try:
        model, info = transformers.AutoModelForCausalLM.from_pretrained(
            folder, output_loading_info=True, local_files_only=True, **{dtype_key(): dtype}
        )
    except (RuntimeError, ValueError, OSError, KeyError, TypeError) as err:
        raise CheckpointError(f"{folder}: transformers cannot load the weights: {err}") from None
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()
    left = [k for key in ("missing_keys", "unexpected_keys", "mismatched_keys") for k in info.get(key, [])]
    if left:  # checked above; transformers would fill such weights with random numbers
        raise CheckpointError(f"{where}: weights transformers did not load: {sorted(map(str, left))[:8]}")
    try:
        ropelab_model = transformer_from_hf(model.eval())
    except (TypeError, ValueError) as err:  # what config.json asks for that ropelab does not have
        raise CheckpointError(f"{os.path.join(folder, 'config.json')}: {err}") from None
    return ropelab_model.to(device)
