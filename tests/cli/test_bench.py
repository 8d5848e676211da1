"""``ropelab bench``: the quick run works end to end and reports what it measured, where."""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import pathlib
import re

import numpy as np
import pytest

import ropelab
from ropelab import RopeConfig, cli, kernels, rope_tables

torch = pytest.importorskip("torch")
bench = pytest.importorskip("ropelab.bench")

ROOT = pathlib.Path(__file__).parents[2]


def _accepts_out() -> bool:
    return "out" in inspect.signature(ropelab.apply_rope).parameters


def test_quick_bench_runs_and_writes_json_and_png(tmp_path, capsys):
    assert cli.main(["bench", "--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "bench.json").read_text())
    assert (tmp_path / "bench.png").stat().st_size > 0
    assert result["quick"] and result["backend"] == kernels.backend()
    names = {r["name"] for r in result["rope"]}
    for wanted in ("copy_ (memory limit)", "clone()", "ropelab in place", "ropelab out of place",
                   "ropelab op, torch.compile", "rotary-embedding-torch", "jax.jit(ropelab.apply_rope)"):
        assert wanted in names
    # the out= row shows up exactly when this ropelab's apply_rope takes out=
    assert (bench.INTO in names) == _accepts_out()
    assert {r["dtype"] for r in result["rope"]} == {"float32", "bfloat16"}
    for r in result["rope"]:
        if "median_ms" in r:
            assert r["median_ms"] > 0 and r["gb_s"] > 0 and r["warmup"] >= 1
            assert r["reps"] == bench.QUICK["reps"]
        else:
            assert r["note"] in printed
    copy = [r for r in result["rope"] if r["name"] == bench.COPY]
    assert all(r["ratio_to_copy"] == 1.0 for r in copy)
    assert "targets" not in result  # no pass/fail table of internal targets
    assert [(r["T"], r["name"]) for r in result["attention"]] == [
        (T, name) for T in bench.QUICK["attn_T"] for name in bench.ATTENTION_VARIANTS.values()]
    assert all(r["median_ms"] > 0 and r["peak_mib"] >= 0 for r in result["attention"])
    assert [r["context"] for r in result["decode"]] == list(bench.QUICK["decode_ctx"])
    for r in result["decode"]:
        assert all(v > 0 for k, v in r.items() if k != "context")
        assert "ropelab Attention step with KV cache ms" in r
    # the machine: cores, load, torch's threads; in the JSON and on screen
    machine = result["machine"]
    assert machine["cpus"] == os.cpu_count() and machine["torch_threads"] == torch.get_num_threads()
    assert len(machine["load_average"]) == 3 and len(machine["load_average_end"]) == 3
    assert f"a {os.cpu_count()}-core CPU" in printed and "load average" in printed
    assert f"on {torch.get_num_threads()} thread(s)" in printed
    assert "warm-up runs (not counted)" in printed and "do not compare with a full run" in printed
    # words for users: what each thing is, no project history, no verdicts on internal targets
    for word in ("seed", "issue", "targets", "NO", "PASS", "FAIL"):
        assert not re.search(rf"\b{word}\b", printed, flags=re.IGNORECASE if word.islower() else 0), word
    assert "attention with a full T x T score matrix" in printed
    assert f"wrote {tmp_path / 'bench.json'}, {tmp_path / 'bench.png'}" in printed


def test_bench_without_out_writes_nothing_and_says_when_numba_is_missing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(kernels.DISABLE_ENV, "1")
    kernels.reset_backend()
    try:
        assert cli.main(["bench", "--quick", "--no-compile", "--no-jax"]) == 0
    finally:
        monkeypatch.delenv(kernels.DISABLE_ENV)
        kernels.reset_backend()
    printed = capsys.readouterr().out
    assert "reference path" in printed
    assert "wrote" not in printed and list(tmp_path.iterdir()) == []


def test_out_buffer_row_appears_when_apply_rope_takes_out(monkeypatch):
    """The out= contender is found from apply_rope's signature and kept only if it writes
    the buffers right, as one call for q and k or one call each."""
    real = ropelab.apply_rope

    def with_out(x, cos, sin, *, layout, out=None):  # one call each
        if isinstance(x, tuple):
            return real(x, cos, sin, layout=layout)
        got = real(x, cos, sin, layout=layout)
        return got if out is None else out.copy_(got)

    def wrong_out(x, cos, sin, *, layout, out=None):
        if isinstance(x, tuple):
            return real(x, cos, sin, layout=layout)
        return out.zero_() if out is not None else real(x, cos, sin, layout=layout)

    def no_out(x, cos, sin, *, layout):
        return real(x, cos, sin, layout=layout)

    cos, sin = (torch.from_numpy(t).float() for t in rope_tables(RopeConfig(8, layout="half"), np.arange(5)))
    q, k = torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    bq, bk = torch.empty_like(q), torch.empty_like(k)
    call = bench._into_buffers(torch, with_out, q, k, cos, sin, bq, bk)
    assert call is not None
    call()
    want = real((q, k), cos, sin, layout="half")
    torch.testing.assert_close(bq, want[0], rtol=0, atol=0)
    torch.testing.assert_close(bk, want[1], rtol=0, atol=0)
    assert bench._into_buffers(torch, wrong_out, q, k, cos, sin, bq, bk) is None
    assert bench._into_buffers(torch, no_out, q, k, cos, sin, bq, bk) is None

    # in the bench itself: the row follows apply_rope
    class Args:
        reps, no_compile, no_jax = 1, True, True

    cfg = dict(bench.QUICK, shape=(1, 2, 16, 8), warmup=1)
    monkeypatch.setattr(ropelab, "apply_rope", with_out)
    assert bench.INTO in {r["name"] for r in bench._rope_throughput(torch, "float32", cfg, Args, [])}
    monkeypatch.setattr(ropelab, "apply_rope", no_out)
    assert bench.INTO not in {r["name"] for r in bench._rope_throughput(torch, "float32", cfg, Args, [])}


def test_attention_variants_compute_the_same_attention():
    """The plain and full-matrix contenders compute what ropelab's module computes."""
    attention = pytest.importorskip("ropelab.torch")
    torch.manual_seed(0)
    attn = attention.Attention(32, 4, rope=RopeConfig(8, layout="half")).eval()
    x = torch.randn(2, 9, 32)
    with torch.no_grad():
        want = attn(x)
        torch.testing.assert_close(bench._full_matrix_attention(torch, attn, x), want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(bench._plain_attention(torch, attn, x), want, atol=1e-5, rtol=1e-5)


def test_attention_scaling_in_and_out_of_process(monkeypatch):
    small = dict(d_model=32, heads=2, reps=2)
    here = bench.attention_scaling([16, 32], isolate=False, **small)
    assert [(r["T"], r["variant"]) for r in here] == [(T, v) for T in (16, 32) for v in bench.ATTENTION_VARIANTS]
    for T in (16, 32):  # same weights, same positions: the same output
        squares = [r["mean_square"] for r in here if r["T"] == T]
        np.testing.assert_allclose(squares, squares[0], rtol=1e-5)
    assert all(len(r["seconds"]) == 2 and r["median_ms"] > 0 for r in here)
    # a fresh process per variant and round: the same numbers out of it
    isolated = bench.attention_scaling([16], variants=("ropelab",), rounds=2, **small)
    (row,) = isolated
    assert row["processes"] == 2 and row["reps"] == 4
    np.testing.assert_allclose(row["mean_square"], here[0]["mean_square"], rtol=1e-6)
    # the full matrix is left out, with the reason, where it would not fit
    monkeypatch.setattr(bench.timing, "available_memory", lambda: 1000)
    got = bench.attention_scaling([16], isolate=False, **small)
    assert [r["variant"] for r in got] == list(bench.ATTENTION_VARIANTS)
    assert got[-1]["note"].startswith("skipped: needs ~") and "median_ms" not in got[-1]
    with pytest.raises(ValueError, match="'sparse'"):
        bench.attention_scaling([16], variants=("sparse",))


def test_decode_steps_keep_the_context_fixed():
    cfg = dict(bench.QUICK, shape=(1, 2, 16, 8), decode_ctx=(5, 9), decode_reps=2, decode_calls=3,
               attn=dict(d_model=16, heads=2))
    rows = bench.decode_steps(torch, cfg, [])
    assert [r["context"] for r in rows] == [5, 9]
    for r in rows:
        assert {"ropelab RotaryEmbedding (positions) us", "ropelab apply_rope_ (positions) us",
                "ropelab Attention step with KV cache ms"} <= set(r)
        assert all(v > 0 for k, v in r.items() if k != "context")


def _script(name):
    path = ROOT / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_attention_script_uses_the_bench(capsys):
    """benchmarks/bench_attention.py is the bench's attention part at other lengths."""
    module = _script("bench_attention")
    assert module.attention_scaling is bench.attention_scaling
    assert module.main(["--T", "32", "--full-T", "0", "--rounds", "1"]) == 0
    printed = capsys.readouterr().out
    assert "-core CPU" in printed and "T=    32 plain" in printed and "T=    32 ropelab" in printed


def test_gpu_bench_script_runs_small(capsys):
    """benchmarks/bench_gpu_rope.py (for machines with a GPU) runs end to end at toy size here."""
    module = _script("bench_gpu_rope")
    results = module.main(["--smoke"])
    printed = capsys.readouterr().out
    rows = next(iter(results["shapes"].values()))
    assert {"copy (floor)", "ropelab in place", "ropelab out of place"} <= set(rows)
    assert all(ms > 0 for ms in rows.values())
    assert "share of the copy bandwidth" in printed and "decode step" in printed
    assert "-core CPU" in printed and "issue" not in printed
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):  # without --smoke it refuses a machine with no GPU
            module.main([])


def test_table_accuracy_script_runs_small(tmp_path, capsys):
    """benchmarks/table_accuracy.py --smoke: every front end's rows within its claimed bound of
    the 120-bit truth, the float32 recipe far from it, the table printed and written."""
    module = _script("table_accuracy")
    out = tmp_path / "accuracy.json"
    results = module.main(["--smoke", "--out", str(out)])
    printed = capsys.readouterr().out
    assert json.loads(out.read_text())["errors"] == results["errors"]
    (table,) = results["errors"].values()
    assert set(table[module.FLOAT32_RECIPE]) == set(module.RANGES)
    for name, errors in table.items():
        worst = max(errors.values())
        if name == module.FLOAT32_RECIPE:
            assert errors["0..2^31-1"] > 1e-2 and errors["-2^31..-1"] > 1e-2
        elif "float64" in name:
            assert worst <= 1e-15, name
        else:
            assert worst <= 3e-7, name
    assert any(name.startswith("torch.compile") for name in table)  # torch is installed here
    assert "| front end | 0..4096 |" in printed and "-core CPU" in printed and "issue" not in printed


def test_table_precision_script_runs_small(capsys):
    """benchmarks/table_precision.py --smoke: ropelab's float64 tables stay near the
    mathematical frequencies' cos/sin at every N; transformers' float32 ones do not."""
    module = _script("table_precision")
    rows = module.main(["--smoke"])
    printed = capsys.readouterr().out
    assert [r["N"] for r in rows] == module.TARGETS
    assert all(r["ropelab"] < 1e-6 for r in rows)
    if importlib.util.find_spec("transformers") is not None:
        assert rows[-1]["transformers"] > 1e-2
    assert "ropelab (float64)" in printed


def test_rows_bench_script_runs_small(capsys):
    """benchmarks/bench_rows.py: far-position decode, prefill in place, ONNX Runtime
    (skipped with a message where it is not installed), at toy size."""
    module = _script("bench_rows")
    results = module.main(["--smoke"])
    printed = capsys.readouterr().out
    decode, prefill = results["decode"], results["prefill"]
    assert decode["near_us"] > 0 and decode["far_us"] > 0 and decode["ratio"] > 0
    assert decode["far_rss_mib"] >= 0 and decode["near_rss_mib"] >= 0
    assert prefill["copy_ms"] > 0 and prefill["rotate_ms"] > 0
    assert "position 2147483647" in printed and "copy_" in printed and "-core CPU" in printed
    if importlib.util.find_spec("onnxruntime") is None:
        assert results["ort"] is None and "ONNX Runtime skipped" in printed
    else:
        assert results["ort"]["max_diff"] < 1e-5 and results["ort"]["ratio"] > 0
