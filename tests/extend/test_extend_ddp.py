"""`torchrun --nproc_per_node 2 -m ropelab extend` (windows and prompts shared out over
two processes, gloo) gives one process's results: every number, and the same search."""

import json
import os
import socket
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_matches_one_process(tiny_checkpoint, held_out, tmp_path):
    args = ["extend", tiny_checkpoint, "--text", held_out, "--lengths", "1x", "4x", "--eval-tokens", "300",
            "--passkey-trials", "3", "--passkey-depths", "0", "0.5", "--passkey-digits", "3",
            "--passkey-needle", "key {key}. ", "--passkey-question", "key", "--search-budget", "5",
            "--search-population", "4", "--search-tokens", "300", "--batch-size", "2", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "ropelab", *args, "--out", str(tmp_path / "one")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
         "-m", "ropelab", *args, "--out", str(tmp_path / "two")],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert two.returncode == 0, two.stderr
    assert "2 processes" in two.stdout
    a = json.loads((tmp_path / "one" / "results.json").read_text())
    b = json.loads((tmp_path / "two" / "results.json").read_text())
    assert a["longrope"]["factors"] == b["longrope"]["factors"]
    assert a["longrope"]["value"] == pytest.approx(b["longrope"]["value"], rel=1e-6)
    assert len(a["records"]) == len(b["records"]) == 14
    for ra, rb in zip(a["records"], b["records"], strict=True):
        assert (ra["scheme"], ra["length"], ra["tokens"]) == (rb["scheme"], rb["length"], rb["tokens"])
        assert ra["bits_per_token"] == pytest.approx(rb["bits_per_token"], rel=1e-6)
        assert ra["passkey_accuracy"] == rb["passkey_accuracy"]
