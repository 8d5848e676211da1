"""The table of bad inputs: each row is a call, the exception it must raise and a fragment
of the message (which names the argument, the value and what was expected).

A wrong type raises TypeError, a wrong value ValueError. To add a case, add a row. Rows
that need a framework skip without it. A row marked ``xfail`` is a known gap: it is
strict, so it fails the day the gap is closed, and the mark comes off then.
The command line's table is ``tests/cli/test_bad_inputs_cli.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest

from ropelab import (
    RopeConfig,
    RopeTables,
    apply_rope,
    apply_rope_,
    exercises,
    hf_from_rows,
    permute_for_layout,
    preset,
    reference,
    rope_tables,
    rows_from_hf,
)
from ropelab.attention_spec import AttentionSpec
from ropelab.checks import check_bool, check_choice, check_float, check_int
from ropelab.config import read_config_json
from ropelab.positional import (
    alibi_slopes,
    mrope_axis_of_pair,
    sinusoidal,
    t5_relative_buckets,
    xpos_scales,
)
from ropelab.scaling import Linear, LongRoPE, PRoPE, YaRN


@dataclasses.dataclass(frozen=True)
class Bad:
    id: str
    call: Callable[[], object]
    error: type[BaseException] | tuple[type[BaseException], ...]
    fragment: str
    xfail: str | None = None  # why the gap is still open (the file it lives in)


class _Recorded(Exception):
    """Raised by a row's call when apply_rope_ recorded the right backward (see below)."""


def _torch():
    return pytest.importorskip("torch")


def _hf():
    pytest.importorskip("torch")
    return pytest.importorskip("transformers")


def _llama_q(kind="numpy"):
    """q for preset('llama-3.1-8b') at positions 0..3, and its (cos, sin)."""
    pos = np.arange(4)
    cos, sin = rope_tables(preset("llama-3.1-8b"), pos)
    q = np.random.default_rng(0).standard_normal((1, 2, 4, 128))
    if kind == "torch":
        torch = _torch()
        return torch.from_numpy(q).float(), torch.from_numpy(cos).float(), torch.from_numpy(sin).float()
    return q, cos, sin


def _hf_dict(**extra):
    return {"model_type": "llama", "hidden_size": 256, "num_attention_heads": 4, **extra}


def _json(tmp, text):
    path = tmp / "config.json"
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------ the table

BAD: list[Bad] = [
    # --- ropelab.checks itself
    Bad("check_int bool", lambda: check_int("n", True), TypeError, "n must be an integer, got True (bool)"),
    Bad("check_int float", lambda: check_int("n", 2.5), TypeError, "n must be an integer, got 2.5"),
    Bad("check_int range", lambda: check_int("n", 0, minimum=1), ValueError, "n must be an integer >= 1, got 0"),
    Bad("check_int whole float", lambda: check_int("n", 2.5, whole_floats=True), ValueError, "n must be a whole number, got 2.5"),
    Bad("check_float string", lambda: check_float("theta", "1e4"), TypeError, "theta must be a number, got '1e4' (str)"),
    Bad("check_float nan", lambda: check_float("x", float("nan")), ValueError, "x must be a finite number, got nan"),
    Bad("check_float huge int", lambda: check_float("x", 10**400), ValueError, "x must be a finite number"),
    Bad("check_bool int", lambda: check_bool("causal", 1), TypeError, "causal must be True or False, got 1 (int)"),
    Bad("check_choice", lambda: check_choice("mode", "c", ("a", "b")), ValueError, "mode must be one of 'a', 'b'; got 'c'"),
    Bad("check_choice type", lambda: check_choice("mode", 3, ("a", "b")), TypeError, "mode must be one of 'a', 'b', got 3 (int)"),
    # --- RopeConfig
    Bad("head_dim string", lambda: RopeConfig("64"), TypeError, "head_dim must be an integer, got '64' (str)"),
    Bad("rotary_dim string", lambda: RopeConfig(64, rotary_dim="64"), TypeError, "rotary_dim must be an integer, got '64' (str)"),
    Bad("head_dim bool", lambda: RopeConfig(True), TypeError, "head_dim must be an integer, got True"),
    Bad("head_dim zero", lambda: RopeConfig(0), ValueError, "head_dim must be an integer >= 1"),
    Bad("head_dim huge", lambda: RopeConfig(10**9), ValueError, "head_dim must be an integer >= 1 and <= 65536, got 1000000000"),
    Bad("head_dim odd", lambda: RopeConfig(65), ValueError, "rotary_dim (= head_dim when not given) must be even, got 65"),
    Bad("rotary_dim above head_dim", lambda: RopeConfig(64, rotary_dim=128), ValueError, "rotary_dim must be <= head_dim=64, got 128"),
    Bad("theta string", lambda: RopeConfig(64, theta="1e4"), TypeError, "theta must be a number, got '1e4' (str)"),
    Bad("theta one", lambda: RopeConfig(64, theta=1.0), ValueError, "theta must be a finite number > 1, got 1.0"),
    Bad("layout unknown", lambda: RopeConfig(64, layout="neox"), ValueError, "layout must be one of 'interleaved', 'half'; got 'neox'"),
    Bad("layout type", lambda: RopeConfig(64, layout=1), TypeError, "layout must be one of 'interleaved', 'half', got 1 (int)"),
    Bad("scaling type", lambda: RopeConfig(64, scaling="yarn"), TypeError, "scaling must be a ropelab.scaling scheme or None, got 'yarn'"),
    Bad("seq_len zero", lambda: RopeConfig(64).inv_freq(0), ValueError, "seq_len must be an integer >= 1, got 0"),
    Bad("seq_len float", lambda: RopeConfig(64).inv_freq(2.5), TypeError, "seq_len must be an integer, got 2.5"),
    # --- schemes (their own checks; replace() through them)
    Bad("Linear factor string", lambda: Linear("2"), TypeError, "Linear factor must be a number, got '2'"),
    Bad("YaRN replace bad factor", lambda: dataclasses.replace(YaRN(4.0, 2048), factor=0.5), ValueError, "YaRN factor must be a finite number >= 1, got 0.5"),
    Bad("LongRoPE string factors", lambda: LongRoPE(["1.0"], [2.0], 100), TypeError, "LongRoPE short_factor[0] must be a number, got '1.0'"),
    Bad("LongRoPE not a list", lambda: LongRoPE(5, [2.0], 100), TypeError, "LongRoPE short_factor must be a list of numbers, got 5"),
    # --- presets
    Bad("preset unknown", lambda: preset("llama-9000"), ValueError, "unknown preset 'llama-9000'"),
    Bad("preset not a string", lambda: preset(["llama-2-7b"]), TypeError, "a preset name must be a string, got ['llama-2-7b'] (list)"),
    # --- from_hf: configs without RoPE, families, values
    Bad("from_hf GPT2Config", lambda: RopeConfig.from_hf(_hf().GPT2Config()), ValueError, "gpt2 applies no rotary embedding"),
    Bad("from_hf BertConfig", lambda: RopeConfig.from_hf(_hf().BertConfig()), ValueError, "bert applies no rotary embedding"),
    Bad("from_hf bert dict", lambda: RopeConfig.from_hf({"model_type": "bert", "hidden_size": 768, "num_attention_heads": 12}), ValueError, "bert applies no rotary embedding"),
    Bad("from_hf nothing says RoPE", lambda: RopeConfig.from_hf({"hidden_size": 256, "num_attention_heads": 4}), ValueError, "nothing in it says it uses RoPE"),
    Bad("from_hf unchecked family", lambda: RopeConfig.from_hf({"model_type": "chatglm", "hidden_size": 256, "num_attention_heads": 4, "rope_theta": 1e4}), ValueError, "ropelab has not checked how chatglm applies RoPE"),
    Bad("from_hf nanochat", lambda: RopeConfig.from_hf({"model_type": "nanochat", "hidden_size": 256, "num_attention_heads": 4}), ValueError, "nanochat rotates by the negative angle"),
    Bad("from_hf not divisible", lambda: RopeConfig.from_hf(_hf_dict(hidden_size=250)), ValueError, "hidden_size=250 is not divisible by num_attention_heads=4"),
    Bad("from_hf zero heads", lambda: RopeConfig.from_hf(_hf_dict(num_attention_heads=0)), ValueError, "num_attention_heads must be an integer >= 1 and <= 65536, got 0"),
    Bad("from_hf theta string", lambda: RopeConfig.from_hf(_hf_dict(rope_theta="1e4")), TypeError, "rope_theta must be a number, got '1e4' (str)"),
    Bad("from_hf theta infinite", lambda: RopeConfig.from_hf(_hf_dict(rope_theta=float("inf"))), ValueError, "rope_theta must be a finite number"),
    Bad("from_hf factor 1e308", lambda: RopeConfig.from_hf(_hf_dict(rope_scaling={"rope_type": "linear", "factor": 1e308})), ValueError, "factor must be a finite number <= 4.61169e+18, got 1e+308"),
    Bad("from_hf factor string", lambda: RopeConfig.from_hf(_hf_dict(rope_scaling={"rope_type": "linear", "factor": "2"})), TypeError, "factor must be a number, got '2'"),
    Bad("from_hf max_position 1e40", lambda: RopeConfig.from_hf(_hf_dict(max_position_embeddings=1e40)), TypeError, "max_position_embeddings must be an integer, got 1e+40"),
    Bad("from_hf max_position 10**40", lambda: RopeConfig.from_hf(_hf_dict(max_position_embeddings=10**40)), ValueError, "max_position_embeddings must be an integer >= 1 and <= 4611686018427387904"),
    Bad("from_hf head_dim 1e30", lambda: RopeConfig.from_hf(_hf_dict(head_dim=1e30)), TypeError, "head_dim must be an integer, got 1e+30"),
    Bad("from_hf head_dim 1e9", lambda: RopeConfig.from_hf(_hf_dict(head_dim=10**9)), ValueError, "head_dim must be an integer >= 2 and <= 65536, got 1000000000"),
    Bad("from_hf qk_rope_head_dim 1e12", lambda: RopeConfig.from_hf(_hf_dict(model_type="deepseek_v3", qk_rope_head_dim=10**12)), ValueError, "qk_rope_head_dim must be an integer >= 2 and <= 65536"),
    Bad("from_hf partial factor", lambda: RopeConfig.from_hf(_hf_dict(partial_rotary_factor=1.5)), ValueError, "partial_rotary_factor must be a finite number > 0 and <= 1, got 1.5"),
    Bad("from_hf rope_parameters list", lambda: RopeConfig.from_hf(_hf_dict(rope_parameters=[1, 2])), TypeError, "rope_parameters must be a JSON object or null, got [1, 2]"),
    Bad("from_hf long_factor strings", lambda: RopeConfig.from_hf(_hf_dict(rope_scaling={"rope_type": "longrope", "short_factor": ["a"], "long_factor": [1.0]})), TypeError, "short_factor[0] must be a number, got 'a'"),
    Bad("from_hf model_type number", lambda: RopeConfig.from_hf({"model_type": 7, "rope_theta": 1e4, "head_dim": 64}), TypeError, "model_type must be a string, got 7"),
    Bad("from_hf rope_interleave string", lambda: RopeConfig.from_hf(_hf_dict(model_type="deepseek_v3", rope_interleave="yes")), TypeError, "rope_interleave must be True or False, got 'yes'"),
    Bad("from_hf no sizes", lambda: RopeConfig.from_hf({"rope_theta": 1e4}), ValueError, "neither head_dim nor hidden_size"),
    Bad("from_hf not a config", lambda: RopeConfig.from_hf(3), TypeError, "expected a transformers config or a config.json dict, got int"),
    # --- config.json on disk
    Bad("json deep nesting", lambda tmp: read_config_json(_json(tmp, "[" * 100000 + "]" * 100000)), ValueError, "deeper than 64 levels"),
    Bad("json huge integer", lambda tmp: read_config_json(_json(tmp, '{"head_dim": ' + "9" * 5000 + "}")), ValueError, "an integer literal of 5000 digits"),
    Bad("json not an object", lambda tmp: read_config_json(_json(tmp, "[1, 2]")), ValueError, "it holds a JSON list, expected an object"),
    Bad("json not json", lambda tmp: read_config_json(_json(tmp, "{not json")), ValueError, "it is not valid JSON"),
    # --- rope_tables
    Bad("positions bool", lambda: rope_tables(RopeConfig(8), np.array([True, False])), TypeError, "positions must be integers or real numbers, got dtype bool"),
    Bad("positions strings", lambda: rope_tables(RopeConfig(8), ["0", "1"]), TypeError, "positions must be integers or real numbers"),
    Bad("positions nan", lambda: rope_tables(RopeConfig(8), np.array([0.0, np.nan])), ValueError, "positions must be finite"),
    Bad("positions above 2**53", lambda: rope_tables(RopeConfig(8), np.array([2**53 + 1])), ValueError, "positions must lie within +-2**53 to be exact in float64, got 9007199254740993"),
    Bad("float positions above 2**53", lambda: rope_tables(RopeConfig(8), np.array([1.0, 1e300])), ValueError, "positions must lie within +-2**53 to be exact in float64, got 1e+300"),
    Bad("rope_tables config type", lambda: rope_tables({"head_dim": 8}, np.arange(3)), TypeError, "config must be a RopeConfig, got dict"),
    # --- exercises (the seeds' signatures)
    Bad("exercise apply_rope positions", lambda: exercises.apply_rope(np.zeros((1, 1, 4, 8)), np.arange(3)), ValueError, "positions must be shaped (seq_len,) = (4,)"),
    Bad("exercise num_layers string", lambda: exercises.iRoPETransformer("2", {0}), TypeError, "num_layers must be an integer, got '2'"),
    Bad("exercise rope_layers out of range", lambda: exercises.iRoPETransformer(2, {5}), ValueError, "an entry of rope_layers must be an integer >= 0 and <= 1, got 5"),
    Bad("exercise layer_idx type", lambda: exercises.iRoPETransformer(2, {0}).forward_layer(*[np.zeros((1, 1, 2, 4))] * 3, np.arange(2), "1"), TypeError, "layer_idx must be an integer, got '1'"),
    Bad("exercise num_heads 2.5", lambda: exercises.rope_transformer_block(np.zeros((1, 2, 8)), *[np.eye(8)] * 4, 2.5, np.ones((2, 2)), np.zeros((2, 2))), ValueError, "num_heads must be a whole number, got 2.5"),
    Bad("exercise rope_apply base", lambda: exercises.rope_apply(0, np.zeros((2, 4)), 1.0), ValueError, "base must be a finite number > 1, got 1.0"),
    Bad("exercise rope_apply base string", lambda: exercises.rope_apply(0, np.zeros((2, 4)), "1e4"), TypeError, "base must be a number, got '1e4'"),
    Bad("exercise rope_apply x 1-D", lambda: exercises.rope_apply(0, np.zeros(4), 1e4), ValueError, "x must be 2-D"),
    # --- reference attention
    Bad("reference causal int", lambda: reference.attention(*[np.zeros((1, 2, 4))] * 3, causal=1), TypeError, "causal must be True or False, got 1 (int)"),
    Bad("reference scale nan", lambda: reference.attention(*[np.zeros((1, 2, 4))] * 3, scale=float("nan")), ValueError, "scale must be a finite number, got nan"),
    Bad("reference causal_mask negative", lambda: reference.causal_mask(-1, 2), ValueError, "tq must be an integer >= 0, got -1"),
    Bad("reference causal_mask float", lambda: reference.causal_mask(2.0, 2), TypeError, "tq must be an integer, got 2.0"),
    # --- torch front end, the parts checked here
    Bad("torch KVCache zero", lambda: _kv_cache(0), ValueError, "batch must be an integer >= 1, got 0"),
    Bad("torch KVCache string", lambda: _kv_cache("1"), TypeError, "batch must be an integer, got '1'"),
    Bad("TransformerConfig mlp_ratio bool", lambda: _transformer_config(mlp_ratio=True), TypeError, "mlp_ratio must be a number, got True"),
    Bad("TransformerConfig mlp unknown", lambda: _transformer_config(mlp="relu"), ValueError, "mlp must be one of 'swiglu', 'gelu'; got 'relu'"),
    Bad("TransformerConfig causal int", lambda: _transformer_config(causal=1), TypeError, "causal must be True or False, got 1"),
    Bad("TransformerConfig head_dim float", lambda: _transformer_config(head_dim=2.5), TypeError, "head_dim must be an integer, got 2.5"),
    # --- apply_rope / apply_rope_: the layout, the tables, x
    Bad("apply_rope without layout", lambda: apply_rope(*_llama_q()), TypeError, "apply_rope needs layout= with bare cos/sin tables"),
    Bad("apply_rope without layout names the families", lambda: apply_rope(*_llama_q()), TypeError, "layout='half' for Llama 2/3, Mistral, Qwen"),
    Bad("apply_rope_ without layout", lambda: apply_rope_(*_llama_q()), TypeError, "apply_rope_ needs layout= with bare cos/sin tables"),
    Bad("apply_rope cos alone", lambda: apply_rope(np.zeros((4, 8)), np.zeros((4, 4))), TypeError, "apply_rope needs cos and sin, or tables from ropelab.rope_tables passed whole"),
    Bad("apply_rope tables and a sin", lambda: apply_rope(np.zeros((4, 8)), rope_tables(RopeConfig(8), np.arange(4)), np.zeros((4, 4))), TypeError, "got a RopeTables as cos and a sin as well"),
    Bad("apply_rope tables with another layout", lambda: apply_rope(np.zeros((4, 8)), rope_tables(RopeConfig(8, layout="half"), np.arange(4)), layout="interleaved"), ValueError, "layout='interleaved' disagrees with the tables' own layout 'half'"),
    Bad("apply_rope tables for another head_dim", lambda: apply_rope(np.zeros((4, 96)), rope_tables(RopeConfig(64), np.arange(4))), ValueError, "x has 96 features per head but the tables are for head_dim=64"),
    Bad("apply_rope rotary_dim disagrees", lambda: apply_rope(np.zeros((4, 96)), *rope_tables(RopeConfig(64), np.arange(4)), layout="half", rotary_dim=32), ValueError, "rotary_dim=32 disagrees with the tables, which rotate 64 features"),
    Bad("apply_rope rotary_dim string", lambda: apply_rope(np.zeros((4, 96)), *rope_tables(RopeConfig(64), np.arange(4)), layout="half", rotary_dim="64"), TypeError, "rotary_dim must be an integer, got '64' (str)"),
    Bad("apply_rope full-width transformers tables", lambda: apply_rope(np.zeros((4, 8)), *hf_from_rows(rope_tables(RopeConfig(8, layout="half"), np.arange(4)))), TypeError, "needs layout="),
    Bad("apply_rope full-width transformers tables, layout given", lambda: apply_rope(np.zeros((4, 8)), *hf_from_rows(rope_tables(RopeConfig(8, layout="half"), np.arange(4))), layout="half"), ValueError, "look like transformers' full-width tables (..., T, R) with each angle twice: convert them with ropelab.rows_from_hf(cos, sin, layout=...)"),
    Bad("apply_rope_ on a leaf that requires grad", lambda: _inplace_on_leaf(), RuntimeError, "a leaf Variable that requires grad is being used in an in-place operation"),
    Bad("apply_rope_ on a view of a leaf that requires grad", lambda: _inplace_on_leaf_view(), RuntimeError, "a view of a leaf Variable that requires grad"),
    Bad("cos and sin as lists", lambda: apply_rope(np.zeros((2, 4)), [[1.0, 1.0]] * 2, [[0.0, 0.0]] * 2, layout="half"), TypeError, "cos must be a numpy array, torch tensor or jax array, got [[1.0, 1.0], [1.0, 1.0]] (list)"),
    Bad("cos of integers", lambda: apply_rope(np.zeros((2, 4)), np.ones((2, 2), dtype=np.int64), np.zeros((2, 2)), layout="half"), TypeError, "cos must be a floating-point array, got dtype int64"),
    Bad("float8 x", lambda: _float8(), TypeError, "x has dtype torch.float8_e4m3fn, which torch cannot compute with"),
    Bad("tables on the meta device", lambda: _meta_tables(), ValueError, "cos is on the meta device (a shape without values) while x is on cpu"),
    Bad("x of width 96, tables for head_dim 64", lambda: apply_rope(np.zeros((4, 96)), *rope_tables(RopeConfig(64), np.arange(4)), layout="interleaved"), ValueError, "x has 96 features per head but cos/sin rotate 64 (32 columns)"),
    Bad("torch positions beyond the exact range", lambda: _torch_tables(2**33), ValueError, "positions must lie within +-8589934591, got 8589934592"),
    Bad("torch positions float", lambda: rope_tables(RopeConfig(8), _torch().tensor([1.0])), TypeError, "positions must be an integer torch array, got dtype torch.float32"),
    Bad("apply_rope_ under autograd", lambda: _inplace_under_autograd(), _Recorded, "apply_rope_ recorded the inverse rotation"),
    # --- apply_rope(..., out=): numpy's and torch's out= rules
    Bad("out of another dtype", lambda: _into(np.empty((1, 2, 4, 128), np.float32)), TypeError, "out has dtype float32 but x has dtype float64; out must have x's dtype"),
    Bad("out of another shape", lambda: _into(np.empty((1, 2, 4, 64))), ValueError, "out has shape (1, 2, 4, 64) but x has shape (1, 2, 4, 128); out must have x's shape"),
    Bad("out of another kind", lambda: _into("torch"), TypeError, "out must be a numpy array like x, got torch.Tensor"),
    Bad("out a list", lambda: _into([np.empty((1, 2, 4, 128))]), TypeError, "x is one array, so out must be one buffer, got a list of 1"),
    Bad("out one buffer for (q, k)", lambda: _into(np.empty((1, 2, 4, 128)), pair=True), TypeError, "x is a tuple of 2 arrays, so out must be a tuple of 2 buffers, got ndarray"),
    Bad("out three buffers for (q, k)", lambda: _into((np.empty((1, 2, 4, 128)),) * 3, pair=True), ValueError, "out has 3 buffers but x has 2 arrays"),
    Bad("out partly overlapping x", lambda: _into("overlap"), ValueError, "out shares memory with x (partly); out must be either the input itself (an in-place rotation) or memory of its own"),
    Bad("out of q is k", lambda: _into("swap", pair=True), ValueError, "out[0] shares memory with x[1] (it is that array)"),
    Bad("out buffers that share memory", lambda: _into("shared", pair=True), ValueError, "out[1] shares memory with out[0]; give each array its own buffer"),
    Bad("out read-only", lambda: _into("readonly"), ValueError, "out is read-only; give a writeable array"),
    Bad("out a broadcast view", lambda: _into("broadcast"), ValueError, "several of its elements are one place in memory (a broadcast view)"),
    Bad("out on another device", lambda: _into_torch("meta"), ValueError, "out is on meta but x is on cpu; give a buffer on x's device"),
    Bad("out with x that requires grad", lambda: _into_torch("grad"), RuntimeError, "apply_rope(..., out=) does not support automatic differentiation, but x requires grad"),
    Bad("out with tables that require grad", lambda: _into_torch("grad tables"), RuntimeError, "but cos/sin require grad (as torch's functions with out= refuse)"),
    Bad("out for a jax array", lambda: _into_jax(), TypeError, "jax arrays are immutable, so apply_rope cannot write into out=; use the array it returns"),
    Bad("permute_for_layout num_heads string", lambda: permute_for_layout(np.zeros((8, 2)), "2", src="half", dst="interleaved"), TypeError, "num_heads must be an integer, got '2' (str)"),
    # --- the tables types and transformers' full-width tables
    Bad("RopeTables without layout", lambda: RopeTables(np.zeros((4, 4)), np.zeros((4, 4))), TypeError, "RopeTables needs a layout: 'interleaved' or 'half'"),
    Bad("RopeTables head_dim string", lambda: RopeTables(np.zeros((4, 4)), np.zeros((4, 4)), "half", head_dim="8"), TypeError, "head_dim must be an integer, got '8' (str)"),
    Bad("RopeTables head_dim narrower than the tables", lambda: RopeTables(np.zeros((4, 4)), np.zeros((4, 4)), "half", head_dim=6), ValueError, "tables of 4 columns rotate 8 features, more than head_dim=6"),
    Bad("rows_from_hf without layout", lambda: rows_from_hf(np.ones((4, 8)), np.zeros((4, 8))), TypeError, "rows_from_hf needs layout=, the pairing the tables are for"),
    Bad("rows_from_hf half tables read as interleaved", lambda: rows_from_hf(*hf_from_rows(rope_tables(RopeConfig(8, layout="half"), np.arange(4))), layout="interleaved"), ValueError, "cos is not a full-width table of the 'interleaved' layout: its even and odd columns differ"),
    Bad("rows_from_hf interleaved tables read as half", lambda: rows_from_hf(*hf_from_rows(rope_tables(RopeConfig(8, layout="interleaved"), np.arange(4))), layout="half"), ValueError, "cos is not a full-width table of the 'half' layout: its two halves differ"),
    Bad("rows_from_hf odd width", lambda: rows_from_hf(np.ones((4, 7)), np.zeros((4, 7)), layout="half"), ValueError, "full-width tables must be shaped (..., T, R) with R even and >= 2, got shape (4, 7)"),
    Bad("rows_from_hf lists", lambda: rows_from_hf([[1.0, 1.0]], [[0.0, 0.0]], layout="half"), TypeError, "cos must be a numpy array, torch tensor or jax array, got [[1.0, 1.0]] (list)"),
    Bad("hf_from_rows without layout", lambda: hf_from_rows(np.ones((4, 4)), np.zeros((4, 4))), TypeError, "hf_from_rows needs layout="),
    Bad("hf_from_rows shapes differ", lambda: hf_from_rows(np.ones((4, 4)), np.zeros((4, 3)), layout="half"), ValueError, "cos and sin must have the same shape, got (4, 4) and (4, 3)"),
    # --- schemes, positional encodings, attention options: through ropelab.checks
    Bad("YaRN original length a float", lambda: YaRN(4.0, 2048.0), TypeError, "YaRN original_max_position must be an integer, got 2048.0"),
    Bad("YaRN truncate an int", lambda: YaRN(4.0, 2048, truncate=1), TypeError, "YaRN truncate must be True or False, got 1 (int)"),
    Bad("PRoPE p above 1", lambda: PRoPE(1.5), ValueError, "PRoPE p must be a finite number >= 0 and <= 1, got 1.5"),
    Bad("sinusoidal odd width", lambda: sinusoidal(np.arange(3), 7), ValueError, "d_model must be even, got 7"),
    Bad("sinusoidal width a string", lambda: sinusoidal(np.arange(3), "8"), TypeError, "d_model must be an integer, got '8' (str)"),
    Bad("sinusoidal positions bool", lambda: sinusoidal(np.array([True]), 8), TypeError, "positions must be integers or real numbers, got dtype bool"),
    Bad("alibi_slopes of 2.5 heads", lambda: alibi_slopes(2.5), TypeError, "num_heads must be an integer, got 2.5"),
    Bad("t5 buckets bidirectional an int", lambda: t5_relative_buckets(np.arange(3), bidirectional=1), TypeError, "bidirectional must be True or False, got 1"),
    Bad("xpos gamma a string", lambda: xpos_scales(np.arange(3), 8, gamma="0.4"), TypeError, "gamma must be a number, got '0.4' (str)"),
    Bad("mrope_section a string", lambda: mrope_axis_of_pair("16", 16), TypeError, "mrope_section must be a list of integers, got '16'"),
    Bad("permute_for_layout odd rotary_dim", lambda: permute_for_layout(np.zeros((8, 2)), 1, src="half", dst="interleaved", rotary_dim=5), ValueError, "rotary_dim must be even, got 5"),
    Bad("AttentionSpec window 2.5", lambda: AttentionSpec(64, 4, window=2.5), TypeError, "window must be an integer, got 2.5"),
    Bad("AttentionSpec temperature_tuning a string", lambda: AttentionSpec(64, 4, temperature_tuning="ab"), TypeError, "temperature_tuning must be a pair (attn_scale, floor_scale) or None, got 'ab'"),
    Bad("AttentionSpec qk_norm_eps a bool", lambda: AttentionSpec(64, 4, qk_norm_eps=True), TypeError, "qk_norm_eps must be a number, got True (bool)"),
    Bad("torch Attention dropout a string", lambda: _attention(dropout="0.1"), TypeError, "dropout must be a number, got '0.1' (str)"),
    Bad("torch Attention dropout 1.5", lambda: _attention(dropout=1.5), ValueError, "dropout must be a probability in [0, 1), got 1.5"),
    Bad("register_layer_kind of a number", lambda: _register_kind(3), TypeError, "a layer kind name must be a string, got 3 (int)"),
    Bad("linear_attention tables without a layout", lambda: _linear_attention_without_layout(), TypeError, "cos and sin need layout=, the pairing they rotate by"),
    Bad("lab settings --steps 0", lambda: _lab_settings(steps=0), ValueError, "--steps must be an integer >= 1, got 0"),
    Bad("lab settings --steps a float", lambda: _lab_settings(steps=10.0), TypeError, "--steps must be an integer, got 10.0"),
    Bad("lab settings --retrieval-mix above 1", lambda: _lab_settings(retrieval_mix=1.5), ValueError, "--retrieval-mix must be a finite number >= 0 and <= 1, got 1.5"),
    Bad("nnx float positions", lambda: _nnx_positions(np.array([0.0, 1.0])), TypeError, "positions must be integers, got dtype float64"),
    Bad("nnx positions beyond int32", lambda: _nnx_positions(np.array([0, 2**31])), ValueError, "positions must lie in [-2**31, 2**31), the int32 range the cache and masks keep; got values from 0 to 2147483648"),
    # --- torch front end: inputs of a forward
    Bad("float64 x into a float32 Attention", lambda: _attention_float64(), TypeError, "x has dtype torch.float64 but the layer's weights are torch.float32"),
    Bad("integer x into an Attention", lambda: _attention_x(dtype="int64"), TypeError, "x must be a floating-point tensor, got dtype torch.int64"),
    Bad("float positions into an Attention", lambda: _attention_x(positions=[0.0, 1.0, 2.0]), TypeError, "positions must be an integer tensor, got dtype torch.float32"),
    Bad("token id >= vocab", lambda: _token_beyond_vocab(32), ValueError, "tokens must be ids in [0, 32) (vocab_size), got 32"),
    Bad("negative token id", lambda: _token_beyond_vocab(-1), ValueError, "tokens must be ids in [0, 32) (vocab_size), got -1"),
    Bad("float tokens", lambda: _token_beyond_vocab(1.0), TypeError, "tokens must be an integer tensor, got dtype torch.float32"),
    Bad("bool positions into a learned table", lambda: _learned_absolute(True), TypeError, "positions must be an integer tensor"),
    # --- nnx: the cache under jit
    Bad("nnx cache overflow under jit", lambda: _nnx_overflow_under_jit(), RuntimeError, "ValueError: KV cache of capacity 2 cannot hold 3 tokens (2 cached + 1 new)"),
    Bad("nnx more new tokens than the capacity under jit", lambda: _nnx_overflow_under_jit(first=3), ValueError, "KV cache of capacity 2 cannot hold 3 new tokens"),
    Bad("nnx cache overflow eagerly", lambda: _nnx_overflow_under_jit(jit=False), ValueError, "KV cache of capacity 2 cannot hold 3 tokens (2 cached + 1 new)"),
]


def _into(out, pair=False):
    """apply_rope of llama-3.1-8b's q (float64, (1, 2, 4, 128)) into ``out``: a buffer, or
    the name of a bad one made here."""
    q, cos, sin = _llama_q()
    x = (q, q.copy()) if pair else q
    if not isinstance(out, str):
        pass
    elif out == "torch":
        out = _torch().empty(q.shape, dtype=_torch().float64)
    elif out == "overlap":
        out = np.empty((1, 2, 5, 128))
        q = out[:, :, :4]
        q[...] = 0.0
        x, out = q, out[:, :, 1:]
    elif out == "swap":
        out = (x[1], x[0])
    elif out == "shared":
        buf = np.empty(q.shape)
        out = (buf, buf)
    elif out == "readonly":
        out = np.empty(q.shape)
        out.flags.writeable = False
    elif out == "broadcast":
        out = np.lib.stride_tricks.as_strided(np.empty(128), shape=q.shape, strides=(0, 0, 0, 8))
    return apply_rope(x, cos, sin, layout="half", out=out)


def _into_torch(how):
    torch = _torch()
    q, cos, sin = _llama_q("torch")
    out = torch.empty_like(q)
    if how == "meta":
        out = torch.empty_like(q, device="meta")
    elif how == "grad":
        q.requires_grad_(True)
    elif how == "grad tables":
        cos.requires_grad_(True)
    return apply_rope(q, cos, sin, layout="half", out=out)


def _into_jax():
    jnp = pytest.importorskip("jax.numpy")
    q, cos, sin = _llama_q()
    return apply_rope(jnp.asarray(q, jnp.float32), cos, sin, layout="half", out=np.empty(q.shape, np.float32))


def _kv_cache(batch):
    _torch()
    from ropelab.torch import KVCache

    return KVCache(batch, 1, 4, 8)


def _transformer_config(**kwargs):
    _torch()
    from ropelab.torch import TransformerConfig

    return TransformerConfig(32, **{"d_model": 16, "num_heads": 2, "layers": ("rope",), **kwargs})


def _inplace_on_leaf():
    q, cos, sin = _llama_q("torch")
    q.requires_grad_(True)
    return apply_rope_(q, cos, sin, layout="half")


def _float8():
    torch = _torch()
    q, cos, sin = _llama_q("torch")
    return apply_rope(q.to(torch.float8_e4m3fn), cos, sin, layout="half")


def _inplace_on_leaf_view():
    q, cos, sin = _llama_q("torch")
    q.requires_grad_(True)
    return apply_rope_(q[:, :1], cos, sin, layout="half")


def _meta_tables():
    q, cos, sin = _llama_q("torch")
    return apply_rope(q, cos.to("meta"), sin.to("meta"), layout="half")


class _Exact(ValueError):
    """Raised by a row's call when the library got a silent case right (see below)."""


def _torch_tables(p):
    """Refused (ValueError naming the range) or exact: either closes the gap; rounding does not."""
    torch = _torch()
    import mpmath

    config = RopeConfig(8)
    cos, _ = rope_tables(config, torch.tensor([p]))  # may raise: refused
    exact = [float(mpmath.cos(mpmath.mpf(p) * mpmath.mpf(f))) for f in config.inv_freq()]
    if np.allclose(cos.double().numpy()[0], exact, atol=1e-6):
        raise _Exact(f"torch position {p} is exact")
    return cos


def _inplace_under_autograd():
    """Raises (torch's rules) or records the right backward (the inverse rotation)."""
    torch = _torch()
    q, cos, sin = _llama_q("torch")
    leaf = q.clone().requires_grad_(True)
    y = leaf * 1.0  # a non-leaf
    version = y._version
    apply_rope_(y, cos, sin, layout="half")
    w = torch.randn_like(y)
    (y * w).sum().backward()
    expected = apply_rope(w, cos, -sin, layout="half")  # d(R x . w)/dx = R^T w
    if torch.allclose(leaf.grad, expected, atol=1e-5) and y._version > version:
        raise _Recorded("apply_rope_ recorded the inverse rotation as its backward")
    return leaf.grad


def _attention_float64():
    torch = _torch()
    from ropelab.torch import Attention

    return Attention(16, 2, rope=RopeConfig(8, layout="half"))(torch.zeros(1, 3, 16, dtype=torch.float64))


def _learned_absolute(position):
    torch = _torch()
    from ropelab.torch import LearnedAbsolute

    return LearnedAbsolute(8, 4)(torch.tensor([position]))


def _attention(**kwargs):
    _torch()
    from ropelab.torch import Attention

    return Attention(16, 2, **kwargs)


def _register_kind(name):
    _torch()
    from ropelab.torch import register_layer_kind

    return register_layer_kind(name)


def _linear_attention_without_layout():
    torch = _torch()
    from ropelab.torch.linear_attention import linear_attention

    q = torch.zeros(1, 1, 3, 8)
    cos, sin = rope_tables(RopeConfig(8), np.arange(3))
    return linear_attention(q, q, q, cos=cos, sin=sin)


def _lab_settings(**changes):
    from ropelab.lab.settings import from_preset

    return from_preset("default", **changes).validate()


def _nnx_positions(positions):
    pytest.importorskip("jax")
    nnx = pytest.importorskip("flax.nnx")
    from ropelab.nnx import Attention

    attn = Attention(16, 2, rope=RopeConfig(8, layout="half"), rngs=nnx.Rngs(0))
    return attn(np.ones((1, len(positions), 16), np.float32), positions)


def _attention_x(dtype="float32", positions=None):
    torch = _torch()
    from ropelab.torch import Attention

    x = torch.zeros(1, 3, 16, dtype=getattr(torch, dtype))
    pos = None if positions is None else torch.tensor(positions)
    return Attention(16, 2, rope=RopeConfig(8, layout="half"))(x, positions=pos)


def _token_beyond_vocab(token):
    torch = _torch()
    from ropelab.torch import Transformer

    model = Transformer(_transformer_config())
    return model(torch.tensor([[1, token]]))


def _nnx_overflow_under_jit(first=2, jit=True):
    """Two slots: ``first`` tokens, then one more. Under jit the second step raises when it
    runs (jax's runtime error, a RuntimeError, carrying the ValueError's message)."""
    jax = pytest.importorskip("jax")
    nnx = pytest.importorskip("flax.nnx")
    from ropelab.nnx import Attention, KVCache

    attn = Attention(16, 2, rope=RopeConfig(8, layout="half"), rngs=nnx.Rngs(0))
    cache = KVCache.create(1, 2, 2, 8)
    step = nnx.jit(lambda m, x, c: m(x, cache=c)) if jit else (lambda m, x, c: m(x, cache=c))
    out, cache = step(attn, jax.numpy.ones((1, first, 16)), cache)
    return jax.block_until_ready(step(attn, jax.numpy.ones((1, 1, 16)), cache))  # a third token


def _params():
    return [
        pytest.param(
            case,
            id=case.id,
            marks=[pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else [],
        )
        for case in BAD
    ]


@pytest.mark.parametrize("case", _params())
def test_bad_input(case: Bad, tmp_path):
    takes_folder = case.call.__code__.co_argcount == 1
    with pytest.raises(case.error) as info:
        case.call(tmp_path) if takes_folder else case.call()
    assert case.fragment in str(info.value), f"message {str(info.value)!r} lacks {case.fragment!r}"


def test_every_row_has_a_unique_id():
    ids = [case.id for case in BAD]
    assert len(ids) == len(set(ids))
