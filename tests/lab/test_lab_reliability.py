"""`ropelab lab` trusts nothing it reads and leaves nothing behind.

Crafted checkpoints are refused before torch sees them (and the run falls back to the
previous one), a glob in --out touches nothing else, workers end with their parent,
a second run on a locked --out exits 2 naming the holder, a NaN loss gives null
results and exit 1, every I/O error is one line naming the file.
"""

import errno
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import ropelab.files

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytest.importorskip("matplotlib")

from safetensors.torch import load_file, save_file  # noqa: E402

from ropelab.cli import main  # noqa: E402
from ropelab.lab import checkpoint, report, store, train  # noqa: E402
from ropelab.lab.errors import OutInUse  # noqa: E402
from ropelab.lab.lock import lock_out  # noqa: E402

TINY = [
    "--tasks", "copy", "--schemes", "nope", "rope", "--extensions", "yarn",
    "--steps", "6", "--d-model", "16", "--heads", "2", "--layers", "2",
    "--train-len", "12", "--eval-mults", "1", "2", "--batch-size", "4",
    "--eval-examples", "4", "--symbols", "20", "--checkpoint-every", "2",
    "--no-progress", "--threads", "1", "--jobs", "1",
]


def _lab(out, *extra):
    return main(["lab", "--out", str(out), *TINY, *extra])


def _strict(path):
    def refuse(name):
        raise ValueError(f"{name} in {path}")

    with open(path) as f:
        return json.load(f, parse_constant=refuse)


def _values(out):
    return [(r["scheme"], r["extension"], r["eval_len"], r["metric"], r["value"]) for r in _strict(os.path.join(out, "results.json"))]


def _losses(out, scheme):
    (folder,) = [f for f in os.listdir(os.path.join(out, "runs")) if f.startswith(f"copy-{scheme}-")]
    return _strict(os.path.join(out, "runs", folder, "train.json"))["losses"]


def _run_folder(out, scheme):
    (folder,) = [f for f in os.listdir(os.path.join(out, "runs")) if f.startswith(f"copy-{scheme}-")]
    return os.path.join(out, "runs", folder)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    assert _lab(out) == 0
    return out


class _Killed(BaseException):
    pass


def _killed_at(monkeypatch, out, step_of_rope):
    """Run until rope's step ``step_of_rope`` (nope first: 6 steps), then stop as a kill would."""
    calls = []

    def hook(step):
        calls.append(step)
        if len(calls) == 6 + step_of_rope:
            raise _Killed

    monkeypatch.setattr(train, "_after_step", hook)
    with pytest.raises(_Killed):
        _lab(out)
    monkeypatch.setattr(train, "_after_step", lambda step: None)


# -- crafted checkpoints: refused before use, the previous one used instead ---------------


def _tiny_model():
    from ropelab.torch.transformer import Transformer, TransformerConfig

    torch.manual_seed(0)
    return Transformer(TransformerConfig(13, d_model=16, num_heads=2, layers=("rope", "nope")))


def _two_checkpoints(folder):
    """A folder with good checkpoints at steps 2 and 4 of a 10-step run."""
    model = _tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
    x = torch.randint(0, 13, (2, 5))
    for step in range(1, 5):
        model(x).sum().backward()
        opt.step()
        opt.zero_grad()
        if step % 2 == 0:
            checkpoint.save(str(folder), step, model, opt, [1.0] * step)


def _edit_tensors(path, change):
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        metadata = f.metadata()
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path, metadata=metadata)


def _edit_json(path, change):
    with open(path) as f:
        meta = json.load(f)
    change(meta)
    with open(path, "w") as f:
        f.write(json.dumps(meta))


def _set(key, value):
    def change(t):
        t[key] = value(t)

    return change


def _symlink_elsewhere(st, js):
    outside = os.path.join(os.path.dirname(os.path.dirname(st)), "outside.safetensors")
    shutil.copy(st, outside)
    os.unlink(st)
    os.symlink(outside, st)


def _older_under_newer_name(st, js):
    older = st.replace("0000004", "0000002")
    shutil.copy(older, st)  # step-2 tensors under the step-4 name (the JSON says 4)


CRAFTED = {
    # tensors of the wrong dtype, shape or name
    "int64 weight": lambda st, js: _edit_tensors(st, _set("model.embed.weight", lambda t: t["model.embed.weight"].long())),
    "float16 weight": lambda st, js: _edit_tensors(st, _set("model.embed.weight", lambda t: t["model.embed.weight"].half())),
    "extra optim.999": lambda st, js: _edit_tensors(st, _set("optim.999.exp_avg", lambda t: torch.zeros(3))),
    "missing weight": lambda st, js: _edit_tensors(st, lambda t: t.pop("model.embed.weight")),
    "undersized exp_avg": lambda st, js: _edit_tensors(st, _set("optim.0.exp_avg", lambda t: torch.zeros(3))),
    "oversized exp_avg_sq": lambda st, js: _edit_tensors(
        st, _set("optim.0.exp_avg_sq", lambda t: torch.zeros(t["optim.0.exp_avg_sq"].numel() + 5))
    ),
    "rng state of another size": lambda st, js: _edit_tensors(st, _set("rng.torch", lambda t: t["rng.torch"][:100].clone())),
    # values
    "NaN weight": lambda st, js: _edit_tensors(st, _set("model.embed.weight", lambda t: t["model.embed.weight"] * math.nan)),
    "inf exp_avg": lambda st, js: _edit_tensors(st, _set("optim.1.exp_avg", lambda t: t["optim.1.exp_avg"] + math.inf)),
    "negative exp_avg_sq": lambda st, js: _edit_tensors(st, _set("optim.1.exp_avg_sq", lambda t: -1 - t["optim.1.exp_avg_sq"])),
    "optimizer step of another step": lambda st, js: _edit_tensors(st, _set("optim.0.step", lambda t: t["optim.0.step"] - 1)),
    # the step and the losses
    "float step": lambda st, js: _edit_json(js, lambda m: m.update(step=4.0)),
    "step 1e30": lambda st, js: _edit_json(js, lambda m: m.update(step=10**30)),
    "step -100": lambda st, js: _edit_json(js, lambda m: m.update(step=-100)),
    "losses of another length": lambda st, js: _edit_json(js, lambda m: m.update(losses=[1.0] * 3)),
    "NaN loss": lambda st, js: open(js, "w").write('{"step": 4, "losses": [1.0, 1.0, NaN, 1.0]}'),
    "tensors of another step": _older_under_newer_name,
    # the files themselves
    "truncated tensors": lambda st, js: open(st, "r+b").truncate(os.path.getsize(st) // 2),
    "garbage header size": lambda st, js: open(st, "r+b").write(b"\xff" * 8),
    "not JSON": lambda st, js: open(js, "w").write("{step: 4"),
    "symlinked tensors": _symlink_elsewhere,
}


@pytest.mark.parametrize("name", list(CRAFTED))
def test_crafted_checkpoint_is_refused_and_the_previous_one_used(tmp_path, capsys, name):
    folder = tmp_path / "run"
    folder.mkdir()
    _two_checkpoints(folder)
    st, js = str(folder / "ckpt-0000004.safetensors"), str(folder / "ckpt-0000004.json")
    CRAFTED[name](st, js)
    model = _tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    restored = checkpoint.latest(str(folder), model, opt, steps=10)
    assert restored is not None and restored.step == 2
    err = capsys.readouterr().err
    assert err.startswith("ropelab lab: checkpoint refused: ") and "ckpt-0000004" in err and "resuming from step 2" in err
    assert err.count("\n") == 1  # one line
    assert not os.path.lexists(st) and not os.path.exists(js)  # removed
    for k, v in model.state_dict().items():  # nothing was applied yet
        assert torch.equal(v, before[k])
    checkpoint.apply(restored, model, opt)
    opt.step()  # a fused AdamW step on what was restored: in bounds


def test_a_pointer_out_of_the_run_folder_is_never_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    _two_checkpoints(outside)
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "checkpoint.json").write_text(json.dumps({"step": 4, "tag": "../outside/ckpt-0000004"}))
    model = _tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
    assert checkpoint.latest(str(folder), model, opt, steps=10) is None


def test_a_crafted_checkpoint_through_the_command_gives_the_uninterrupted_results(reference, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    _killed_at(monkeypatch, out, 5)  # rope has checkpoints at 2 and 4
    rope = _run_folder(out, "rope")
    CRAFTED["undersized exp_avg"](os.path.join(rope, "ckpt-0000004.safetensors"), None)
    capsys.readouterr()
    assert _lab(out) == 0
    err = capsys.readouterr().err
    assert "checkpoint refused" in err and "optim.0.exp_avg has shape [3]" in err and "resuming from step 2" in err
    assert _values(out) == _values(reference)
    assert _losses(out, "rope") == _losses(reference, "rope")


def test_adam_state_layout_check_rejects_what_fused_adamw_would_overrun(tmp_path):
    # the check is what stands between a crafted file and an out-of-bounds write
    model = _tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
    layout = checkpoint.adam_layout(opt)
    p0 = next(iter(model.parameters()))
    assert layout["optim.0.exp_avg"] == (p0.dtype, tuple(p0.shape))


# -- reused files are checked too --------------------------------------------------------


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: open(os.path.join(f, "model.safetensors"), "wb").write(b"garbage"), "trained weights refused"),
        (lambda f: os.unlink(os.path.join(f, "train.json")), "train.json: is missing"),
        (lambda f: _edit_tensors(os.path.join(f, "model.safetensors"),
                                 _set("embed.weight", lambda t: t["embed.weight"] * math.nan)), "holds NaN"),
        (lambda f: open(os.path.join(f, "records.json"), "w").write("[1, 2"), "evaluation records refused"),
        (lambda f: _edit_json(os.path.join(f, "records.json"), lambda m: m["records"][0].update(value="x")), "evaluation records refused"),
    ],
    ids=["garbage weights", "train.json lost", "NaN weights", "corrupt records", "records of the wrong type"],
)
def test_damaged_run_files_are_done_again(reference, tmp_path, capsys, damage, message):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    damage(_run_folder(out, "rope"))
    capsys.readouterr()
    assert _lab(out) == 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert _values(out) == _values(reference)
    assert _losses(out, "rope") == _losses(reference, "rope")


def test_a_kill_between_train_json_and_the_weights_resumes(reference, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real = store.save_tensors

    def die_on_weights(path, tensors, metadata=None):
        if path.endswith("model.safetensors") and "copy-rope-" in path:
            raise _Killed
        return real(path, tensors, metadata)

    monkeypatch.setattr(store, "save_tensors", die_on_weights)
    with pytest.raises(_Killed):
        _lab(out)
    monkeypatch.setattr(store, "save_tensors", real)
    rope = _run_folder(out, "rope")
    assert os.path.exists(os.path.join(rope, "train.json")) and any(n.startswith("ckpt-") for n in os.listdir(rope))
    assert _lab(out) == 0
    assert _values(out) == _values(reference)
    assert not [n for n in os.listdir(rope) if n.startswith(("ckpt-", ".tmp-"))]


# -- --out: globs, the lock, temporaries, settings and results ------------------------------


def test_a_glob_in_out_touches_no_other_folder(reference, tmp_path, monkeypatch):
    plain, globbed = tmp_path / "g1", tmp_path / "g[1]"
    _killed_at(monkeypatch, plain, 5)
    rope = _run_folder(plain, "rope")
    kept = sorted(os.listdir(rope))
    assert "ckpt-0000004.safetensors" in kept
    assert _lab(globbed) == 0  # checkpoints come and go in g[1]...
    assert sorted(os.listdir(rope)) == kept  # ...and g1's stay
    assert _lab(plain) == 0
    assert _values(plain) == _values(reference) == _values(globbed)


def test_a_second_run_on_a_locked_out_names_the_holder_and_exits_2(tmp_path, capsys):
    import socket

    out = tmp_path / "out"
    with lock_out(str(out)):
        assert _lab(out) == 2
        err = capsys.readouterr().err
        assert err.startswith("ropelab lab: error: --out ") and "in use by another ropelab lab run" in err
        assert f"pid {os.getpid()} on {socket.gethostname()}, started " in err
        assert not (out / "runs").exists() and not (out / "settings.json").exists()
        with pytest.raises(OutInUse):
            lock_out(str(out))
    assert _lab(out) == 0  # released: the next run takes it


def test_a_second_process_on_a_locked_out_exits_2(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from ropelab.lab.lock import lock_out; lock_out(sys.argv[1]); "
         "print('locked', flush=True); time.sleep(60)", str(out)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        second = subprocess.run([sys.executable, "-m", "ropelab", "lab", "--out", str(out), *TINY],
                                capture_output=True, text=True, timeout=300,
                                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        assert second.returncode == 2
        assert f"pid {holder.pid} on " in second.stderr and "Traceback" not in second.stderr
    finally:
        holder.kill()
        holder.wait()


def test_stale_temporaries_are_removed_and_links_never_followed(reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (out / ".tmp-results.png").symlink_to(victim)  # the old fixed temporary name
    os.unlink(out / "results.png")
    (out / "results.png").symlink_to(victim)  # an output that is a link
    rope = _run_folder(out, "rope")
    (open(os.path.join(rope, ".tmp-999-deadbeef-records.json"), "w")).write("half")
    assert _lab(out) == 0
    assert victim.read_text() == "keep me"
    assert not (out / "results.png").is_symlink()
    with open(out / "results.png", "rb") as f:
        assert f.read(4) == b"\x89PNG"
    leftovers = [os.path.join(d, n) for d, _, names in os.walk(out) for n in names if n.startswith(".tmp-")]
    assert leftovers == []


def test_write_atomic_refuses_an_existing_temporary_and_makes_0666_less_umask(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    store.write_json(str(path), {"a": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask
    with pytest.raises(ValueError):
        store.write_json(str(path), {"a": math.nan})  # strict JSON
    assert json.load(open(path)) == {"a": 1}


def test_settings_and_results_always_describe_the_same_run(reference, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert _lab(out) == 0
    old = _strict(out / "settings.json")
    calls = []

    def kill_soon(step):
        calls.append(step)
        if len(calls) == 3:
            raise _Killed

    monkeypatch.setattr(train, "_after_step", kill_soon)
    with pytest.raises(_Killed):
        _lab(out, "--seed", "5")  # other settings, interrupted
    new = _strict(out / "settings.json")
    assert new != old and new["seed"] == 5
    for name in report.OUTPUTS:  # the old results went before the settings changed
        assert not (out / name).exists()
    monkeypatch.setattr(train, "_after_step", lambda step: None)
    assert _lab(out) == 0  # back to the reference settings
    assert _strict(out / "settings.json") == old and _values(out) == _values(reference)


# -- a NaN loss: that run's results are null, the others go on, exit 1 -------------------------


def test_a_nan_loss_stops_that_run_only(reference, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    real = train.masked_loss_sum
    calls = []

    def nan_at_rope_step_3(logits, batch):
        calls.append(1)
        loss = real(logits, batch)
        return loss * math.nan if len(calls) == 6 + 3 else loss

    monkeypatch.setattr(train, "masked_loss_sum", nan_at_rope_step_3)
    assert _lab(out) == 1
    captured = capsys.readouterr()
    assert "copy/rope: training stopped, loss nan at step 3" in captured.out
    assert "ropelab lab: error: copy/rope: loss nan at step 3 (its results are null)" in captured.err
    rows = _strict(out / "results.json")  # strict JSON: no NaN anywhere
    for r in rows:
        if r["scheme"] == "rope":
            assert r["value"] is None and r["note"] == "training failed: loss nan at step 3"
        else:
            assert isinstance(r["value"], float)
    assert [r[:4] for r in _values(out)] == [r[:4] for r in _values(reference)]
    assert [r for r in _values(out) if r[0] == "nope"] == [r for r in _values(reference) if r[0] == "nope"]
    csv_text = (out / "results.csv").read_text().lower()
    assert "nan" not in csv_text.replace("training failed: loss nan", "") and "inf" not in csv_text
    rope = _run_folder(out, "rope")
    assert not os.path.exists(os.path.join(rope, "model.safetensors"))
    assert sorted(n for n in os.listdir(rope) if n.startswith("ckpt-")) == ["ckpt-0000002.json", "ckpt-0000002.safetensors"]
    monkeypatch.setattr(train, "masked_loss_sum", real)
    assert _lab(out) == 0  # the rerun resumes from step 2
    assert _values(out) == _values(reference)


def test_results_never_hold_nan_or_infinity(tmp_path):
    rows = [dict(scheme="rope", task="lm", train_len=8, eval_len=n, extension="none", finetune_steps=0,
                 metric="bits_per_char", value=v, seed=0, note="") for n, v in ((8, math.nan), (16, math.inf), (32, 1.5))]
    report.write_results(str(tmp_path), rows)
    got = _strict(tmp_path / "results.json")
    assert [r["value"] for r in got] == [None, None, 1.5]
    assert got[0]["note"] == "measured nan, not a finite number" and got[1]["note"] == "measured inf, not a finite number"


# -- I/O errors: one line naming the file, exit 1 ------------------------------------------


class _FaultyOs:
    """``os`` for ropelab.files (which writes every lab file) with one call failing like a
    full or read-only disk."""

    def __init__(self, call, err):
        self._call, self._err = call, err

    def __getattr__(self, name):
        if name == self._call:
            def fail(*args, **kwargs):
                raise OSError(self._err, os.strerror(self._err))

            return fail
        return getattr(os, name)


@pytest.mark.parametrize("call, err, text", [
    ("write", errno.ENOSPC, "No space left on device"),
    ("open", errno.EROFS, "Read-only file system"),
    ("replace", errno.EIO, "Input/output error"),
])
def test_a_failed_write_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys, call, err, text):
    monkeypatch.setattr(ropelab.files, "os", _FaultyOs(call, err))
    out = tmp_path / "out"
    assert _lab(out) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith(f"ropelab lab: error: cannot write {out}") and lines[-1].endswith(text)
    assert len(lines) == 1


def test_out_that_cannot_be_created(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert _lab(tmp_path / "file" / "sub") == 1
    err = capsys.readouterr().err
    assert err == f"ropelab lab: error: cannot create {tmp_path / 'file' / 'sub'}: Not a directory\n"


def test_unreadable_text_is_a_bad_argument(tmp_path, capsys):
    folder = tmp_path / "d"
    folder.mkdir()
    assert main(["lab", "--out", str(tmp_path / "o"), *TINY[2:], "--tasks", "lm", "--text", str(folder)]) == 2
    assert "is a directory" in capsys.readouterr().err


# -- processes: workers end with their parent; DDP does not wait 30 minutes ------------------


def _children(pid):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_workers_end_within_5_s_of_their_parents_kill(tmp_path):
    args = list(TINY)
    args[args.index("--jobs") + 1] = "2"
    args[args.index("--steps") + 1] = "100000"  # long enough to be killed mid-training
    parent = subprocess.Popen([sys.executable, "-m", "ropelab", "lab", "--out", str(tmp_path / "o"), *args],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    everyone = []
    try:
        deadline = time.monotonic() + 120
        workers = []
        while time.monotonic() < deadline:
            workers = [c for c in _children(parent.pid) if b"spawn_main" in open(f"/proc/{c}/cmdline", "rb").read()]
            if len(workers) == 2 and os.path.isdir(tmp_path / "o" / "runs"):
                break
            time.sleep(0.2)
        assert len(workers) == 2
        time.sleep(2)  # both training
        everyone = workers + [g for w in workers for g in _children(w)] + _children(parent.pid)
        parent.kill()
        parent.wait()
        killed = time.monotonic()
        while time.monotonic() - killed < 5 and any(_alive(p) for p in everyone):
            time.sleep(0.1)
        assert [p for p in everyone if _alive(p)] == []
    finally:
        for p in [parent.pid, *everyone]:  # whatever is left, so a failure leaves no orphan
            if _alive(p):
                os.kill(p, signal.SIGKILL)


def test_the_lifeline_thread_alone_ends_an_orphan(tmp_path):
    # where prctl is missing, the watcher thread is the guard
    code = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', "
        "'import os, sys, time; from ropelab.lab.lifeline import watch_parent; "
        "watch_parent(int(sys.argv[1])); print(os.getpid(), flush=True); time.sleep(60)', str(os.getpid())], "
        "stdout=subprocess.PIPE, text=True)\n"
        "print(child.stdout.readline().strip(), flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        child = int(parent.stdout.readline())
        assert _alive(child)
        parent.kill()
        parent.wait()
        killed = time.monotonic()
        while _alive(child) and time.monotonic() - killed < 5:
            time.sleep(0.05)
        assert not _alive(child)
    finally:
        os.killpg(parent.pid, signal.SIGKILL)


def _timeout_worker(rank, port, result):
    from ropelab.lab.train import setup_distributed

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
    setup_distributed("cpu", timeout_minutes=0.05)  # 3 s
    if rank == 1:
        time.sleep(15)  # stopped, as far as rank 0 can tell
        os._exit(0)
    start = time.monotonic()
    try:
        torch.distributed.barrier()
        outcome = "no error"
    except RuntimeError as err:  # gloo: "Timed out waiting 3000ms for recv operation"
        outcome = str(err)
    with open(result, "w") as f:
        json.dump({"outcome": outcome, "seconds": time.monotonic() - start}, f)
    os._exit(0)


@pytest.mark.slow
def test_ddp_timeout_ends_the_wait_for_a_stopped_process(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = str(tmp_path / "r.json")
    mp.spawn(_timeout_worker, args=(port, result), nprocs=2, join=True)
    got = json.load(open(result))
    assert "Timed out" in got["outcome"] and got["seconds"] < 14, got


def test_ddp_timeout_flag(tmp_path, capsys):
    import argparse

    from ropelab.lab import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert cli.settings_from_args(parser.parse_args([])).ddp_timeout == 10.0
    assert cli.settings_from_args(parser.parse_args(["--ddp-timeout", "0.5"])).ddp_timeout == 0.5
    assert _lab(tmp_path / "o", "--ddp-timeout", "0") == 2
    assert "--ddp-timeout (minutes) must be a finite number > 0 and <= 1e+06, got 0.0" in capsys.readouterr().err


def test_the_reliability_probe_sees_every_write_point(tmp_path):
    """benchmarks/probe_lab_reliability.py kills the lab at each file it moves into place:
    its hook must see the writes of every writer (checkpoints, records, results)."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    probe = os.path.join(repo, "benchmarks", "probe_lab_reliability.py")
    events = tmp_path / "events.txt"
    args = list(TINY)
    args[args.index("--schemes") + 1 : args.index("--extensions")] = ["rope"]
    env = {**os.environ, "PYTHONPATH": os.path.join(repo, "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, probe, "--child", f"count:{events}", "--", "--out", str(tmp_path / "out"), *args],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    seen = events.read_text().splitlines()
    replaced = [e for e in seen if e.startswith("after replace")]
    for name in ("results.json", "train.json", "model.safetensors", "ckpt-"):
        assert any(name in e for e in replaced), (name, seen)
    assert any(e.startswith("after remove") for e in seen), seen  # old checkpoints dropped
    assert len(seen) >= 20, seen
