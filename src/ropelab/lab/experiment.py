"""The length-extrapolation experiment: plan the runs, train, evaluate, resume.

Folder layout under ``--out``::

    runs/<task>-<scheme>-<hash>/spec.json         what this run is (the hash is of it)
                                 model.safetensors trained weights (present = trained)
                                 train.json        losses and time
                                 records.json      evaluation records so far
                                 ckpt-*, checkpoint.json   while training
                                 ft-<ext>-<len>/   fine-tuned at a longer length
    results.json, results.csv, results.png         everything, in plan order

A run whose spec hash matches is reused: trained weights are not trained again and
evaluation points already in records.json are not evaluated again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass

import torch

from . import report, store
from .evaluate import evaluate
from .schemes import SCHEMES, Scheme, extended_rope, layer_kinds
from .settings import LabSettings, build_tasks
from .train import DistContext, train

__all__ = ["Run", "plan", "run_lab"]

SPEC_VERSION = 2  # 2: fused AdamW, sinusoid amplitude in the spec


@dataclass(frozen=True)
class Run:
    """One trained model: a scheme on a task."""

    task_name: str
    scheme: Scheme
    spec: dict
    folder: str
    model_config: object  # TransformerConfig

    @property
    def label(self) -> str:
        return f"{self.task_name}/{self.scheme.name}"


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]


def model_config(scheme: Scheme, vocab_size: int, settings: LabSettings):
    from ..torch.transformer import TransformerConfig

    # a learned table holds the training positions only: nothing to say past them
    max_positions = settings.train_len if scheme.absolute == "learned" else max(2048, max(settings.eval_lens))
    return TransformerConfig(
        vocab_size,
        d_model=settings.d_model,
        num_heads=settings.heads,
        layers=layer_kinds(scheme, settings.layers),
        absolute=scheme.absolute,
        max_positions=max_positions,
        kind_options=dict(scheme.kind_options),
        absolute_scale=scheme.absolute_scale,
    )


def plan(settings: LabSettings, tasks: dict) -> list[Run]:
    """Every (task, scheme) run with its spec; builds each model config (so bad settings fail here)."""
    runs = []
    for task_name, task in tasks.items():
        for name in settings.schemes:
            scheme = SCHEMES[name]
            try:
                config = model_config(scheme, task.vocab_size, settings)
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
                    "absolute": scheme.absolute,
                    "max_positions": config.max_positions,
                    "kind_options": scheme.kind_options,
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
            runs.append(Run(task_name, scheme, spec, folder, config))
    return runs


def _build(run: Run, seed: int):
    from ..torch.transformer import Transformer

    torch.manual_seed(seed)
    return Transformer(run.model_config)


def _record(settings, run, eval_len, extension, ft_steps, metric, value, note=""):
    return {
        "scheme": run.scheme.name,
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


class _Records:
    """A run's records.json: records keyed by (extension, eval_len, finetune_steps)."""

    def __init__(self, folder: str, eval_settings: dict):
        self.path = os.path.join(folder, "records.json")
        saved = store.read_json(self.path, {})
        self.eval_settings = eval_settings
        self.records = saved.get("records", []) if saved.get("eval") == eval_settings else []

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


def _train_and_save(model, task, folder, *, length, steps, batch_size, lr, seed, stream, settings, ctx, desc, slot=0):
    """Train (resuming) unless ``folder`` holds final weights; load them either way."""
    weights = os.path.join(folder, "model.safetensors")
    ctx.barrier()
    if os.path.exists(weights):
        store.load_weights(weights, model)
        model.to(ctx.device)
        return None
    os.makedirs(folder, exist_ok=True)
    start, cpu = time.perf_counter(), time.process_time()
    losses = train(
        model, task, length=length, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
        stream=stream, folder=folder, ctx=ctx, checkpoint_every=settings.checkpoint_every,
        progress=settings.progress, desc=desc, position=slot,
    )
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    if ctx.is_main:
        store.save_weights(weights, model)
        store.write_json(
            os.path.join(folder, "train.json"),
            {"steps": steps, "seconds": seconds, "cpu_seconds": cpu, "world": ctx.world, "final_loss": losses[-1], "losses": losses},
        )
        for path in os.listdir(folder):
            if path.startswith("ckpt-") or path == "checkpoint.json":
                os.unlink(os.path.join(folder, path))
    ctx.barrier()
    return losses


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
    if run.scheme.extendable:
        points += [(ext, n, 0) for ext in settings.extensions for n in settings.eval_lens]
        if settings.finetune_steps:
            longer = [n for n in settings.eval_lens if n > settings.train_len]
            points += [(ext, n, settings.finetune_steps) for ext in ("none", *settings.extensions) for n in longer]
    return points


def _evaluate_point(model, task, run, settings, ctx, extension, eval_len, ft_steps):
    base = run.model_config.rope
    if run.scheme.absolute == "learned" and eval_len > run.model_config.max_positions:
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
    return [_record(settings, run, eval_len, extension, ft_steps, m, v) for m, v in values.items()]


def _do_run(run: Run, task, settings: LabSettings, ctx: DistContext, *, slot: int = 0) -> list[dict]:
    """Train (or load) one run, evaluate what is missing; its records. ``slot``: progress bar line."""
    points = _eval_points(settings, run)
    eval_settings = {"eval_examples": settings.eval_examples, "seed": settings.seed}
    book = _Records(run.folder, eval_settings)
    if ctx.is_main:
        os.makedirs(run.folder, exist_ok=True)
        store.write_json(os.path.join(run.folder, "spec.json"), run.spec)
    model = _build(run, settings.seed)
    losses = _train_and_save(
        model, task, run.folder, length=settings.train_len, steps=settings.steps,
        batch_size=settings.batch_size, lr=settings.lr, seed=settings.seed, stream="train",
        settings=settings, ctx=ctx, desc=f"train {run.label}", slot=slot,
    )
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
    for extension, eval_len, ft_steps in tuned:
        _finetune_point(run, task, settings, ctx, model, book, extension, eval_len, ft_steps)
    return book.select(points)


def _finetune_point(run, task, settings, ctx, trained, book, extension, eval_len, ft_steps):
    """Fine-tune the trained RoPE model briefly at ``eval_len`` with ``extension``, then evaluate."""
    folder = os.path.join(run.folder, f"ft-{extension}-{eval_len}-{ft_steps}")
    done = os.path.exists(os.path.join(folder, "model.safetensors"))
    if done and book.has(extension, eval_len, ft_steps):
        return
    model = _build(run, settings.seed)
    model.load_state_dict(trained.state_dict())
    if extension != "none":
        model.set_rope(extended_rope(run.model_config.rope, extension, eval_len / settings.train_len, settings.train_len))
    # the same tokens per step as pre-training, at the longer length
    rows = max(ctx.world, settings.batch_size * settings.train_len // eval_len)
    rows -= rows % ctx.world
    _train_and_save(
        model, task, folder, length=eval_len, steps=ft_steps, batch_size=rows, lr=settings.lr / 3,
        seed=settings.seed, stream=f"finetune-{extension}-{eval_len}", settings=settings, ctx=ctx,
        desc=f"finetune {run.label}+{extension} @{eval_len}",
    )
    if ctx.is_main and not book.has(extension, eval_len, ft_steps):
        values = evaluate(
            model, task, eval_len, seed=settings.seed, num_examples=settings.eval_examples,
            batch_size=settings.batch_size, device=ctx.device,
        )
        book.add([_record(settings, run, eval_len, extension, ft_steps, m, v) for m, v in values.items()])
    ctx.barrier()


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


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def _run_one(settings: LabSettings, index: int, slot: int) -> list[dict]:
    """Worker process: plan again (cheap, deterministic) and do run ``index``."""
    tasks = build_tasks(settings)
    run = plan(settings, tasks)[index]
    return _do_run(run, tasks[run.task_name], settings, DistContext(), slot=slot)


def run_lab(settings: LabSettings, ctx: DistContext | None = None, *, jobs: int = 1, threads: int | None = None) -> list[dict]:
    """Run (or resume) the experiment; write results.json/.csv/.png; return the records.

    ``jobs`` > 1 trains that many models at once in worker processes (single-process
    mode only): tiny models use one core each better than two threads each.
    """
    ctx = ctx or DistContext()
    tasks = build_tasks(settings)
    runs = plan(settings, tasks)
    if ctx.is_main:
        os.makedirs(settings.out, exist_ok=True)
        store.write_json(os.path.join(settings.out, "settings.json"), settings.to_json())
    records = []
    if jobs > 1 and ctx.world == 1 and len(runs) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: forking a process whose OpenMP pool is running can hang
        pool = ProcessPoolExecutor(
            max_workers=min(jobs, len(runs)), mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker, initargs=(threads or torch.get_num_threads(),),
        )
        with pool:
            # longest first, so no worker is left alone with a long run at the end: NoPE
            # layers (no positional op) are the cheap ones
            order = sorted(range(len(runs)), key=lambda i: runs[i].model_config.layers.count("nope"))
            futures = {i: pool.submit(_run_one, settings, i, slot % jobs) for slot, i in enumerate(order)}
            for i in range(len(runs)):  # records in plan order
                records += futures[i].result()
    else:
        for run in runs:
            records += _do_run(run, tasks[run.task_name], settings, ctx)
    if ctx.is_main:
        report.write_results(settings.out, records)
        report.plot(settings.out, records)
    ctx.barrier()
    return records
