"""``ropelab bench``: the quick run works end to end and reports what it measured."""

from __future__ import annotations

import json

import pytest

from ropelab import RopeConfig, cli, kernels

torch = pytest.importorskip("torch")
bench = pytest.importorskip("ropelab.bench")


def test_quick_bench_runs_and_writes_json_and_png(tmp_path, capsys):
    assert cli.main(["bench", "--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "bench.json").read_text())
    assert (tmp_path / "bench.png").stat().st_size > 0
    assert result["quick"] and result["backend"] == kernels.backend()
    names = {r["name"] for r in result["rope"]}
    for wanted in ("copy_ (memory limit)", "clone()", "ropelab in place", "ropelab out of place",
                   "ropelab op, torch.compile", "rotary-embedding-torch"):
        assert wanted in names
    assert {r["dtype"] for r in result["rope"]} == {"float32", "bfloat16"}
    for r in result["rope"]:
        if "median_ms" in r:
            assert r["median_ms"] > 0 and r["gb_s"] > 0
        else:
            assert r["note"] in printed
    copy = [r for r in result["rope"] if r["name"] == "copy_ (memory limit)"]
    assert all(r["ratio_to_copy"] == 1.0 for r in copy)
    assert len(result["targets"]) == 6  # three ratios per dtype
    assert result["decode"] and all("context" in r for r in result["decode"])
    assert "wrote" in printed


def test_targets_compare_the_right_timings():
    rows = [
        dict(name="copy_ (memory limit)", dtype="float32", median_ms=10.0),
        dict(name="clone()", dtype="float32", median_ms=20.0),
        dict(name="ropelab in place", dtype="float32", median_ms=12.0),
        dict(name="ropelab out of place", dtype="float32", median_ms=40.0),
        dict(name="transformers eager apply_rotary_pos_emb", dtype="float32", median_ms=120.0),
    ]
    got = {t["check"]: (t["value"], t["met"]) for t in bench._targets(rows)}
    assert got["in place / copy_"] == (pytest.approx(1.2), True)
    assert got["transformers eager / in place"] == (pytest.approx(10.0), False)
    assert got["out of place / clone()"] == (pytest.approx(2.0), False)


def test_bench_says_when_numba_is_missing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(kernels.DISABLE_ENV, "1")
    kernels.reset_backend()
    try:
        args = ["bench", "--quick", "--no-compile", "--no-jax", "--no-plot", "--out", str(tmp_path)]
        assert cli.main(args) == 0
    finally:
        monkeypatch.delenv(kernels.DISABLE_ENV)
        kernels.reset_backend()
    printed = capsys.readouterr().out
    assert "reference path" in printed
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["backend"] == "reference"
    assert any("reference path" in n for n in result["notes"])


def test_full_matrix_attention_equals_ropelab_attention():
    """The seed-000 style contender computes the same attention as ropelab's module."""
    attention = pytest.importorskip("ropelab.torch")
    torch.manual_seed(0)
    attn = attention.Attention(32, 4, rope=RopeConfig(8, layout="half")).eval()
    x = torch.randn(2, 9, 32)
    with torch.no_grad():
        torch.testing.assert_close(bench._full_matrix_attention(torch, attn, x), attn(x), atol=1e-5, rtol=1e-5)


def test_peak_rss_sees_an_allocation():
    with bench._PeakRSS() as mem:
        block = torch.ones(64 << 20, dtype=torch.uint8)  # 64 MiB, touched
        del block
    assert mem.bytes >= 32 << 20


def test_gpu_bench_script_runs_small(capsys):
    """benchmarks/bench_gpu_rope.py (for lent GPUs) runs end to end at toy size here."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parents[2] / "benchmarks" / "bench_gpu_rope.py"
    spec = importlib.util.spec_from_file_location("bench_gpu_rope", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main(["--smoke"])
    printed = capsys.readouterr().out
    rows = next(iter(results["shapes"].values()))
    assert {"copy (floor)", "ropelab in place", "ropelab out of place"} <= set(rows)
    assert all(ms > 0 for ms in rows.values())
    assert "targets (issue 7)" in printed and "decode step" in printed
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):  # without --smoke it refuses a machine with no GPU
            module.main([])
