"""Reliability probe of ``ropelab lab``: faults of every kind on tiny settings, counted.

    python benchmarks/probe_lab_reliability.py [--work DIR] [--only CLASS ...] [--json PATH]

Classes (each run of the lab is a fresh ``python -m ropelab lab`` process):

- ``kill``: ``kill -9`` at every write point of a run (before and after each file is
  moved into place, after each file is removed), then a rerun; the rerun's results and
  losses must equal an uninterrupted run's, with no temporaries or checkpoints left.
- ``crafted``: 16 crafted checkpoints (wrong dtypes, shapes or names, non-finite values,
  bad steps, truncated or linked files, a pointer out of the folder) put in place of the
  newest checkpoint of a killed run; each must be refused (one line) or never read, and
  the rerun's results equal the uninterrupted run's.
- ``parent``: ``kill -9`` of the parent of a ``--jobs 2`` run; processes it started
  still alive 5 s later are orphans; the rerun must give the uninterrupted results.
- ``concurrent``: pairs of runs started together on one ``--out`` (one must exit 2
  naming the other), on ``g[1]`` and ``g1``, and on one ``--out`` with other settings.
- ``disk``: read-only and full file systems (small tmpfs mounts, where this user may
  mount), corrupt JSON and safetensors files of a finished run, links, an ``--out`` that
  is a file or under one, an unreadable ``--text``.
- ``nan``: a NaN loss in one run: exit 1, strict JSON, that run null, the rerun exact.
- ``ddp``: under torchrun, one process stops (SIGSTOP) mid-training; the other must
  fail within ``--ddp-timeout`` (here 0.1 minutes), not torch's 30 minutes.

A traceback on stderr is counted as a crash in every class. Prints counts per class.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(REPO, "src")

TINY = [
    "--tasks", "copy", "--schemes", "nope", "rope", "--extensions", "yarn",
    "--steps", "6", "--d-model", "16", "--heads", "2", "--layers", "2",
    "--train-len", "12", "--eval-mults", "1", "2", "--batch-size", "4",
    "--eval-examples", "4", "--symbols", "20", "--checkpoint-every", "2",
    "--no-progress", "--threads", "1", "--jobs", "1",
]
TRACEBACK = "Traceback (most recent call last)"


def _with(args, **changes):
    """``args`` with ``--flag value`` pairs replaced (``schemes=["rope"]`` for lists)."""
    args = list(args)
    for flag, value in changes.items():
        name = "--" + flag.replace("_", "-")
        if name not in args:
            args.append(name)
        i = args.index(name)
        j = i + 1
        while j < len(args) and not args[j].startswith("--"):
            j += 1
        args[i + 1 : j] = value if isinstance(value, list) else [str(value)]
    return args


def _env():
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}


def _command(args, hook=None):
    if hook is None:
        return [sys.executable, "-m", "ropelab", "lab", *args]
    return [sys.executable, os.path.abspath(__file__), "--child", hook, "--", *args]


def lab(out, args, hook=None, timeout=900):
    """Run the lab once; (returncode, stdout, stderr)."""
    done = subprocess.run(_command(["--out", str(out), *args], hook), env=_env(), capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout, done.stderr


def _strict_json(path):
    def refuse(name):
        raise ValueError(f"{name} in {path}")

    with open(path) as f:
        return json.load(f, parse_constant=refuse)


def snapshot(out):
    """What must not change: every result and every run's losses."""
    rows = _strict_json(os.path.join(out, "results.json"))
    losses = {}
    runs = os.path.join(out, "runs")
    for name in sorted(os.listdir(runs)):
        path = os.path.join(runs, name, "train.json")
        if os.path.exists(path):
            losses[name] = _strict_json(path)["losses"]
    return [(r["scheme"], r["extension"], r["eval_len"], r["metric"], r["value"], r["note"]) for r in rows], losses


def leftovers(out):
    """Temporaries anywhere, checkpoints in finished runs."""
    found = []
    for folder, _, names in os.walk(out):
        for name in names:
            if name.startswith(".tmp-") or (name.startswith("ckpt-") and os.path.exists(os.path.join(folder, "model.safetensors"))):
                found.append(os.path.join(folder, name))
    return found


class Tally:
    """Counts of one class, printed as ``name: key n, key n``."""

    def __init__(self, name):
        self.name, self.counts, self.notes = name, {}, []

    def add(self, key, n=1):
        self.counts[key] = self.counts.get(key, 0) + n

    def note(self, text):
        self.notes.append(text)
        print(f"  [{self.name}] {text}", flush=True)

    def line(self):
        return f"{self.name}: " + ", ".join(f"{k} {v}" for k, v in self.counts.items())


def _crashed(rc, err):
    return TRACEBACK in err or rc not in (0, 1, 2)


# -- the child: the lab with a fault hook, in this process -------------------------------------


class _OsWithHook:
    """``os`` for the lab's writers (``ropelab.files``, ``ropelab.lab.store``): calls
    ``hook(event, path)`` around replace and unlink."""

    def __init__(self, hook):
        self._hook = hook

    def __getattr__(self, name):
        return getattr(os, name)

    def replace(self, src, dst):
        self._hook("before replace", dst)
        os.replace(src, dst)
        self._hook("after replace", dst)

    def unlink(self, path):
        os.unlink(path)
        self._hook("after remove", path)


def _child(hook: str, lab_args: list[str]) -> int:
    kind, _, arg = hook.partition(":")
    import ropelab.files as files
    import ropelab.lab.store as store
    import ropelab.lab.train as train

    def hook_writes(on_event):
        # every file the lab moves into place goes through ropelab.files; the store removes
        files.os = store.os = _OsWithHook(on_event)

    if kind in ("count", "kill"):
        events = []

        def on_event(event, path):
            events.append(f"{event} {os.path.relpath(path, lab_args[lab_args.index('--out') + 1])}")
            if kind == "count":
                with open(arg, "a") as f:
                    f.write(events[-1] + "\n")
            elif len(events) == int(arg):
                os.kill(os.getpid(), signal.SIGKILL)

        hook_writes(on_event)
    elif kind == "kill-after":  # kill once a file whose path holds every |-separated part is in place
        def on_event(event, path):
            if event == "after replace" and all(part in path for part in arg.split("|")):
                os.kill(os.getpid(), signal.SIGKILL)

        hook_writes(on_event)
    elif kind == "nan-at":  # the loss of the arg-th training step of the whole run is NaN
        real, calls = train.masked_loss_sum, []

        def poisoned(logits, batch):
            calls.append(1)
            loss = real(logits, batch)
            return loss * float("nan") if len(calls) == int(arg) else loss

        train.masked_loss_sum = poisoned
    elif kind == "stop-rank":  # rank R stops itself (SIGSTOP) after step S
        rank, step = (int(v) for v in arg.split(","))
        if int(os.environ.get("RANK", "0")) == rank:
            def stop(done):
                if done == step:
                    os.kill(os.getpid(), signal.SIGSTOP)

            train._after_step = stop
    else:
        raise SystemExit(f"unknown hook {hook!r}")
    from ropelab.cli import main

    return main(["lab", *lab_args])


# -- the classes ------------------------------------------------------------------------------


def probe_kill(work, args):
    t = Tally("kill -9 at write points")
    ref_out = os.path.join(work, "kill-ref")
    rc, _, err = lab(ref_out, args)
    assert rc == 0, err
    reference = snapshot(ref_out)
    count_file = os.path.join(work, "events.txt")
    rc, _, err = lab(os.path.join(work, "count"), args, hook=f"count:{count_file}")
    assert rc == 0, err
    events = open(count_file).read().splitlines()
    t.add("points", len(events))
    for k, event in enumerate(events, 1):
        out = os.path.join(work, f"kill-{k}")
        rc, _, err = lab(out, args, hook=f"kill:{k}")
        if rc != -signal.SIGKILL:
            t.add("not killed")
            t.note(f"point {k} ({event}): exit {rc}")
            continue
        rc, _, err = lab(out, args)
        if _crashed(rc, err) or rc != 0:
            t.add("rerun failed")
            t.note(f"point {k} ({event}): rerun exit {rc}: {err.strip()[-300:]}")
        elif snapshot(out) != reference:
            t.add("different results")
            t.note(f"point {k} ({event}): results differ")
        elif leftovers(out):
            t.add("left files behind")
            t.note(f"point {k} ({event}): {leftovers(out)}")
        else:
            t.add("identical")
        t.add("tracebacks", int(TRACEBACK in err))
        shutil.rmtree(out)
    return t


def _crafts():
    """name -> function(folder of the rope run, scratch folder) tampering ckpt-0000004."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    def tensors(change):
        def craft(folder, scratch):
            path = os.path.join(folder, "ckpt-0000004.safetensors")
            with safe_open(path, "pt") as f:
                metadata = f.metadata()
            ts = load_file(path)
            change(ts)
            save_file(ts, path, metadata=metadata)

        return craft

    def meta(change):
        def craft(folder, scratch):
            path = os.path.join(folder, "ckpt-0000004.json")
            m = json.load(open(path))
            change(m)
            open(path, "w").write(json.dumps(m))

        return craft

    def setter(key, fn):
        return lambda ts: ts.__setitem__(key, fn(ts))

    def moved_weights(folder):
        """A valid checkpoint of this run, its weights moved: used, it would change the results."""
        path = os.path.join(folder, "ckpt-0000004.safetensors")
        with safe_open(path, "pt") as f:
            metadata = f.metadata()
        ts = load_file(path)
        ts["model.embed.weight"] = ts["model.embed.weight"] + 0.5
        return ts, metadata

    def pointer_outside(folder, scratch):
        ts, metadata = moved_weights(folder)
        outside = os.path.join(scratch, "elsewhere")
        os.makedirs(outside, exist_ok=True)
        save_file(ts, os.path.join(outside, "ckpt-0000004.safetensors"), metadata=metadata)
        shutil.copy(os.path.join(folder, "ckpt-0000004.json"), os.path.join(outside, "ckpt-0000004.json"))
        for ext in ("json", "safetensors"):
            os.unlink(os.path.join(folder, f"ckpt-0000004.{ext}"))
        rel = os.path.relpath(os.path.join(outside, "ckpt-0000004"), folder)
        open(os.path.join(folder, "checkpoint.json"), "w").write(json.dumps({"step": 4, "tag": rel}))

    def symlinked(folder, scratch):
        ts, metadata = moved_weights(folder)
        outside = os.path.join(scratch, "linked.safetensors")
        save_file(ts, outside, metadata=metadata)
        path = os.path.join(folder, "ckpt-0000004.safetensors")
        os.unlink(path)
        os.symlink(outside, path)

    def older_as_newer(folder, scratch):
        shutil.copy(os.path.join(folder, "ckpt-0000002.safetensors"), os.path.join(folder, "ckpt-0000004.safetensors"))

    def truncate(folder, scratch):
        path = os.path.join(folder, "ckpt-0000004.safetensors")
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)

    return {
        "int64 weights": tensors(setter("model.embed.weight", lambda ts: ts["model.embed.weight"].long())),
        "float16 weights": tensors(setter("model.embed.weight", lambda ts: ts["model.embed.weight"].half())),
        "extra optim.999 key": tensors(setter("optim.999.exp_avg", lambda ts: torch.zeros(3))),
        "float step": meta(lambda m: m.update(step=4.0)),
        "oversized exp_avg_sq": tensors(setter("optim.0.exp_avg_sq", lambda ts: torch.zeros(ts["optim.0.exp_avg_sq"].numel() + 7))),
        "undersized exp_avg (3 elements)": tensors(setter("optim.0.exp_avg", lambda ts: torch.zeros(3))),
        "NaN weights": tensors(setter("model.embed.weight", lambda ts: ts["model.embed.weight"] * float("nan"))),
        "inf in exp_avg": tensors(setter("optim.1.exp_avg", lambda ts: ts["optim.1.exp_avg"] + float("inf"))),
        "negative exp_avg_sq": tensors(setter("optim.1.exp_avg_sq", lambda ts: -1 - ts["optim.1.exp_avg_sq"])),
        "a weight missing": tensors(lambda ts: ts.pop("model.embed.weight")),
        "step 1e30": meta(lambda m: m.update(step=10**30)),
        "step -100": meta(lambda m: m.update(step=-100)),
        "tensors of step 2 named step 4": older_as_newer,
        "pointer with ../ to a valid checkpoint elsewhere": pointer_outside,
        "symlink to a valid checkpoint elsewhere": symlinked,
        "truncated safetensors": truncate,
    }


def probe_crafted(work, reference, args):
    t = Tally("crafted checkpoints")
    template = os.path.join(work, "template")
    rc, _, err = lab(template, args, hook="kill-after:copy-rope-|ckpt-0000004.json")
    assert rc == -signal.SIGKILL, (rc, err)
    (rope,) = [n for n in os.listdir(os.path.join(template, "runs")) if n.startswith("copy-rope-")]
    for name, craft in _crafts().items():
        out = os.path.join(work, "crafted")
        shutil.copytree(template, out, symlinks=True)
        scratch = tempfile.mkdtemp(dir=work)
        craft(os.path.join(out, "runs", rope), scratch)
        rc, _, err = lab(out, args)
        refused = "checkpoint refused" in err
        if _crashed(rc, err) or rc < 0:
            t.add("crashed")
            t.note(f"{name}: exit {rc}")
        elif rc != 0:
            t.add("run failed")
            t.note(f"{name}: exit {rc}: {err.strip()[-300:]}")
        elif snapshot(out) != reference:
            t.add("accepted (results changed)")
            t.note(f"{name}: results differ")
        elif refused:
            t.add("refused, fell back")
            t.note(f"{name}: {next(line for line in err.splitlines() if 'checkpoint refused' in line)}")
        else:
            t.add("never read (results unchanged)")
            t.note(f"{name}: not read; the run resumed from the newest checkpoint of its own folder")
        t.add("tracebacks", int(TRACEBACK in err))
        shutil.rmtree(out)
        shutil.rmtree(scratch)
    return t


def _descendants(pid):
    """Every process under ``pid`` (from /proc)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        out += kids
        todo += kids
    return out


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def probe_parent(work, trials=3):
    t = Tally("parent kill with --jobs 2")
    args = _with(TINY, steps=300, checkpoint_every=50, jobs=2)
    ref_out = os.path.join(work, "parent-ref")
    rc, _, err = lab(ref_out, args)
    assert rc == 0, err
    reference = snapshot(ref_out)
    for trial in range(trials):
        out = os.path.join(work, f"parent-{trial}")
        proc = subprocess.Popen(_command(["--out", out, *args]), env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        deadline = time.monotonic() + 300
        started = []
        while time.monotonic() < deadline:
            started = _descendants(proc.pid)
            workers = [p for p in started if b"spawn_main" in open(f"/proc/{p}/cmdline", "rb").read()]
            runs = os.path.join(out, "runs")
            ckpts = [n for d in (os.listdir(runs) if os.path.isdir(runs) else []) for n in os.listdir(os.path.join(runs, d)) if n.startswith("ckpt-")]
            if len(workers) == 2 and ckpts:
                break
            time.sleep(0.1)
        started = _descendants(proc.pid)
        time.sleep(0.3 * trial)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed = time.monotonic()
        while time.monotonic() - killed < 5 and any(_alive(p) for p in started):
            time.sleep(0.05)
        orphans = [p for p in started if _alive(p)]
        t.add("processes started", len(started))
        t.add("orphans after 5 s", len(orphans))
        if not orphans:
            t.note(f"trial {trial}: {len(started)} processes ended {time.monotonic() - killed:.2f} s after the kill")
        for p in orphans:
            os.kill(p, signal.SIGKILL)
        rc, _, err = lab(out, args)
        if _crashed(rc, err) or rc != 0:
            t.add("rerun failed")
            t.note(f"trial {trial}: rerun exit {rc}: {err.strip()[-300:]}")
        elif snapshot(out) != reference:
            t.add("different results")
        else:
            t.add("rerun identical")
        t.add("tracebacks", int(TRACEBACK in err))
    # a worker killed (as by the out-of-memory killer): the parent says so and ends, nothing left
    out = os.path.join(work, "worker-kill")
    proc = subprocess.Popen(_command(["--out", out, *args]), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline, workers = time.monotonic() + 300, []
    while time.monotonic() < deadline and len(workers) < 2:
        workers = [p for p in _descendants(proc.pid) if b"spawn_main" in open(f"/proc/{p}/cmdline", "rb").read()]
        time.sleep(0.1)
    time.sleep(1)
    started = _descendants(proc.pid)
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    time.sleep(1)
    left = [p for p in started if _alive(p)]
    line = err.strip().splitlines()[-1] if err.strip() else ""
    good = proc.returncode == 1 and "worker process ended abruptly" in line and not left
    t.add("worker kill: parent exits 1 and says so, nothing left" if good else "worker kill: unclear or left processes")
    t.add("tracebacks", int(TRACEBACK in err))
    t.note(f"worker killed: exit {proc.returncode}: {line}; {len(left)} processes left")
    for p in left:
        os.kill(p, signal.SIGKILL)
    rc, _, err = lab(out, args)
    t.add("rerun identical" if rc == 0 and snapshot(out) == reference else "rerun differs")
    return t


def _pair(out_a, out_b, args_a, args_b):
    a = subprocess.Popen(_command(["--out", out_a, *args_a]), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    b = subprocess.Popen(_command(["--out", out_b, *args_b]), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = []
    for p in (a, b):
        stdout, stderr = p.communicate(timeout=900)
        out.append((p.returncode, stdout, stderr))
    return out


def probe_concurrent(work, reference, args, pairs=5):
    t = Tally("concurrent runs")
    busy = _with(args, checkpoint_every=1)
    for i in range(pairs):
        out = os.path.join(work, f"same-{i}")
        results = _pair(out, out, busy, busy)
        codes = sorted(rc for rc, _, _ in results)
        crashed = any(_crashed(rc, err) for rc, _, err in results)
        t.add("pairs on one --out")
        t.add("crashes", int(crashed))
        t.add("tracebacks", sum(TRACEBACK in err for _, _, err in results))
        if codes == [0, 2]:
            loser = next(err for rc, _, err in results if rc == 2)
            named = "in use by another ropelab lab run (pid " in loser
            t.add("one ran, one exited 2 naming the holder" if named else "exit 2 without the holder")
        elif codes == [0, 0]:
            t.add("both 0 (did not overlap)")
        else:
            t.note(f"pair {i}: exits {codes}: {[err.strip()[-200:] for _, _, err in results]}")
        rc, _, err = lab(out, args)  # finish whatever the loser would have done
        t.add("identical after" if rc == 0 and snapshot(out) == reference else "different after")
    g_glob, g_plain = os.path.join(work, "g[1]"), os.path.join(work, "g1")
    results = _pair(g_glob, g_plain, busy, busy)
    ok = all(rc == 0 and not _crashed(rc, err) for rc, _, err in results)
    same = ok and snapshot(g_glob) == reference and snapshot(g_plain) == reference
    t.add("g[1] beside g1: both exact" if same else "g[1] beside g1: failed")
    t.add("crashes", sum(_crashed(rc, err) for rc, _, err in results))
    t.add("tracebacks", sum(TRACEBACK in err for _, _, err in results))
    for i in range(2):
        out = os.path.join(work, f"other-{i}")
        results = _pair(out, out, busy, _with(busy, seed=1))
        t.add("crashes", sum(_crashed(rc, err) for rc, _, err in results))
        t.add("tracebacks", sum(TRACEBACK in err for _, _, err in results))
        settings = _strict_json(os.path.join(out, "settings.json"))
        rows = _strict_json(os.path.join(out, "results.json")) if os.path.exists(os.path.join(out, "results.json")) else []
        consistent = all(r["seed"] == settings["seed"] for r in rows)
        t.add("pairs of other settings: settings.json and results.json agree" if consistent else "settings and results disagree")
    return t


def _mount_tmpfs(path, options):
    os.makedirs(path, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", path], capture_output=True, text=True)
    return done.returncode == 0


def _umount(path):
    subprocess.run(["umount", path], capture_output=True)


def probe_disk(work, reference, args, finished):
    t = Tally("disk faults")

    def expect(label, rc, err, code, text):
        line = err.strip().splitlines()[-1] if err.strip() else ""
        good = rc == code and not _crashed(rc, err) and text in line
        t.add("clear error" if good else "unclear or wrong")
        t.add("tracebacks", int(TRACEBACK in err))
        t.note(f"{label}: exit {rc}: {line}")

    def recover(label, damage, message):
        out = os.path.join(work, "disk-recover")
        shutil.copytree(finished, out, symlinks=True)
        (rope,) = [os.path.join(out, "runs", n) for n in os.listdir(os.path.join(out, "runs")) if n.startswith("copy-rope-")]
        damage(out, rope)
        rc, _, err = lab(out, args)
        good = rc == 0 and not _crashed(rc, err) and snapshot(out) == reference and message in err
        t.add("recovered, said so" if good else "not recovered")
        t.add("tracebacks", int(TRACEBACK in err))
        said = [line for line in err.splitlines() if line.startswith("ropelab lab:")]
        t.note(f"{label}: exit {rc}; {said[0] if said else '(nothing said)'}")
        shutil.rmtree(out)

    mount = os.path.join(work, "mnt")
    if _mount_tmpfs(mount, "size=2m,ro"):
        rc, _, err = lab(os.path.join(mount, "out"), args)
        _umount(mount)
        expect("read-only --out", rc, err, 1, "Read-only file system")
    elif os.geteuid() != 0:
        ro = os.path.join(work, "ro")
        os.makedirs(ro)
        os.chmod(ro, 0o555)
        rc, _, err = lab(os.path.join(ro, "out"), args)
        expect("read-only --out (permissions)", rc, err, 1, "Permission denied")
    else:
        t.add("read-only not probed (no mount)")
    for size in ("64k", "200k"):
        if _mount_tmpfs(mount, f"size={size}"):
            rc, _, err = lab(os.path.join(mount, "out"), args)
            _umount(mount)
            expect(f"full disk ({size} tmpfs)", rc, err, 1, "No space left on device")
        else:
            t.add("full disk not probed (no mount)")
    file_out = os.path.join(work, "a-file")
    open(file_out, "w").write("x")
    rc, _, err = lab(file_out, args)
    expect("--out is a file", rc, err, 2, "is a file")
    rc, _, err = lab(os.path.join(file_out, "sub"), args)
    expect("--out under a file", rc, err, 1, "Not a directory")
    rc, _, err = lab(os.path.join(work, "text-out"), _with(args, tasks="lm") + ["--text", work])
    expect("--text is a folder", rc, err, 2, "is a directory")

    def garbage(name):
        return lambda out, rope: open(os.path.join(rope, name), "wb").write(b"\x00garbage{")

    def victim_link(out, rope):
        victim = os.path.join(work, "victim.txt")
        open(victim, "w").write("keep")
        os.symlink(victim, os.path.join(out, ".tmp-results.png"))
        os.unlink(os.path.join(out, "results.png"))
        os.symlink(victim, os.path.join(out, "results.png"))
        open(os.path.join(rope, ".tmp-123-abc-records.json"), "w").write("half")

    def nan_weights(out, rope):
        from safetensors.torch import load_file, save_file

        path = os.path.join(rope, "model.safetensors")
        ts = load_file(path)
        ts["embed.weight"] = ts["embed.weight"] * float("nan")
        save_file(ts, path, metadata={"format": "pt"})

    def truncate(out, rope):
        path = os.path.join(rope, "model.safetensors")
        with open(path, "r+b") as f:
            f.truncate(100)

    def linked_weights(out, rope):
        path = os.path.join(rope, "model.safetensors")
        outside = os.path.join(work, "outside.safetensors")
        shutil.copy(path, outside)
        os.unlink(path)
        os.symlink(outside, path)

    recover("corrupt settings.json", lambda out, rope: open(os.path.join(out, "settings.json"), "w").write("{"), "")
    recover("corrupt results.json", lambda out, rope: open(os.path.join(out, "results.json"), "w").write("[NaN"), "")
    recover("corrupt records.json", garbage("records.json"), "evaluation records refused")
    recover("corrupt train.json", garbage("train.json"), "trained weights refused")
    recover("corrupt model.safetensors", garbage("model.safetensors"), "trained weights refused")
    recover("truncated model.safetensors", truncate, "trained weights refused")
    recover("NaN in model.safetensors", nan_weights, "holds NaN")
    recover("model.safetensors a symlink", linked_weights, "symbolic link")
    recover("stale and linked temporaries", victim_link, "")
    victim = os.path.join(work, "victim.txt")
    t.add("link target untouched" if open(victim).read() == "keep" else "link target overwritten")
    return t


def probe_nan(work, reference, args):
    t = Tally("NaN loss")
    out = os.path.join(work, "nan")
    rc, stdout, err = lab(out, args, hook="nan-at:9")  # rope's third step (nope trains 6 first)
    t.add("exit 1" if rc == 1 else f"exit {rc}")
    t.add("tracebacks", int(TRACEBACK in err))
    try:
        rows = _strict_json(os.path.join(out, "results.json"))
        t.add("strict JSON")
    except ValueError:
        rows = []
        t.add("NaN in results.json")
    rope = [r for r in rows if r["scheme"] == "rope"]
    t.add("rope null with the reason" if rope and all(r["value"] is None and "loss nan" in r["note"] for r in rope) else "rope not null")
    csv_text = open(os.path.join(out, "results.csv")).read().lower().replace("loss nan", "")
    t.add("NaN/inf in results.csv" if "nan" in csv_text or "inf" in csv_text else "results.csv clean")
    t.note(err.strip().splitlines()[-1] if err.strip() else "(nothing on stderr)")
    rc, _, err = lab(out, args)
    t.add("rerun identical" if rc == 0 and snapshot(out) == reference else "rerun differs")
    return t


def probe_ddp(work, args):
    t = Tally("stopped DDP process")
    out = os.path.join(work, "ddp")
    ddp = _with(args, schemes=["rope"], steps=40, checkpoint_every=10)
    i = ddp.index("--jobs")
    del ddp[i : i + 2]  # one process per rank under torchrun
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
               os.path.abspath(__file__), "--child", "stop-rank:1,5", "--", "--out", out, *ddp, "--ddp-timeout", "0.1"]
    start = time.monotonic()
    proc = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    lines, said_at = [], None
    for line in proc.stderr:  # when the lab says why, not when torchrun is done
        lines.append(line)
        if said_at is None and line.startswith("ropelab lab: error: DDP"):
            said_at = time.monotonic() - start
    proc.wait()
    seconds = time.monotonic() - start
    err = "".join(lines)
    said = [line for line in lines if line.startswith("ropelab lab: error: DDP")]
    t.add("failed within a minute, said why" if said and said_at < 60 else "hung or unclear")
    # torchrun prints its own traceback (ChildFailedError) whenever a process fails
    t.add("tracebacks", err.count(TRACEBACK) - err.count("raise ChildFailedError("))
    t.note(f"the lab said why {said_at or float('nan'):.1f} s after the start (torch's default: 30 min); "
           f"torchrun ended after {seconds:.1f} s (exit {proc.returncode}, it waits 30 s before killing the "
           f"stopped process); {said[0].strip() if said else err.strip()[-300:]}")
    for p in _descendants(proc.pid):
        os.kill(p, signal.SIGKILL)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return t


CLASSES = ("kill", "crafted", "parent", "concurrent", "disk", "nan", "ddp")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", help="scratch folder (default: a new temporary one, removed after)")
    parser.add_argument("--only", nargs="+", choices=CLASSES, help="classes to run (default: all)")
    parser.add_argument("--pairs", type=int, default=5, help="pairs of runs on one --out (default: 5)")
    parser.add_argument("--json", help="write the counts here too")
    args = parser.parse_args(argv)
    work = args.work or tempfile.mkdtemp(prefix="probe-lab-")
    os.makedirs(work, exist_ok=True)
    only = args.only or CLASSES
    start = time.monotonic()
    ref_out = os.path.join(work, "reference")
    rc, _, err = lab(ref_out, TINY)
    if rc != 0:
        print(err)
        return 1
    reference = snapshot(ref_out)
    tallies = []
    steps = {
        "kill": lambda: probe_kill(work, _with(TINY, schemes=["rope"])),
        "crafted": lambda: probe_crafted(work, reference, TINY),
        "parent": lambda: probe_parent(work),
        "concurrent": lambda: probe_concurrent(work, reference, TINY, args.pairs),
        "disk": lambda: probe_disk(work, reference, TINY, ref_out),
        "nan": lambda: probe_nan(work, reference, TINY),
        "ddp": lambda: probe_ddp(work, TINY),
    }
    for name in only:
        print(f"{name} ...", flush=True)
        tallies.append(steps[name]())
        print(tallies[-1].line(), flush=True)
    print()
    print(f"ropelab lab reliability probe ({time.monotonic() - start:.0f} s):")
    for tally in tallies:
        print("  " + tally.line())
    print(f"  tracebacks in all: {sum(t.counts.get('tracebacks', 0) for t in tallies)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({t.name: {"counts": t.counts, "notes": t.notes} for t in tallies}, f, indent=1)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if "--child" in sys.argv:
        i = sys.argv.index("--child")
        sys.exit(_child(sys.argv[i + 1], sys.argv[sys.argv.index("--") + 1 :]))
    sys.exit(main())
