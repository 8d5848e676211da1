"""``ropelab inspect``: every preset and a config.json print their schedule; a PNG only with --out."""

from __future__ import annotations

import json
import math
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from ropelab_testing import reference_inv_freq

import ropelab
from ropelab.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _table(stdout: str) -> list[list[str]]:
    """The rows of the plain table: pair, freq, wavelength, rotations, unscaled, ratio, change."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("----"))
    rows = []
    for line in lines[start + 1 :]:
        if line.startswith("plot:") or not line.strip():
            break
        rows.append(line.split())
    return rows


def _inspect(capsys, *args):
    code = main(["inspect", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", sorted(ropelab.PRESETS))
def test_every_preset(capsys, tmp_path, name):
    code, out, err = _inspect(capsys, name, "--out", str(tmp_path), "--plain")
    assert code == 0, err
    cfg = ropelab.preset(name)
    assert f"model            : {name}" in out
    assert f"rotary_dim       : {cfg.rotary_dim}" in out
    assert f"layout           : {cfg.layout}" in out
    rows = _table(out)
    assert len(rows) == cfg.rotary_dim // 2
    assert [int(r[0]) for r in rows] == list(range(cfg.rotary_dim // 2))
    # the unscaled column is RoFormer's theta ** (-2i/R), computed here independently
    np.testing.assert_allclose(
        [float(r[4]) for r in rows], reference_inv_freq(cfg.theta, cfg.rotary_dim), rtol=1e-4
    )
    # wavelength = 2 pi / frequency, ratio = frequency / unscaled, as printed (4 significant digits)
    freq = np.array([float(r[1]) for r in rows])
    np.testing.assert_allclose([float(r[2]) for r in rows], 2 * np.pi / freq, rtol=1e-3)
    np.testing.assert_allclose(
        [float(r[5]) for r in rows], freq / [float(r[4]) for r in rows], rtol=1e-3, atol=1e-4
    )
    assert {r[-1] for r in rows} <= {"kept", "interpolated", "blended", "raised"}
    png = out.strip().splitlines()[-1].removeprefix("plot: ")
    with open(png, "rb") as fh:
        assert fh.read(8) == PNG_MAGIC
    assert png.startswith(str(tmp_path))


def test_rich_output(capsys, tmp_path):
    pytest.importorskip("rich")
    code, out, _ = _inspect(capsys, "llama-3.1-8b", "--out", str(tmp_path))
    assert code == 0
    assert "attention factor" in out and "interpolated" in out and "kept" in out
    assert out.strip().splitlines()[-1].endswith(".png")


def test_llama3_words_follow_wavelength_bands(capsys, tmp_path):
    """Llama 3.1: wavelength < L0/4 kept, > L0/1 interpolated (divided by 8), between blended."""
    _, out, _ = _inspect(capsys, "llama-3.1-8b", "--no-plot", "--plain")
    rows = _table(out)
    wavelength = 2 * np.pi / reference_inv_freq(5e5, 128)
    expect = np.where(
        wavelength < 8192 / 4, "kept", np.where(wavelength > 8192, "interpolated", "blended")
    )
    assert [r[-1] for r in rows] == list(expect)
    # rotations completed within the original context: L0 / scaled wavelength
    freq = np.array([float(r[1]) for r in rows])
    np.testing.assert_allclose([float(r[3]) for r in rows], 8192 * freq / (2 * np.pi), rtol=1e-3)


def _write_config(tmp_path, data, name="config.json"):
    path = tmp_path / "my-model" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


YARN_JSON = {
    "model_type": "qwen2",
    "hidden_size": 1024,
    "num_attention_heads": 16,
    "max_position_embeddings": 32768,
    "rope_theta": 10000.0,
    "rope_scaling": {
        "type": "yarn",
        "factor": 4.0,
        "original_max_position_embeddings": 8192,
        "beta_fast": 16,
        "beta_slow": 2,
    },
}


def test_config_json(capsys, tmp_path):
    path = _write_config(tmp_path, YARN_JSON)
    out_dir = tmp_path / "plots"
    code, out, err = _inspect(capsys, str(path), "--out", str(out_dir), "--plain")
    assert code == 0, err
    assert "model            : my-model" in out
    assert "original context : 8192 tokens" in out
    assert f"attention factor : {0.1 * math.log(4) + 1:.6g}" in out
    rows = _table(out)
    assert len(rows) == 32
    # YaRN keeps pairs turning more than beta_fast times in L0, divides those below beta_slow by 4
    rotations = 8192 * reference_inv_freq(1e4, 64) / (2 * np.pi)
    words = [r[-1] for r in rows]
    assert all(w == "kept" for w, n in zip(words, rotations, strict=True) if n > 16 * 1.5)
    assert all(w == "interpolated" for w, n in zip(words, rotations, strict=True) if n < 2 / 1.5)
    assert "blended" in words
    assert (out_dir / "inspect-my-model.png").read_bytes()[:8] == PNG_MAGIC
    # a folder holding config.json works too
    code, out2, _ = _inspect(capsys, str(path.parent), "--no-plot", "--plain")
    assert code == 0 and _table(out2) == rows


def test_seq_len_selects_longrope_factors(capsys):
    cfg = ropelab.preset("phi-3-mini-128k")
    for seq_len in (4096, 4097):
        code, out, _ = _inspect(
            capsys, "phi-3-mini-128k", "--no-plot", "--plain", "--seq-len", str(seq_len)
        )
        assert code == 0
        np.testing.assert_allclose(
            [float(r[1]) for r in _table(out)], cfg.inv_freq(seq_len), rtol=1e-4
        )
        assert f"seq_len          : {seq_len}" in out


# ---------------------------------------------------------------- errors: exit code 2


def test_unknown_preset(capsys):
    code, _, err = _inspect(capsys, "llama-9000", "--no-plot")
    assert code == 2
    assert "'llama-9000'" in err and "llama-3.1-8b" in err


def test_unreadable_file(capsys, tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json")
    code, _, err = _inspect(capsys, str(path), "--no-plot")
    assert code == 2
    assert "config.json" in err and "cannot read" in err


def test_json_not_an_object(capsys, tmp_path):
    path = _write_config(tmp_path, [1, 2, 3])
    code, _, err = _inspect(capsys, str(path), "--no-plot")
    assert code == 2 and "list" in err


def test_invalid_rope_config(capsys, tmp_path):
    path = _write_config(
        tmp_path,
        {
            "hidden_size": 256,
            "num_attention_heads": 4,
            "rope_scaling": {"type": "wobble", "factor": 2},
        },
    )
    code, _, err = _inspect(capsys, str(path), "--no-plot")
    assert code == 2 and "'wobble'" in err


def test_bad_seq_len(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["inspect", "llama-2-7b", "--seq-len", "0"])
    assert exc.value.code == 2
    assert "'0'" in capsys.readouterr().err


# ---------------------------------------------------------------- optional dependencies

BLOCKER = textwrap.dedent(
    """
    import sys
    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"No module named {name!r} (blocked by the test)")
    sys.meta_path.insert(0, _Block())
    """
)


def test_missing_matplotlib_names_the_extra(tmp_path):
    code = (
        "BLOCKED = {'matplotlib'}\n"
        + BLOCKER
        + textwrap.dedent(
            f"""
        from ropelab.cli import main
        from ropelab.inspect import plot_schedule, schedule
        try:
            plot_schedule(schedule("llama-2-7b"), {str(tmp_path)!r})
        except ImportError as err:
            print("ImportError:", err)
        print("rc", main(["inspect", "llama-2-7b", "--plain", "--out", {str(tmp_path)!r}]))
        """
        )
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "ImportError:" in proc.stdout and "ropelab[plot]" in proc.stdout
    # named before any work: no table, exit 2, and the way around it
    assert "rc 2" in proc.stdout and "head_dim" not in proc.stdout
    assert proc.stderr.startswith("ropelab inspect: error:")
    assert "ropelab[plot]" in proc.stderr and "leave out --out" in proc.stderr
    # without --out nothing is plotted, so nothing needs matplotlib
    code = "BLOCKED = {'matplotlib'}\n" + BLOCKER + "from ropelab.cli import main\nprint('rc', main(['inspect', 'llama-2-7b', '--plain']))\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "rc 0" in proc.stdout and "head_dim" in proc.stdout, proc.stderr


def test_files_only_where_told(capsys, tmp_path, monkeypatch):
    """Without --out, inspect prints and writes nothing; --no-plot keeps --out unwritten."""
    monkeypatch.chdir(tmp_path)
    code, out, _ = _inspect(capsys, "llama-3.1-8b", "--plain")
    assert code == 0 and _table(out) and "plot:" not in out
    assert list(tmp_path.iterdir()) == []
    code, out, _ = _inspect(capsys, "llama-3.1-8b", "--plain", "--out", "plots", "--no-plot")
    assert code == 0 and "plot:" not in out and not (tmp_path / "plots" / "inspect-llama-3.1-8b.png").exists()
    code, out, _ = _inspect(capsys, "llama-3.1-8b", "--plain", "--out", "plots")
    assert code == 0 and out.strip().splitlines()[-1] == f"plot: {pathlib.Path('plots') / 'inspect-llama-3.1-8b.png'}"
    assert (tmp_path / "plots" / "inspect-llama-3.1-8b.png").read_bytes()[:8] == PNG_MAGIC


def test_inspect_imports_no_framework(tmp_path):
    code = textwrap.dedent(
        f"""
        import sys
        from ropelab.cli import main
        assert main(["inspect", "deepseek-v3", "--out", {str(tmp_path)!r}]) == 0
        print(sorted(m for m in ("torch", "jax", "flax", "transformers") if m in sys.modules))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_change_words(capsys, tmp_path):
    # per-pair divisors 1, 0.5, 2, 4: kept, raised (frequency up), blended, interpolated (the strongest)
    data = {
        "hidden_size": 32,
        "num_attention_heads": 4,
        "max_position_embeddings": 400,
        "original_max_position_embeddings": 100,
        "rope_scaling": {
            "type": "longrope",
            "short_factor": [1, 0.5, 2, 4],
            "long_factor": [1, 1, 1, 1],
        },
    }
    path = _write_config(tmp_path, data)
    code, out, _ = _inspect(capsys, str(path), "--no-plot", "--plain", "--seq-len", "50")
    assert code == 0
    rows = _table(out)
    assert [r[-1] for r in rows] == ["kept", "raised", "blended", "interpolated"]
    np.testing.assert_allclose([float(r[5]) for r in rows], [1, 2, 0.5, 0.25])


def test_dynamic_default_seq_len(capsys, tmp_path):
    # dynamic NTK is shown at factor x the original length unless --seq-len says otherwise
    data = {
        "model_type": "llama",
        "hidden_size": 256,
        "num_attention_heads": 4,
        "max_position_embeddings": 2048,
        "rope_theta": 10000.0,
        "rope_scaling": {"type": "dynamic", "factor": 2.0},
    }
    path = _write_config(tmp_path, data)
    code, out, _ = _inspect(capsys, str(path), "--no-plot", "--plain")
    assert code == 0 and "seq_len          : 4096" in out
    # growth 2 * 4096 / 2048 - 1 = 3: the base becomes theta * 3 ** (R / (R - 2))
    expect = reference_inv_freq(1e4 * 3.0 ** (64 / 62), 64)
    np.testing.assert_allclose([float(r[1]) for r in _table(out)], expect, rtol=1e-4)
    words = [r[-1] for r in _table(out)]
    assert words[0] == "kept" and words[-1] == "interpolated" and set(words[1:-1]) == {"blended"}


def test_python_m_ropelab_inspect(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ropelab",
            "inspect",
            "gpt-neox-20b",
            "--plain",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "rotary_dim       : 24 (12 pairs)" in proc.stdout
    assert (tmp_path / "inspect-gpt-neox-20b.png").read_bytes()[:8] == PNG_MAGIC
    bad = subprocess.run(
        [sys.executable, "-m", "ropelab", "inspect", "no-such-model"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "'no-such-model'" in bad.stderr
