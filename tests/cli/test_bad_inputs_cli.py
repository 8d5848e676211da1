"""The command line's table of bad inputs: each row is an argv (with optional dependencies
hidden), and the command must exit 2 printing ``ropelab <command>: error: ...`` with the
given fragment, and no traceback. To add a case, add a row.

Rows that hide a module run in a child process whose import system refuses it (as if it
were not installed); the others run ``ropelab.cli.main`` in this process.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap

import pytest

from ropelab.cli import main


@dataclasses.dataclass(frozen=True)
class BadCommand:
    id: str
    argv: tuple[str, ...]
    fragment: str
    hide: tuple[str, ...] = ()  # modules to make unimportable
    files: dict | None = None  # name -> JSON content, written in a temporary folder ({tmp} in argv)


BAD_COMMANDS = [
    BadCommand("inspect unknown preset", ("inspect", "llama-9000", "--no-plot"), "'llama-9000' is neither a preset nor a config.json file"),
    BadCommand("inspect bert.json", ("inspect", "{tmp}/bert.json", "--no-plot"), "bert applies no rotary embedding",
               files={"bert.json": {"model_type": "bert", "hidden_size": 768, "num_attention_heads": 12, "max_position_embeddings": 512}}),
    BadCommand("inspect gpt2.json", ("inspect", "{tmp}/gpt2.json", "--no-plot"), "gpt2 applies no rotary embedding",
               files={"gpt2.json": {"model_type": "gpt2", "n_embd": 768, "n_head": 12, "n_positions": 1024}}),
    BadCommand("inspect theta as a string", ("inspect", "{tmp}/c.json", "--no-plot"), "rope_theta must be a number, got '1e4' (str)",
               files={"c.json": {"model_type": "llama", "hidden_size": 256, "num_attention_heads": 4, "rope_theta": "1e4"}}),
    BadCommand("inspect --out /proc/x", ("inspect", "llama-2-7b", "--out", "/proc/x"), "cannot write to --out '/proc/x'"),
    BadCommand("inspect --seq-len 0", ("inspect", "llama-2-7b", "--seq-len", "0"), "argument --seq-len: expected a positive integer, got '0'"),
    BadCommand("inspect without matplotlib", ("inspect", "llama-2-7b", "--out", "{tmp}"), "pip install 'ropelab[plot]'", hide=("matplotlib",)),
    BadCommand("bench --reps 0", ("bench", "--reps", "0"), "argument --reps: expected a positive integer, got '0'"),
    BadCommand("bench --reps -3", ("bench", "--reps", "-3"), "argument --reps: expected a positive integer, got '-3'"),
    BadCommand("bench without torch", ("bench", "--quick"), "pip install 'ropelab[torch]'", hide=("torch",)),
    BadCommand("bench without matplotlib", ("bench", "--quick", "--out", "{tmp}"), "bench.png (or pass --no-plot)", hide=("matplotlib",)),
    BadCommand("bench --out /proc/x", ("bench", "--quick", "--no-plot", "--out", "/proc/x"), "cannot write to --out '/proc/x'"),
    BadCommand("figures --head-dim 7", ("figures", "--head-dim", "7"), "argument --head-dim: the value must be even"),
    BadCommand("figures --theta 1", ("figures", "--theta", "1"), "argument --theta: the value must be a finite number > 1"),
    BadCommand("figures --lengths 0", ("figures", "--lengths", "0"), "argument --lengths: the value must be an integer >= 1"),
    BadCommand("figures without matplotlib", ("figures",), "pip install 'ropelab[plot]'", hide=("matplotlib",)),
    BadCommand("figures --out /proc/x", ("figures", "--out", "/proc/x"), "cannot write to --out '/proc/x'"),
    BadCommand("lab without torch", ("lab", "--out", "{tmp}/lab"), "ropelab lab needs the optional dependency 'torch'", hide=("torch",)),
    BadCommand("lab --steps 0", ("lab", "--out", "{tmp}/lab", "--steps", "0"), "--steps must be an integer >= 1, got 0"),
    BadCommand("lab --lr 2", ("lab", "--out", "{tmp}/lab", "--lr", "2"), "--lr must be a number in (0, 1), got 2.0"),
    BadCommand("lab --eval-mults 0", ("lab", "--out", "{tmp}/lab", "--eval-mults", "0"), "an entry of --eval-mults must be an integer >= 1, got 0"),
]

_HIDE = textwrap.dedent(
    """
    import sys
    HIDDEN = set(sys.argv[1].split(","))
    class _Hide:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HIDDEN:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name.split(".")[0])
    sys.meta_path.insert(0, _Hide())
    from ropelab.cli import main
    sys.exit(main(sys.argv[2:]))
    """
)


def run_command(argv, *, hide=(), capsys=None) -> tuple[int, str]:
    """(exit code, stderr) of ``ropelab argv``."""
    if hide:
        proc = subprocess.run(
            [sys.executable, "-c", _HIDE, ",".join(hide), *argv],
            capture_output=True,
            text=True,
            timeout=300,
        )
        return proc.returncode, proc.stderr
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", BAD_COMMANDS, ids=[c.id for c in BAD_COMMANDS])
def test_bad_command(case: BadCommand, tmp_path, capsys):
    for name, content in (case.files or {}).items():
        (tmp_path / name).write_text(json.dumps(content))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in case.argv]
    code, err = run_command(argv, hide=case.hide, capsys=capsys)
    command = case.argv[0]
    assert code == 2, err
    assert "Traceback" not in err, err
    assert f"ropelab {command}: error: " in err, err
    assert case.fragment in err, err


def test_lab_help_without_torch():
    """The lab's parser imports no framework: its help prints where torch is missing."""
    proc = subprocess.run(
        [sys.executable, "-c", _HIDE, "torch", "lab", "--help"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage: ropelab lab" in proc.stdout and "--train-len" in proc.stdout and "copy:" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_closed_pipe_ends_quietly(tmp_path):
    # `ropelab inspect ... | head -1`: the reader leaves after one line, long before the
    # table (8192 rows, more than a pipe holds) is written
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "llama", "head_dim": 16384, "num_attention_heads": 1}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "ropelab", "inspect", str(config), "--no-plot", "--plain"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert proc.returncode in (0, 1)
