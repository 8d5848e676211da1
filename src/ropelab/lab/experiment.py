"""The length-extrapolation experiment: plan the runs, train, evaluate, resume.

Folder layout under ``--out``::

    .lock                                          held by the run using the folder
    runs/<task>-<scheme>-<hash>/spec.json         what this run is (the hash is of it)
                                 model.safetensors trained weights (present = trained)
                                 train.json        losses and time
                                 records.json      evaluation records so far
                                 ckpt-*            while training (the newest two)
                                 ft-<ext>-<len>-<steps>/   fine-tuned at a longer length
    settings.json                                  the settings of the run
    results.json, results.csv, results.png         its results, in plan order

A run whose spec hash matches is reused: trained weights are not trained again and
evaluation points already in records.json are not evaluated again; everything reused
is checked first (:mod:`ropelab.lab.checkpoint`), and what does not fit is done again.
``settings.json`` and the results always describe the same run: results of other
settings are removed before ``settings.json`` changes.

A run whose loss becomes NaN or infinite stops; its results are null with the reason
in the note (:func:`failures` lists them) and the other runs go on.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass

import torch

from ..checks import is_finite_number, is_int
from . import checkpoint, report, store
from .contenders import CONTENDERS, Contender, extended_rope, layer_kinds
from .errors import BadFile, LabError, NonFiniteLoss, warn
from .evaluate import evaluate
from .lock import lock_out
from .settings import LabSettings, build_tasks
from .train import DistContext, train

__all__ = ["FAILED", "Run", "failures", "plan", "run_lab"]

#: the note of every record of a run whose training failed
FAILED = "training failed: "

SPEC_VERSION = 2  # 2: fused AdamW, sinusoid amplitude in the spec


@dataclass(frozen=True)
class Run:
    """One trained model: a scheme on a task."""

    task_name: str
    contender: Contender
    spec: dict
    folder: str
    model_config: object  # TransformerConfig

    @property
    def label(self) -> str:
        return f"{self.task_name}/{self.contender.name}"


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]


def model_config(contender: Contender, vocab_size: int, settings: LabSettings):
    from ..torch.transformer import TransformerConfig

    # only absolute embeddings have a table by position (rotary rows are made per call):
    # a learned table holds the training positions only, nothing to say past them; the
    # sinusoidal one starts at the longest evaluation
    sizes = {}
    if contender.absolute == "learned":
        sizes["max_positions"] = settings.train_len
    elif contender.absolute is not None:
        sizes["max_positions"] = max(2048, max(settings.eval_lens))
    return TransformerConfig(
        vocab_size,
        d_model=settings.d_model,
        num_heads=settings.heads,
        layers=layer_kinds(contender, settings.layers),
        absolute=contender.absolute,
        **sizes,
        kind_options=dict(contender.kind_options),
        absolute_scale=contender.absolute_scale,
    )


def plan(settings: LabSettings, tasks: dict) -> list[Run]:
    """Every (task, scheme) run with its spec; builds each model config (so bad settings fail here)."""
    runs = []
    for task_name, task in tasks.items():
        for name in settings.schemes:
            contender = CONTENDERS[name]
            try:
                config = model_config(contender, task.vocab_size, settings)
            except (ValueError, TypeError) as err:
                raise ValueError(f"scheme {name!r} cannot be built with these settings: {err}") from err
            spec = {
                "version": SPEC_VERSION,
                "task": task.fingerprint(),
                "scheme": name,
                "model": {
                    "d_model": settings.d_model,
                    "heads": settings.heads,
                    "layers": list(config.layers),
                    "absolute": contender.absolute,
                    "max_positions": config.max_positions if contender.absolute else None,
                    "kind_options": contender.kind_options,
                    "absolute_scale": config.absolute_scale,
                },
                "train": {
                    "train_len": settings.train_len,
                    "steps": settings.steps,
                    "batch_size": settings.batch_size,
                    "lr": settings.lr,
                    "seed": settings.seed,
                },
            }
            folder = os.path.join(settings.out, "runs", f"{task_name}-{name}-{_hash(spec)}")
            runs.append(Run(task_name, contender, spec, folder, config))
    return runs


def _build(run: Run, seed: int):
    from ..torch.transformer import Transformer

    torch.manual_seed(seed)
    return Transformer(run.model_config)


def _record(settings, run, eval_len, extension, ft_steps, metric, value, note=""):
    return {
        "scheme": run.contender.name,
        "task": run.task_name,
        "train_len": settings.train_len,
        "eval_len": eval_len,
        "extension": extension,
        "finetune_steps": ft_steps,
        "metric": metric,
        "value": value,
        "seed": settings.seed,
        "note": note,
    }


def _check_records(path: str, saved, run: Run, settings: LabSettings) -> list[dict]:
    """The records of a records.json of this run (BadFile if they are not)."""
    if not isinstance(saved, dict) or not isinstance(saved.get("records"), list):
        raise BadFile(path, "is not a records file (expected eval and records)")
    want = {"scheme": run.contender.name, "task": run.task_name, "train_len": settings.train_len, "seed": settings.seed}
    for r in saved["records"]:
        if not isinstance(r, dict) or set(r) != set(report.FIELDS):
            raise BadFile(path, f"holds a record without the fields {', '.join(report.FIELDS)}")
        if any(r[k] != v for k, v in want.items()):
            raise BadFile(path, f"holds a record of another run ({r['task']}/{r['scheme']}, seed {r['seed']})")
        value = r["value"]
        if value is not None and not is_finite_number(value):
            raise BadFile(path, f"holds a value that is not a finite number or null ({value!r})")
        for key, ok in (("eval_len", is_int), ("finetune_steps", is_int), ("extension", _is_str),
                        ("metric", _is_str), ("note", _is_str)):
            if not ok(r[key]):
                raise BadFile(path, f"holds a record whose {key} is {r[key]!r}")
    return saved["records"]


def _is_str(value) -> bool:
    return isinstance(value, str)


class _Records:
    """A run's records.json: records keyed by (extension, eval_len, finetune_steps)."""

    def __init__(self, run: Run, settings: LabSettings, eval_settings: dict):
        self.path = os.path.join(run.folder, "records.json")
        self.eval_settings = eval_settings
        self.records = []
        try:
            saved = store.read_json(self.path, None)
            if saved is not None and not isinstance(saved, dict):
                raise BadFile(self.path, "is not a records file (expected eval and records)")
            if saved is not None and saved.get("eval") == eval_settings:
                self.records = _check_records(self.path, saved, run, settings)
        except BadFile as bad:
            warn(f"evaluation records refused: {bad}; evaluating again")

    def has(self, extension, eval_len, ft_steps) -> bool:
        return any(
            (r["extension"], r["eval_len"], r["finetune_steps"]) == (extension, eval_len, ft_steps)
            for r in self.records
        )

    def add(self, records: list[dict]) -> None:
        self.records.extend(records)
        store.write_json(self.path, {"eval": self.eval_settings, "records": self.records})

    def select(self, points) -> list[dict]:
        """Records of the planned points, in plan order (a wider earlier run may hold more)."""
        out = []
        for extension, eval_len, ft_steps in points:
            out += [
                r for r in self.records
                if (r["extension"], r["eval_len"], r["finetune_steps"]) == (extension, eval_len, ft_steps)
            ]
        return out


def _reuse_trained(model, folder: str, steps: int, ctx: DistContext) -> bool:
    """Load the trained weights in ``folder`` if they are there and fit (rank 0 decides)."""
    trained = checkpoint.load_final(folder, model, steps) if ctx.is_main else False
    if trained:  # a kill while the finished run's checkpoints were removed leaves some
        checkpoint.remove_checkpoints(folder)
    if not ctx.broadcast_int(int(trained)):
        return False
    if not ctx.is_main:
        try:
            store.load_model_tensors(model, checkpoint.check_final(folder, model, steps))
        except (BadFile, TypeError) as bad:
            raise LabError(f"DDP rank {ctx.rank}: trained weights rank 0 reuses do not fit: {bad}") from None
    return True


def _train_and_save(model, task, folder, *, length, steps, batch_size, lr, seed, stream, settings, ctx, desc, slot=0):
    """Train (resuming) unless ``folder`` holds final weights that fit; load them either way.

    The losses, or None when the weights were reused; NonFiniteLoss if training diverged.
    """
    ctx.barrier()
    if _reuse_trained(model, folder, steps, ctx):
        model.to(ctx.device)
        return None
    if ctx.is_main:
        _makedirs(folder)
    ctx.barrier()
    start, cpu = time.perf_counter(), time.process_time()
    losses = train(
        model, task, length=length, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
        stream=stream, folder=folder, ctx=ctx, checkpoint_every=settings.checkpoint_every,
        progress=settings.progress, desc=desc, position=slot,
    )
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    if ctx.is_main:
        checkpoint.save_final(folder, model, losses, {"seconds": seconds, "cpu_seconds": cpu, "world": ctx.world})
    ctx.barrier()
    return losses


def _makedirs(folder: str) -> None:
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise LabError(f"cannot create {folder}: {err.strerror}") from None


def _say(settings, ctx, message):
    if ctx.is_main:
        if settings.progress:
            from tqdm.auto import tqdm

            tqdm.write(message)
        else:
            print(message, flush=True)


def _eval_points(settings: LabSettings, run: Run):
    """(extension, eval_len, finetune_steps) of every evaluation of this run."""
    points = [("none", n, 0) for n in settings.eval_lens]
    if run.contender.extendable:
        points += [(ext, n, 0) for ext in settings.extensions for n in settings.eval_lens]
        if settings.finetune_steps:
            longer = [n for n in settings.eval_lens if n > settings.train_len]
            points += [(ext, n, settings.finetune_steps) for ext in ("none", *settings.extensions) for n in longer]
    return points


def _finite_records(settings, run, eval_len, extension, ft_steps, values: dict) -> list[dict]:
    """Records of measured values; one that is not finite is null, the note says what it was."""
    out = []
    for metric, value in values.items():
        value = float(value)
        if math.isfinite(value):
            out.append(_record(settings, run, eval_len, extension, ft_steps, metric, value))
        else:
            out.append(_record(settings, run, eval_len, extension, ft_steps, metric, None, f"measured {value}, not a finite number"))
    return out


def _failed_records(settings, run, points, task, reason: str) -> list[dict]:
    return [
        _record(settings, run, eval_len, extension, ft_steps, metric, None, FAILED + reason)
        for extension, eval_len, ft_steps in points
        for metric in task.metric_names
    ]


def failures(records: list[dict]) -> list[str]:
    """One line per run whose training failed (``task/scheme[+extension @length]: reason``)."""
    out = {}
    for r in records:
        if r["note"].startswith(FAILED):
            where = f"{r['task']}/{r['scheme']}"
            if r["finetune_steps"]:
                where += f" fine-tuned with {r['extension']} at {r['eval_len']}"
            out.setdefault(where, r["note"][len(FAILED) :])
    return [f"{where}: {reason}" for where, reason in out.items()]


def _evaluate_point(model, task, run, settings, ctx, extension, eval_len, ft_steps):
    base = run.model_config.rope
    if run.contender.absolute == "learned" and eval_len > run.model_config.max_positions:
        note = (
            f"learned absolute table has {run.model_config.max_positions} positions; "
            f"nothing is learned for positions >= {run.model_config.max_positions}"
        )
        return [_record(settings, run, eval_len, extension, ft_steps, m, None, note) for m in task.metric_names]
    if extension != "none":
        model.set_rope(extended_rope(base, extension, eval_len / settings.train_len, settings.train_len))
    try:
        values = evaluate(
            model, task, eval_len, seed=settings.seed, num_examples=settings.eval_examples,
            batch_size=settings.batch_size, device=ctx.device,
        )
    finally:
        if extension != "none":
            model.set_rope(base)
    return _finite_records(settings, run, eval_len, extension, ft_steps, values)


def _do_run(run: Run, task, settings: LabSettings, ctx: DistContext, *, slot: int = 0) -> list[dict]:
    """Train (or load) one run, evaluate what is missing; its records. ``slot``: progress bar line."""
    points = _eval_points(settings, run)
    eval_settings = {"eval_examples": settings.eval_examples, "seed": settings.seed}
    book = _Records(run, settings, eval_settings) if ctx.is_main else None
    if ctx.is_main:
        _makedirs(run.folder)
        store.write_json(os.path.join(run.folder, "spec.json"), run.spec)
    model = _build(run, settings.seed)
    try:
        losses = _train_and_save(
            model, task, run.folder, length=settings.train_len, steps=settings.steps,
            batch_size=settings.batch_size, lr=settings.lr, seed=settings.seed, stream="train",
            settings=settings, ctx=ctx, desc=f"train {run.label}", slot=slot,
        )
    except NonFiniteLoss as err:
        _say(settings, ctx, f"{run.label}: training stopped, {err}; its results are null")
        return _failed_records(settings, run, points, task, str(err))
    if losses is not None:
        _say(settings, ctx, f"{run.label}: trained {settings.steps} steps, final loss {losses[-1]:.4f}")
    plain = [p for p in points if p[2] == 0]
    tuned = [p for p in points if p[2] > 0]
    if ctx.is_main:
        todo = [p for p in plain if not book.has(*p)]
        if todo:
            bar = _bar(settings, len(todo), f"eval {run.label}", slot)
            for point in todo:
                book.add(_evaluate_point(model, task, run, settings, ctx, *point))
                bar.update(1)
            bar.close()
    ctx.barrier()
    failed = []
    for point in tuned:
        failed += _finetune_point(run, task, settings, ctx, model, book, *point)
    if not ctx.is_main:
        return []
    out = book.select(points)
    for record in failed:  # in plan order, where the point's records would be
        out.append(record)
    return sorted(out, key=lambda r: points.index((r["extension"], r["eval_len"], r["finetune_steps"])))


def _finetune_point(run, task, settings, ctx, trained, book, extension, eval_len, ft_steps) -> list[dict]:
    """Fine-tune the trained RoPE model briefly at ``eval_len`` with ``extension``, then
    evaluate; the point's null records if fine-tuning diverged (else none)."""
    folder = os.path.join(run.folder, f"ft-{extension}-{eval_len}-{ft_steps}")
    recorded = ctx.broadcast_int(int(ctx.is_main and book.has(extension, eval_len, ft_steps)))
    if recorded and os.path.exists(os.path.join(folder, checkpoint.WEIGHTS)):
        return []
    model = _build(run, settings.seed)
    model.load_state_dict(trained.state_dict())
    if extension != "none":
        model.set_rope(extended_rope(run.model_config.rope, extension, eval_len / settings.train_len, settings.train_len))
    # the same tokens per step as pre-training, at the longer length
    rows = max(ctx.world, settings.batch_size * settings.train_len // eval_len)
    rows -= rows % ctx.world
    try:
        _train_and_save(
            model, task, folder, length=eval_len, steps=ft_steps, batch_size=rows, lr=settings.lr / 3,
            seed=settings.seed, stream=f"finetune-{extension}-{eval_len}", settings=settings, ctx=ctx,
            desc=f"finetune {run.label}+{extension} @{eval_len}",
        )
    except NonFiniteLoss as err:
        _say(settings, ctx, f"{run.label}: fine-tuning with {extension} at {eval_len} stopped, {err}; its results are null")
        return _failed_records(settings, run, [(extension, eval_len, ft_steps)], task, str(err))
    if ctx.is_main and not book.has(extension, eval_len, ft_steps):
        values = evaluate(
            model, task, eval_len, seed=settings.seed, num_examples=settings.eval_examples,
            batch_size=settings.batch_size, device=ctx.device,
        )
        book.add(_finite_records(settings, run, eval_len, extension, ft_steps, values))
    ctx.barrier()
    return []


class _NoBar:
    def update(self, n=1):
        pass

    def close(self):
        pass


def _bar(settings, total, desc, slot=0):
    if not settings.progress:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, position=slot)


def _init_worker(threads: int, parent_pid: int) -> None:
    from .lifeline import die_with_parent

    die_with_parent(parent_pid)
    torch.set_num_threads(threads)


def _run_one(settings: LabSettings, index: int, slot: int) -> list[dict]:
    """Worker process: plan again (cheap, deterministic) and do run ``index``."""
    tasks = build_tasks(settings)
    run = plan(settings, tasks)[index]
    return _do_run(run, tasks[run.task_name], settings, DistContext(), slot=slot)


def _settings_json(settings: LabSettings) -> dict:
    return json.loads(json.dumps(settings.to_json()))


def _take_out(settings: LabSettings) -> None:
    """With ``--out`` locked: remove temporaries of killed runs; make ``settings.json``
    describe this run, removing results of other settings first."""
    out = settings.out
    store.clean_temporaries(out)
    path = os.path.join(out, "settings.json")
    try:
        previous = store.read_json(path, None)
    except BadFile:
        previous = None
    if previous != _settings_json(settings):
        for name in report.OUTPUTS:
            store.remove(os.path.join(out, name))
    store.write_json(path, _settings_json(settings))


def _run_pool(settings: LabSettings, runs: list[Run], jobs: int, threads: int) -> list[dict]:
    """The runs in ``jobs`` worker processes (each ends with this process); records in plan order."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    # spawn, not fork: forking a process whose OpenMP pool is running can hang
    pool = ProcessPoolExecutor(
        max_workers=min(jobs, len(runs)), mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker, initargs=(threads, os.getpid()),
    )
    records = []
    try:
        # longest first, so no worker is left alone with a long run at the end: NoPE
        # layers (no positional op) are the cheap ones
        order = sorted(range(len(runs)), key=lambda i: runs[i].model_config.layers.count("nope"))
        futures = {i: pool.submit(_run_one, settings, i, slot % jobs) for slot, i in enumerate(order)}
        for i in range(len(runs)):  # records in plan order
            records += futures[i].result()
    except BrokenProcessPool:
        raise LabError(
            "a worker process ended abruptly (killed, or out of memory); rerun the same command "
            "to resume from the last checkpoints"
        ) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return records


def run_lab(settings: LabSettings, ctx: DistContext | None = None, *, jobs: int = 1, threads: int | None = None) -> list[dict]:
    """Run (or resume) the experiment; write results.json/.csv/.png; return the records.

    ``--out`` is locked for the whole run (:mod:`ropelab.lab.lock`): a second run on it
    fails with :class:`~ropelab.lab.errors.OutInUse`. ``jobs`` > 1 trains that many models
    at once in worker processes (single-process mode only): tiny models use one core
    each better than two threads each. Runs whose training diverged have null records
    (:func:`failures`); a file that cannot be written is a LabError naming it.
    """
    ctx = ctx or DistContext()
    tasks = build_tasks(settings)
    runs = plan(settings, tasks)
    lock, error = None, None
    if ctx.is_main:
        try:
            lock = lock_out(settings.out)
            _take_out(settings)
        except LabError as err:
            error = err
    code = ctx.broadcast_int(0 if error is None else error.code)
    if code:
        if lock is not None:
            lock.release()
        if error is None:  # the other ranks end with rank 0's status; rank 0 says why
            error = LabError("")
            error.code = code
        raise error
    try:
        if jobs > 1 and ctx.world == 1 and len(runs) > 1:
            records = _run_pool(settings, runs, jobs, threads or torch.get_num_threads())
        else:
            records = []
            for run in runs:
                records += _do_run(run, tasks[run.task_name], settings, ctx)
        if ctx.is_main:
            report.write_results(settings.out, records)
            report.plot(settings.out, records)
        ctx.barrier()
    finally:
        if lock is not None:
            lock.release()
    return records
