"""`ropelab lab` end to end on tiny settings: outputs, repeatability, resume, skip, bad arguments."""

import csv
import glob
import json
import os

import pytest

pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytest.importorskip("matplotlib")

from ropelab.cli import main  # noqa: E402
from ropelab.lab import checkpoint, experiment, train  # noqa: E402

TINY = [
    "--schemes", "nope", "rope", "learned",
    "--steps", "6", "--d-model", "16", "--heads", "2", "--layers", "2",
    "--train-len", "12", "--eval-mults", "1", "2", "--batch-size", "4",
    "--eval-examples", "4", "--symbols", "20", "--checkpoint-every", "2",
    "--no-progress", "--threads", "1", "--jobs", "1",
]


def _lab(out, *extra):
    task = [] if "--tasks" in extra or "--text" in extra else ["--tasks", "copy"]
    return main(["lab", "--out", str(out), *TINY, *task, *extra])


def _values(out):
    return [(r["scheme"], r["extension"], r["eval_len"], r["metric"], r["value"])
            for r in json.load(open(os.path.join(out, "results.json")))]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab") / "out"
    assert _lab(out) == 0
    return out


def test_outputs(first_run, capsys):
    rows = json.load(open(first_run / "results.json"))
    keys = {(r["scheme"], r["extension"], r["eval_len"]) for r in rows}
    want = {(s, "none", n) for s in ("nope", "rope", "learned") for n in (12, 24)}
    want |= {("rope", e, n) for e in ("linear", "ntk", "yarn") for n in (12, 24)}
    assert keys == want
    assert len(rows) == 2 * len(want)  # exact_match and token_accuracy
    for r in rows:
        assert r["task"] == "copy" and r["train_len"] == 12 and r["seed"] == 0
        if r["scheme"] == "learned" and r["eval_len"] > 12:
            assert r["value"] is None and "12 positions" in r["note"]
        else:
            assert 0.0 <= r["value"] <= 1.0 and r["note"] == ""
    with open(first_run / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert [(t["scheme"], t["extension"], int(t["eval_len"]), t["metric"]) for t in table] == [
        (r["scheme"], r["extension"], r["eval_len"], r["metric"]) for r in rows
    ]
    with open(first_run / "results.png", "rb") as f:
        assert f.read(4) == b"\x89PNG"
    runs = glob.glob(str(first_run / "runs" / "*"))
    assert len(runs) == 3
    for folder in runs:
        names = os.listdir(folder)
        assert "model.safetensors" in names and "train.json" in names
        assert not [n for n in names if n.startswith(("ckpt-", ".tmp-"))]  # checkpoints cleaned up


def test_scheme_list_and_lengths_are_normalised():
    import argparse

    from ropelab.lab import cli
    from ropelab.lab.contenders import available_contenders

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    settings = cli.settings_from_args(parser.parse_args(["--schemes", "all", "--eval-mults", "1,2", "2", "4"]))
    assert settings.schemes == available_contenders()
    assert settings.eval_mults == (1, 2, 4)
    settings = cli.settings_from_args(parser.parse_args(["--schemes", "rope,nope", "alibi"]))
    assert settings.schemes == ("rope", "nope", "alibi")


def test_table_is_printed(tmp_path, capsys):
    out = tmp_path / "o"
    assert _lab(out, "--schemes", "rope", "--extensions", "yarn") == 0
    text = capsys.readouterr().out
    assert "copy: exact_match by evaluation length" in text
    assert any(line.startswith("rope+yarn") for line in text.splitlines())
    assert "rope+ntk" not in text


def test_same_seed_repeats_exactly_and_another_seed_differs(first_run, tmp_path):
    assert _lab(tmp_path / "again") == 0
    assert _values(tmp_path / "again") == _values(first_run)
    a = json.load(open(glob.glob(str(first_run / "runs" / "copy-rope-*" / "train.json"))[0]))
    assert _lab(tmp_path / "seed1", "--seed", "1", "--schemes", "rope", "--extensions", "none") == 0
    b = json.load(open(glob.glob(str(tmp_path / "seed1" / "runs" / "copy-rope-*" / "train.json"))[0]))
    assert a["losses"] != b["losses"]


def test_worker_processes_give_the_same_results(first_run, tmp_path):
    assert _lab(tmp_path / "jobs", "--jobs", "2") == 0  # argparse: the last --jobs wins
    assert _values(tmp_path / "jobs") == _values(first_run)


def test_rerun_skips_finished_work(first_run, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    def no_evaluation(*args, **kwargs):
        raise AssertionError("a finished evaluation was run again")

    before = _values(first_run)
    monkeypatch.setattr(experiment, "train", no_training)
    monkeypatch.setattr(experiment, "evaluate", no_evaluation)
    assert _lab(first_run) == 0
    assert _values(first_run) == before


def test_new_lengths_reuse_trained_models(first_run, tmp_path, monkeypatch):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(first_run, out)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(experiment, "train", no_training)
    args = [*TINY, "--tasks", "copy"]
    i = args.index("--eval-mults")
    args[i + 1 : i + 3] = ["1", "2", "3"]
    assert main(["lab", "--out", str(out), *args]) == 0
    assert {r["eval_len"] for r in json.load(open(out / "results.json"))} == {12, 24, 36}


class _Killed(Exception):
    pass


def test_interrupted_run_resumes_with_nothing_lost(first_run, tmp_path, monkeypatch):
    out = tmp_path / "killed"
    calls = []

    def kill_in_second_run(step):
        calls.append(step)
        if len(calls) == 6 + 3:  # step 3 of the second model (rope)
            raise _Killed

    monkeypatch.setattr(train, "_after_step", kill_in_second_run)
    with pytest.raises(_Killed):
        _lab(out)
    (nope,) = glob.glob(str(out / "runs" / "copy-nope-*"))
    (rope,) = glob.glob(str(out / "runs" / "copy-rope-*"))
    assert os.path.exists(os.path.join(nope, "model.safetensors"))  # the finished run is kept
    assert sorted(n for n in os.listdir(rope) if n.startswith("ckpt-")) == ["ckpt-0000002.json", "ckpt-0000002.safetensors"]
    assert not os.path.exists(os.path.join(rope, "model.safetensors"))
    nope_mtime = os.path.getmtime(os.path.join(nope, "model.safetensors"))

    monkeypatch.setattr(train, "_after_step", lambda step: None)
    resumed_from = []
    real_latest = checkpoint.latest

    def spy(folder, model, optimizer, steps):
        restored = real_latest(folder, model, optimizer, steps)
        resumed_from.append(None if restored is None else restored.step)
        return restored

    monkeypatch.setattr(checkpoint, "latest", spy)
    assert _lab(out) == 0
    assert resumed_from == [2, None]  # rope from its step-2 checkpoint, learned from scratch
    assert os.path.getmtime(os.path.join(nope, "model.safetensors")) == nope_mtime
    assert _values(out) == _values(first_run)
    losses = lambda root: json.load(open(glob.glob(str(root / "runs" / "copy-rope-*" / "train.json"))[0]))["losses"]  # noqa: E731
    assert losses(out) == losses(first_run)


def test_finetune_records(tmp_path):
    out = tmp_path / "ft"
    assert _lab(out, "--schemes", "rope", "--extensions", "linear", "--finetune-steps", "2") == 0
    rows = json.load(open(out / "results.json"))
    tuned = {(r["extension"], r["eval_len"]) for r in rows if r["finetune_steps"] == 2}
    assert tuned == {("none", 24), ("linear", 24)}
    assert glob.glob(str(out / "runs" / "copy-rope-*" / "ft-linear-24-2" / "model.safetensors"))


# -- bad arguments: a clear message, exit 2, nothing trained ---------------------------------


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--schemes", "bogus"], "unknown scheme 'bogus'"),
        (["--tasks", "bogus"], "unknown task 'bogus'"),
        (["--extensions", "bogus"], "unknown extension 'bogus'"),
        (["--train-len", "4"], "--train-len 4 is too short for the copy task"),
        (["--train-len", "64", "--symbols", "100000", "--eval-mults", "1", "1024"], "exceeds the lab's limit of 32768"),
        (["--eval-mults", "1", "4"], "copy task lengths [48] exceed 41"),
        (["--eval-mults", "1", "x"], "--eval-mults takes integers"),
        (["--eval-mults", "0"], "an entry of --eval-mults must be an integer >= 1, got 0"),
        (["--d-model", "18", "--heads", "4"], "--d-model 18 is not divisible by --heads 4"),
        (["--d-model", "12", "--heads", "4"], "head dimension --d-model / --heads = 3 is odd"),
        (["--steps", "0"], "--steps must be an integer >= 1, got 0"),
        (["--lr", "-1"], "--lr must be a number in (0, 1)"),
        (["--finetune-steps", "-2"], "--finetune-steps must be an integer >= 0"),
        (["--tasks", "copy", "--text", "x.txt"], "--text is given but the lm task is not among --tasks copy"),
        (["--tasks", "copy", "--retrieval-mix", "0.2"], "--retrieval-mix is given but the lm task is not among --tasks copy"),
        (["--schemes", "rope", "rope", "--jobs", "2"], "--schemes names a scheme twice: rope rope"),
        (["--schemes", "rope,nope", "rope"], "--schemes names a scheme twice: rope nope rope"),
        (["--tasks", "copy", "copy"], "--tasks names a task twice: copy copy"),
        (["--extensions", "yarn", "yarn"], "--extensions names an extension twice: yarn yarn"),
        (["--extensions", "none", "yarn"], "--extensions none stands alone, got none yarn"),
        (["--schemes", "all", "rope"], "--schemes all stands alone, got all rope"),
    ],
)
def test_bad_arguments_stop_before_training(tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    assert _lab(out, *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("ropelab lab: error: ") and message in err
    assert not (out / "runs").exists()


def test_missing_and_empty_text(tmp_path, capsys):
    out = tmp_path / "out"
    assert _lab(out, "--tasks", "lm", "--text", str(tmp_path / "nope.txt")) == 2
    assert "does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert _lab(out, "--text", str(empty)) == 2
    assert f"--text file {str(empty)!r} is empty" in capsys.readouterr().err
    assert not out.exists()


def test_out_that_is_a_file(tmp_path, capsys):
    path = tmp_path / "file"
    path.write_text("x")
    assert _lab(path) == 2
    assert f"--out {str(path)!r} is a file" in capsys.readouterr().err
    assert path.read_text() == "x"


def test_batch_must_split_over_processes(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert _lab(tmp_path / "o") == 2
    assert "--batch-size 4 is not divisible by the 3 processes" in capsys.readouterr().err


def test_text_task_runs_on_a_user_file(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    out = tmp_path / "lm"
    assert _lab(out, "--text", str(text), "--schemes", "rope", "--extensions", "none") == 0
    rows = json.load(open(out / "results.json"))
    assert {(r["task"], r["metric"]) for r in rows} == {("lm", "bits_per_char"), ("lm", "perplexity")}
    for r in rows:
        if r["metric"] == "bits_per_char":
            assert 0 < r["value"] < 9  # below a uniform guess over bytes plus slack


def test_recall_task_runs(tmp_path, capsys):
    out = tmp_path / "recall"
    assert _lab(out, "--tasks", "recall", "--schemes", "alibi", "--extensions", "none") == 0
    rows = json.load(open(out / "results.json"))
    assert [(r["task"], r["eval_len"], r["metric"]) for r in rows] == [
        ("recall", 12, "accuracy"), ("recall", 12, "exact_match"),
        ("recall", 24, "accuracy"), ("recall", 24, "exact_match"),
    ]
    assert all(0 <= r["value"] <= 1 for r in rows)
    assert "recall: accuracy by evaluation length" in capsys.readouterr().out
