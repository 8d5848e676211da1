"""``ropelab lab``: train tiny models per positional scheme, test them past their training length.

Single process: ``ropelab lab --out DIR``. Several processes (DDP; gloo on CPU, NCCL
on CUDA): ``torchrun --nproc_per_node 2 -m ropelab lab --out DIR``; the launcher's
environment variables are detected.

Exit status: 0 done; 1 a file could not be read or written (``ropelab lab: error:``
naming it), a run's training diverged (its results are null), a worker died or a DDP
process stopped answering; 2 bad arguments or ``--out`` in use by another run; 130
interrupted (rerun the same command to resume).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

__all__ = ["add_arguments", "run", "settings_from_args"]


def _names(values):
    """``["a,b", "c"]`` -> ``("a", "b", "c")``; None stays None."""
    if values is None:
        return None
    return tuple(n for v in values for n in v.split(",") if n)


def _ints(values, flag):
    names = _names(values)
    if names is None:
        return None
    try:
        return tuple(int(n) for n in names)
    except ValueError:
        raise ValueError(f"{flag} takes integers, got {' '.join(values)!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .contenders import CONTENDERS, EXTENSIONS
    from .settings import DDP_TIMEOUT_MINUTES, SETTINGS_PRESETS, TASKS

    d = SETTINGS_PRESETS["default"]
    parser.add_argument("--out", default="lab-out", help="folder for results and finished runs (default: lab-out)")
    parser.add_argument("--full", action="store_true", help="the larger preset: both tasks, 4 layers of width 128, 4000 steps, lengths to 16x (hours on a CPU; minutes on a GPU)")
    parser.add_argument("--schemes", nargs="+", metavar="NAME", help=f"positional schemes, or all (default: all available of {', '.join(CONTENDERS)})")
    parser.add_argument("--tasks", nargs="+", metavar="NAME", help=f"tasks: {'; '.join(f'{k}: {v}' for k, v in TASKS.items())} (default: {','.join(d['tasks'])})")
    parser.add_argument("--extensions", nargs="+", metavar="NAME", help=f"RoPE inference-time extensions, or none (default: {','.join(EXTENSIONS)})")
    parser.add_argument("--train-len", type=int, help=f"training length in tokens (default: {d['train_len']})")
    parser.add_argument("--eval-mults", nargs="+", metavar="M", help=f"evaluation lengths as multiples of the training length (default: {','.join(map(str, d['eval_mults']))})")
    parser.add_argument("--d-model", type=int, help=f"model width (default: {d['d_model']})")
    parser.add_argument("--layers", type=int, help=f"number of layers (default: {d['layers']})")
    parser.add_argument("--heads", type=int, help=f"attention heads (default: {d['heads']})")
    parser.add_argument("--steps", type=int, help=f"training steps per model (default: {d['steps']})")
    parser.add_argument("--batch-size", type=int, help=f"global batch size (default: {d['batch_size']})")
    parser.add_argument("--lr", type=float, help=f"peak learning rate (default: {d['lr']})")
    parser.add_argument("--finetune-steps", type=int, help="also fine-tune RoPE this many steps at each longer length, per extension (default: 0)")
    parser.add_argument("--eval-examples", type=int, help=f"examples per evaluation (default: {d['eval_examples']})")
    parser.add_argument("--symbols", type=int, help=f"alphabet size of copy (length <= 2*symbols+1) and of recall's keys and values (length <= 4*symbols+1) (default: {d['symbols']})")
    parser.add_argument("--checkpoint-every", type=int, help=f"steps between resumable checkpoints (default: {d['checkpoint_every']})")
    parser.add_argument("--text", nargs="+", metavar="PATH", help="text files for the lm task (default: the Python standard library's .py files)")
    parser.add_argument("--retrieval-mix", type=float, default=0.0, metavar="F", help="lm: make this share of the training windows passkey sequences (filler, 'key 1234. ', filler, 'key 1234'; only the answer scored), so the model learns to retrieve what ropelab extend's passkey test asks (default: 0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and data; the same seed repeats a run exactly (default: 0)")
    parser.add_argument("--jobs", type=int, help="models trained at once in worker processes (default: CPU cores; 1 under torchrun)")
    parser.add_argument("--threads", type=int, help="torch CPU threads per process (default: 1 with several jobs; tiny models run faster so)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to train (default: cuda if present)")
    parser.add_argument("--ddp-timeout", type=float, metavar="MIN", default=DDP_TIMEOUT_MINUTES, help=f"under torchrun: minutes a process waits for the others before the run fails (default: {DDP_TIMEOUT_MINUTES:g})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--export", metavar="FOLDER", help="also write the trained models as transformers checkpoints, FOLDER/<task>-<scheme> (RoPE, iRoPE, NoPE stacks; lm models with their byte tokenizer)")


def settings_from_args(args, world: int = 1):
    """A validated LabSettings from parsed arguments; ValueError (or TypeError) on anything wrong."""
    from .settings import from_preset

    extensions = _names(args.extensions)
    if extensions is not None and "none" in extensions:
        if extensions != ("none",):
            raise ValueError(f"--extensions none stands alone, got {' '.join(extensions)}")
        extensions = ()
    schemes = _names(args.schemes)
    if schemes is not None and "all" in schemes:
        if schemes != ("all",):
            raise ValueError(f"--schemes all stands alone, got {' '.join(schemes)}")
        schemes = None  # the preset's default: every available scheme
    mults = _ints(args.eval_mults, "--eval-mults")
    if mults is not None:
        mults = tuple(dict.fromkeys(mults))  # a length given twice is evaluated once
    tasks = _names(args.tasks)
    if tasks is None and args.text is not None:
        tasks = ("lm",)
    settings = from_preset(
        "full" if args.full else "default",
        out=args.out,
        schemes=schemes,
        tasks=tasks,
        extensions=extensions,
        train_len=args.train_len,
        eval_mults=mults,
        d_model=args.d_model,
        layers=args.layers,
        heads=args.heads,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        finetune_steps=args.finetune_steps,
        eval_examples=args.eval_examples,
        symbols=args.symbols,
        checkpoint_every=args.checkpoint_every,
        text=tuple(args.text) if args.text is not None else None,
        seed=args.seed,
        threads=args.threads,
        jobs=args.jobs,
        device=args.device,
        progress=not args.no_progress,
        ddp_timeout=args.ddp_timeout,
        export=args.export,
        retrieval_mix=args.retrieval_mix,
    )
    settings.validate(world)
    return settings


def run(args) -> int:
    # The lab's tensors are tiny: numba's parallel rotation threads only fight torch's
    # threads for the cores (10x slower steps seen on 2 cores). Before numba loads, the
    # environment sets that for this process and its workers; once numba's threads are
    # launched, changing the variable makes numba's next compile fail, so the runtime
    # setting is used instead (and restored when the lab returns).
    numba = sys.modules.get("numba")
    if numba is None:
        os.environ.setdefault("NUMBA_NUM_THREADS", "1")
        return _run(args)
    threads_before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        return _run(args)
    finally:
        numba.set_num_threads(threads_before)


def _ddp_failure(err: RuntimeError) -> bool:
    """A collective that timed out or lost its peer (gloo raises plain RuntimeErrors)."""
    import torch

    text = str(err)
    return isinstance(err, torch.distributed.DistError) or any(
        s in text for s in ("Timed out", "timed out", "Connection closed", "Connection reset")
    )


def _error(message: str, code: int) -> int:
    if message:
        print(f"ropelab lab: error: {message}", file=sys.stderr, flush=True)
    return code


def _run(args) -> int:
    from ..cli import need

    torch = need("torch", feature="ropelab lab")  # named before any work starts

    from . import report
    from .errors import LabError
    from .experiment import failures, plan, run_lab
    from .settings import build_tasks
    from .train import leave_worker, setup_distributed

    world = int(os.environ.get("WORLD_SIZE", "1"))
    try:
        settings = settings_from_args(args, world)
        if settings.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available")
        plan(settings, build_tasks(settings))  # builds every model config: fails here, not mid-run
    except (TypeError, ValueError) as err:
        return _error(str(err), 2)
    ctx = setup_distributed(settings.device, settings.ddp_timeout)
    cores = os.cpu_count() or 1
    jobs = 1 if ctx.world > 1 or ctx.device != "cpu" else settings.jobs or cores
    threads = settings.threads or max(1, cores // (ctx.world * jobs))
    torch.set_num_threads(threads)
    start = time.perf_counter()
    try:
        records = run_lab(settings, ctx, jobs=jobs, threads=threads)
        ctx.barrier()  # no rank tears gloo down while another still talks (abort at exit)
    except LabError as err:
        code = _error(str(err), err.code)
        if ctx.world > 1:
            leave_worker(code)  # a broken process group can hang the interpreter's exit
        return code
    except KeyboardInterrupt:
        return _error("interrupted; rerun the same command to resume from the last checkpoints", 130)
    except RuntimeError as err:
        if ctx.world == 1 or not _ddp_failure(err):
            raise
        first = str(err).strip().splitlines()[0]
        _error(f"DDP process {ctx.rank}: {first} (another process stopped answering for "
               f"--ddp-timeout {settings.ddp_timeout:g} minutes, or ended)", 1)
        leave_worker(1)
    if ctx.world > 1 and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    failed = failures(records) if ctx.is_main else []
    if ctx.is_main:
        print()
        print(report.render_table(records))
        print(f"results: {os.path.join(settings.out, 'results.json')} (.csv, .png); "
              f"{time.perf_counter() - start:.1f} s; "
              + (f"{ctx.world} DDP processes" if ctx.world > 1 else f"up to {jobs} worker process(es)")
              + f" x {threads} thread(s)")
        if settings.export is not None:
            from .export import export_models

            for label, where in export_models(settings):
                print(f"export {label}: {where}")
        for line in failed:
            _error(f"{line} (its results are null)", 1)
    code = 1 if failed else 0
    if ctx.world > 1:
        leave_worker(code)
    return code
