"""``ropelab inspect`` on malformed config.json files: each must end in a clean refusal
(exit 2, ``ropelab inspect: error: ...`` naming what is wrong), never a traceback, never an
accepted config.

Each case starts from a good Llama-style config and breaks one thing (wrong types, huge
numbers, Infinity and NaN, deep nesting, missing keys, negatives, zeros, strings for
numbers, lists, nulls where a value is needed, bytes that are not JSON). Run this file as a
script for the counts: ``python tests/cli/test_config_fuzz.py``.
"""

from __future__ import annotations

import dataclasses
import json
import sys

import pytest

from ropelab.cli import main

GOOD = {
    "model_type": "llama",
    "hidden_size": 256,
    "num_attention_heads": 4,
    "max_position_embeddings": 4096,
    "rope_theta": 10000.0,
}
DELETE = object()


@dataclasses.dataclass(frozen=True)
class Malformed:
    id: str
    fragment: str  # part of the error message
    changes: dict | None = None  # applied to GOOD (DELETE removes a key)
    text: str | bytes | None = None  # the whole file, when it is not a JSON object


def _scaling(**params):
    return {"rope_scaling": params}


CASES = [
    # wrong types and strings for numbers
    Malformed("hidden_size string", "hidden_size must be an integer, got '256'", {"hidden_size": "256"}),
    Malformed("heads string", "num_attention_heads must be an integer, got '4'", {"num_attention_heads": "4"}),
    Malformed("head_dim string", "head_dim must be an integer, got '64'", {"head_dim": "64"}),
    Malformed("head_dim float", "head_dim must be an integer, got 64.5", {"head_dim": 64.5}),
    Malformed("head_dim bool", "head_dim must be an integer, got True", {"head_dim": True}),
    Malformed("hidden_size float", "hidden_size must be an integer, got 256.0", {"hidden_size": 256.0}),
    Malformed("theta string", "rope_theta must be a number, got '1e4'", {"rope_theta": "1e4"}),
    Malformed("theta bool", "rope_theta must be a number, got True", {"rope_theta": True}),
    Malformed("theta list", "rope_theta must be a number, got [10000]", {"rope_theta": [10000]}),
    Malformed("theta object", "rope_theta must be a number, got {'a': 1}", {"rope_theta": {"a": 1}}),
    Malformed("max_position string", "max_position_embeddings must be an integer, got '4096'", {"max_position_embeddings": "4096"}),
    Malformed("max_position bool", "max_position_embeddings must be an integer, got True", {"max_position_embeddings": True}),
    Malformed("model_type number", "model_type must be a string, got 7", {"model_type": 7}),
    Malformed("model_type list", "model_type must be a string, got ['llama']", {"model_type": ["llama"]}),
    Malformed("rope_scaling string", "rope_parameters must be a JSON object or null, got 'linear'", {"rope_scaling": "linear"}),
    Malformed("rope_scaling list", "rope_parameters must be a JSON object or null, got [1, 2]", {"rope_scaling": [1, 2]}),
    Malformed("factor string", "factor must be a number, got '2'", _scaling(type="linear", factor="2")),
    Malformed("factor bool", "factor must be a number, got True", _scaling(type="linear", factor=True)),
    Malformed("partial factor string", "partial_rotary_factor must be a number, got '0.5'", {"partial_rotary_factor": "0.5"}),
    Malformed("original length string", "original_max_position_embeddings must be an integer, got '8192'",
              _scaling(type="yarn", factor=4.0, original_max_position_embeddings="8192")),
    Malformed("truncate string", "truncate must be True or False, got 'yes'",
              _scaling(type="yarn", factor=4.0, original_max_position_embeddings=1024, truncate="yes")),
    Malformed("short_factor strings", "short_factor[0] must be a number, got 'a'",
              _scaling(type="longrope", short_factor=["a"] * 32, long_factor=[1.0] * 32)),
    Malformed("rope_interleave string", "rope_interleave must be True or False, got 'yes'",
              {"model_type": "deepseek_v3", "rope_interleave": "yes"}),
    Malformed("text_config string", "text_config must be a JSON object, got 'abc'", {"text_config": "abc"}),
    Malformed("text_config list", "text_config must be a JSON object, got [1]", {"text_config": [1]}),
    # huge numbers: refused before anything is allocated
    Malformed("head_dim 1e30", "head_dim must be an integer, got 1e+30", {"head_dim": 1e30}),
    Malformed("head_dim 1e9", "head_dim must be an integer >= 2 and <= 65536, got 1000000000", {"head_dim": 10**9}),
    Malformed("qk_rope_head_dim 1e12", "qk_rope_head_dim must be an integer >= 2 and <= 65536",
              {"model_type": "deepseek_v3", "qk_rope_head_dim": 10**12}),
    Malformed("hidden_size 1e12", "hidden_size must be an integer >= 1 and <= 4294967296", {"hidden_size": 10**12}),
    Malformed("heads 1e9", "num_attention_heads must be an integer >= 1 and <= 65536", {"num_attention_heads": 10**9}),
    Malformed("factor 1e308", "factor must be a finite number <= 4.61169e+18, got 1e+308", _scaling(type="linear", factor=1e308)),
    Malformed("max_position 1e40", "max_position_embeddings must be an integer, got 1e+40", {"max_position_embeddings": 1e40}),
    Malformed("max_position 10**39", "max_position_embeddings must be an integer >= 1 and <= 4611686018427387904",
              {"max_position_embeddings": 10**39}),
    Malformed("huge integer literal", "an integer literal of 5000 digits",
              text='{"model_type": "llama", "hidden_size": ' + "9" * 5000 + ', "num_attention_heads": 4}'),
    Malformed("long_factor of 100000", "long_factor must be a list of at most 32768 numbers",
              _scaling(type="longrope", short_factor=[1.0] * 32, long_factor=[1.0] * 100000)),
    # Infinity and NaN (Python's json reads them)
    Malformed("theta Infinity", "rope_theta must be a finite number", text='{"model_type": "llama", "hidden_size": 256, "num_attention_heads": 4, "rope_theta": Infinity}'),
    Malformed("theta NaN", "rope_theta must be a finite number", text='{"model_type": "llama", "hidden_size": 256, "num_attention_heads": 4, "rope_theta": NaN}'),
    Malformed("factor Infinity", "factor must be a finite number", text='{"model_type": "llama", "hidden_size": 256, "num_attention_heads": 4, "rope_scaling": {"type": "linear", "factor": Infinity}}'),
    Malformed("head_dim Infinity", "head_dim must be an integer, got inf", text='{"model_type": "llama", "head_dim": Infinity, "num_attention_heads": 4}'),
    Malformed("max_position NaN", "max_position_embeddings must be an integer, got nan", text='{"model_type": "llama", "hidden_size": 256, "num_attention_heads": 4, "max_position_embeddings": NaN}'),
    Malformed("partial factor NaN", "partial_rotary_factor must be a finite number", text='{"model_type": "llama", "hidden_size": 256, "num_attention_heads": 4, "partial_rotary_factor": NaN}'),
    Malformed("beta_fast -Infinity", "beta_fast must be a finite number",
              text='{"model_type": "llama", "hidden_size": 256, "num_attention_heads": 4, "max_position_embeddings": 4096, "rope_scaling": {"type": "yarn", "factor": 4, "beta_fast": -Infinity}}'),
    # deep nesting
    Malformed("deep array", "deeper than 64 levels", text='{"model_type": "llama", "x": ' + "[" * 100000 + "]" * 100000 + "}"),
    Malformed("deep objects in rope_scaling", "deeper than 64 levels",
              text='{"model_type": "llama", "rope_scaling": ' + '{"a": ' * 1000 + "1" + "}" * 1000 + "}"),
    # missing keys
    Malformed("no hidden_size", "neither head_dim nor hidden_size and num_attention_heads", {"hidden_size": DELETE}),
    Malformed("no heads", "neither head_dim nor hidden_size and num_attention_heads", {"num_attention_heads": DELETE}),
    Malformed("linear without factor", "rope_type 'linear' needs the key 'factor'", _scaling(type="linear")),
    Malformed("yarn without lengths", "needs original_max_position_embeddings or max_position_embeddings",
              {"max_position_embeddings": DELETE, **_scaling(type="yarn", factor=4.0)}),
    Malformed("longrope without long_factor", "needs the key 'long_factor'", _scaling(type="longrope", short_factor=[1.0] * 32)),
    Malformed("llama3 without low_freq_factor", "needs the key 'low_freq_factor'",
              _scaling(rope_type="llama3", factor=8.0, high_freq_factor=4.0, original_max_position_embeddings=1024)),
    Malformed("empty object", "nothing in it says it uses RoPE", text="{}"),
    # negatives and zeros
    Malformed("head_dim 0", "head_dim must be an integer >= 2", {"head_dim": 0}),
    Malformed("head_dim negative", "head_dim must be an integer >= 2", {"head_dim": -64}),
    Malformed("heads 0", "num_attention_heads must be an integer >= 1", {"num_attention_heads": 0}),
    Malformed("heads negative", "num_attention_heads must be an integer >= 1", {"num_attention_heads": -4}),
    Malformed("hidden_size 0", "hidden_size must be an integer >= 1", {"hidden_size": 0}),
    Malformed("hidden not divisible", "hidden_size=250 is not divisible by num_attention_heads=4", {"hidden_size": 250}),
    Malformed("theta 0", "rope_theta must be a finite number > 1, got 0", {"rope_theta": 0}),
    Malformed("theta negative", "rope_theta must be a finite number > 1", {"rope_theta": -10000.0}),
    Malformed("theta 1", "rope_theta must be a finite number > 1, got 1.0", {"rope_theta": 1.0}),
    Malformed("factor 0", "Linear factor must be a finite number >= 1, got 0.0", _scaling(type="linear", factor=0.0)),
    Malformed("max_position 0", "max_position_embeddings must be an integer >= 1", {"max_position_embeddings": 0}),
    Malformed("partial factor 0", "partial_rotary_factor must be a finite number > 0", {"partial_rotary_factor": 0.0}),
    Malformed("rotary_pct 2", "rotary_pct must be a finite number > 0 and <= 1, got 2",
              {"model_type": "gpt_neox", "rotary_pct": 2}),
    Malformed("gptj rotary_dim 0", "rotary_dim must be an integer >= 2",
              {"model_type": "gptj", "rotary_dim": 0}),
    Malformed("gptj rotary_dim odd", "rotary_dim must be even, got 63", {"model_type": "gptj", "rotary_dim": 63}),
    Malformed("attention_factor 0", "attention_factor must be a finite number > 0",
              _scaling(type="yarn", factor=4.0, original_max_position_embeddings=1024, attention_factor=0)),
    Malformed("mscale negative", "YaRN mscale must be a finite number >= 0, got -1",
              _scaling(type="yarn", factor=4.0, original_max_position_embeddings=1024, mscale=-1)),
    Malformed("beta_fast <= beta_slow", "YaRN needs beta_fast > beta_slow",
              _scaling(type="yarn", factor=4.0, original_max_position_embeddings=1024, beta_fast=1, beta_slow=2)),
    Malformed("low > high freq factor", "low_freq_factor <= high_freq_factor",
              _scaling(rope_type="llama3", factor=8.0, low_freq_factor=4.0, high_freq_factor=1.0, original_max_position_embeddings=1024)),
    Malformed("longrope wrong length", "one entry per rotary pair",
              _scaling(type="longrope", short_factor=[1.0] * 3, long_factor=[1.0] * 3)),
    # lists, nulls and files that are not config objects
    Malformed("file is a list", "it holds a JSON list, expected an object", text="[1, 2, 3]"),
    Malformed("file is null", "it holds a JSON NoneType, expected an object", text="null"),
    Malformed("file is a number", "it holds a JSON int, expected an object", text="42"),
    Malformed("empty file", "it is not valid JSON", text=""),
    Malformed("trailing garbage", "it is not valid JSON", text=json.dumps(GOOD) + " xyz"),
    Malformed("not UTF-8", "it is not UTF-8 text", text=b'{"model_type": "llama\xff"}'),
    Malformed("sizes null", "neither head_dim nor hidden_size and num_attention_heads",
              {"hidden_size": None, "num_attention_heads": None}),
    # configs of models without RoPE, and schedules ropelab does not read
    Malformed("bert", "bert applies no rotary embedding",
              text=json.dumps({"model_type": "bert", "hidden_size": 768, "num_attention_heads": 12, "max_position_embeddings": 512})),
    Malformed("gpt2", "gpt2 applies no rotary embedding",
              text=json.dumps({"model_type": "gpt2", "n_embd": 768, "n_head": 12, "n_positions": 1024})),
    Malformed("unknown rope_type", "unknown rope_type 'wobble'", _scaling(type="wobble", factor=2.0)),
    Malformed("per-layer rope parameters", "rope parameters per layer type",
              {"rope_parameters": {"full_attention": {"rope_theta": 1e6}, "sliding_attention": {"rope_theta": 1e4}}}),
]


def _write(case: Malformed, folder) -> str:
    path = folder / "config.json"
    if case.text is not None:
        data = case.text.encode() if isinstance(case.text, str) else case.text
        path.write_bytes(data)
    else:
        config = dict(GOOD)
        for key, value in case.changes.items():
            if value is DELETE:
                config.pop(key, None)
            else:
                config[key] = value
        path.write_text(json.dumps(config))
    return str(path)


def outcome(case: Malformed, folder) -> tuple[str, str]:
    """("clean", stderr) for a refusal, ("accepted", stdout) or ("traceback", the error)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["inspect", _write(case, folder), "--no-plot", "--plain"])
    except SystemExit as exc:
        code = exc.code
    except BaseException as exc:  # noqa: BLE001 - the thing being counted
        return "traceback", f"{type(exc).__name__}: {exc}"
    if code == 0:
        return "accepted", out.getvalue()[:200]
    if code == 2 and err.getvalue().startswith("ropelab inspect: error: "):
        return "clean", err.getvalue()
    return "traceback", f"exit {code}: {err.getvalue()}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_config_is_refused_cleanly(case: Malformed, tmp_path):
    kind, text = outcome(case, tmp_path)
    assert kind == "clean", text
    assert case.fragment in text, text


def test_the_good_config_is_read(tmp_path, capsys):
    # the cases break GOOD one thing at a time; GOOD itself must pass
    assert main(["inspect", _write(Malformed("good", "", {}), tmp_path), "--no-plot", "--plain"]) == 0


def test_enough_kinds():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 53


if __name__ == "__main__":
    import collections
    import tempfile
    from pathlib import Path

    counts = collections.Counter()
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            kind, text = outcome(case, Path(tmp))
            counts[kind] += 1
            if kind != "clean":
                print(f"{kind:10} {case.id}: {text[:200]}")
    print(f"{len(CASES)} malformed config.json files: {counts['clean']} clean exits, "
          f"{counts['traceback']} tracebacks, {counts['accepted']} accepted")
    sys.exit(0 if counts["clean"] == len(CASES) else 1)
