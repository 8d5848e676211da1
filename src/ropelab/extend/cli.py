"""``ropelab extend FOLDER --text PATH...``: every context-extension scheme on a checkpoint.

Single process: ``ropelab extend FOLDER --text PATH...``. Several processes (the windows
shared out; gloo): ``torchrun --nproc_per_node 2 -m ropelab extend FOLDER ...``.
Exit status 0 on success, 2 for bad arguments (including a folder that is not a
checkpoint ropelab reads), 1 when reading or writing files fails (a damaged checkpoint
file, named), 130 when interrupted (every finished point and search score is kept:
rerun the same command to resume).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

__all__ = ["add_arguments", "run", "settings_from_args"]


def _names(values):
    if values is None:
        return None
    return tuple(n for v in values for n in v.split(",") if n)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .passkey import PasskeySettings
    from .schemes import NAMES
    from .search import SearchSettings
    from .settings import DTYPES, ExtendSettings

    d, p, s = ExtendSettings("", ()), PasskeySettings(), SearchSettings()
    parser.add_argument("folder", metavar="FOLDER", help="a transformers checkpoint folder (config.json, model.safetensors, a tokenizer)")
    parser.add_argument("--text", nargs="+", metavar="PATH", required=True, help="held-out text files (UTF-8): the first --search-fraction of their tokens is the search split, the rest the evaluation split")
    parser.add_argument("--lengths", nargs="+", metavar="L", help=f"lengths: multiples of the original length (4x) or tokens (512) (default: {' '.join(d.lengths)})")
    parser.add_argument("--schemes", nargs="+", metavar="NAME", help=f"schemes: {', '.join(NAMES)} (default: all)")
    parser.add_argument("--out", default=d.out, help=f"folder for results, resumable (default: {d.out})")
    parser.add_argument("--original-length", type=int, help="the length the checkpoint was trained at (default: its scheme's original length, else max_position_embeddings)")
    parser.add_argument("--factor", default="per-length", help="extension factor of every scheme: per-length (L / original at each length) or one number for all lengths, as a shipped config (default: per-length)")
    parser.add_argument("--yarn-beta-fast", type=float, default=d.yarn_beta_fast, help=f"YaRN: pairs turning more often than this within the original length keep their frequency (default: {d.yarn_beta_fast:g})")
    parser.add_argument("--yarn-beta-slow", type=float, default=d.yarn_beta_slow, help=f"YaRN: pairs turning less often are interpolated (default: {d.yarn_beta_slow:g})")
    parser.add_argument("--llama3-low-freq-factor", type=float, default=d.llama3_low_freq_factor, help=f"Llama 3 (default: {d.llama3_low_freq_factor:g})")
    parser.add_argument("--llama3-high-freq-factor", type=float, default=d.llama3_high_freq_factor, help=f"Llama 3 (default: {d.llama3_high_freq_factor:g})")
    parser.add_argument("--stride", type=float, default=d.stride, help=f"sliding-window stride as a fraction of the length: each window scores its last stride tokens (default: {d.stride:g})")
    parser.add_argument("--eval-tokens", type=int, help="tokens scored per length, the same span at every length (default: up to 16384)")
    parser.add_argument("--search-fraction", type=float, default=d.search_fraction, help=f"share of the text's tokens for the LongRoPE search split (default: {d.search_fraction:g})")
    parser.add_argument("--search-length", metavar="L", help="the length LongRoPE factors are searched for (default: the longest length)")
    parser.add_argument("--search-budget", type=int, default=s.budget, help=f"LongRoPE search: candidate evaluations (default: {s.budget})")
    parser.add_argument("--search-population", type=int, default=s.population, help=f"LongRoPE search: population; half are parents, a quarter mutants and a quarter crossovers per generation (default: {s.population})")
    parser.add_argument("--search-keep", type=int, help="LongRoPE search: highest-frequency pairs left at factor 1 (default: the pairs turning more than 32 times within the original length)")
    parser.add_argument("--search-tokens", type=int, default=d.search_tokens, help=f"LongRoPE search: tokens scored per evaluation (default: {d.search_tokens})")
    parser.add_argument("--longrope-factors", metavar="JSON", help="use these LongRoPE long factors instead of searching: a JSON list, the longrope.json an earlier run wrote, or a transformers config.json with a longrope scheme")
    parser.add_argument("--passkey-depths", nargs="+", type=float, help=f"passkey depths: fraction of the filler before the key (default: {' '.join(f'{x:g}' for x in p.depths)})")
    parser.add_argument("--passkey-trials", type=int, default=p.trials, help=f"passkey prompts per length and depth (default: {p.trials})")
    parser.add_argument("--passkey-digits", type=int, default=p.digits, help=f"digits of the key (default: {p.digits})")
    parser.add_argument("--passkey-needle", default=p.needle, help=f"the text hiding the key ({{key}}) (default: {p.needle!r})")
    parser.add_argument("--passkey-question", default=p.question, help=f"the question at the end (default: {p.question!r})")
    parser.add_argument("--passkey-answer", default=p.answer, help=f"the answer after the question ({{key}}) (default: {p.answer!r})")
    parser.add_argument("--write", metavar="FOLDER2", help="write the checkpoint with the chosen scheme in its config.json (transformers' form) and the new max_position_embeddings")
    parser.add_argument("--write-scheme", default="best", help="the scheme to write: a name, or best (lowest bits per token at --write-length) (default: best)")
    parser.add_argument("--write-length", metavar="L", help="the length to write for (default: the longest length)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help=f"windows per forward pass (default: {d.batch_size})")
    parser.add_argument("--dtype", default=d.dtype, choices=DTYPES, help=f"weights and activations (default: {d.dtype})")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to run (default: cuda if present)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the passkey prompts and the search (default: 0)")
    parser.add_argument("--threads", type=int, help="torch CPU threads per process (default: cores / processes)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def settings_from_args(args):
    """A validated ExtendSettings; ValueError naming anything wrong."""
    import torch

    from .passkey import PasskeySettings
    from .schemes import NAMES
    from .search import SearchSettings
    from .settings import ExtendSettings

    if args.factor == "per-length":
        factor = None
    else:
        try:
            factor = float(args.factor)
        except ValueError:
            raise ValueError(f"--factor takes per-length or a number >= 1, got {args.factor!r}") from None
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    passkey = PasskeySettings(
        depths=tuple(args.passkey_depths) if args.passkey_depths else PasskeySettings().depths,
        trials=args.passkey_trials, digits=args.passkey_digits, needle=args.passkey_needle,
        question=args.passkey_question, answer=args.passkey_answer,
    )
    search = SearchSettings(budget=args.search_budget, population=args.search_population, keep=args.search_keep, seed=args.seed)
    settings = ExtendSettings(
        folder=args.folder,
        text=tuple(args.text),
        out=args.out,
        lengths=_names(args.lengths) or ExtendSettings("", ()).lengths,
        schemes=_names(args.schemes) or NAMES,
        factor=factor,
        original_length=args.original_length,
        yarn_beta_fast=args.yarn_beta_fast,
        yarn_beta_slow=args.yarn_beta_slow,
        llama3_low_freq_factor=args.llama3_low_freq_factor,
        llama3_high_freq_factor=args.llama3_high_freq_factor,
        stride=args.stride,
        eval_tokens=args.eval_tokens,
        search_fraction=args.search_fraction,
        batch_size=args.batch_size,
        passkey=passkey,
        search=search,
        search_length=args.search_length,
        search_tokens=args.search_tokens,
        longrope_factors=args.longrope_factors,
        write=args.write,
        write_scheme=args.write_scheme,
        write_length=args.write_length,
        dtype=args.dtype,
        device=device,
        seed=args.seed,
        progress=not args.no_progress,
        threads=args.threads,
    )
    settings.validate()
    return settings


def _error(message: str, code: int) -> int:
    print(f"ropelab extend: error: {message}", file=sys.stderr)
    return code


def run(args) -> int:
    from .._optional import require

    for module in ("torch", "transformers", "safetensors", "tqdm"):
        require(module, feature="ropelab extend")
    import torch

    from ..hf import CheckpointError
    from . import report
    from .dist import setup, teardown
    from .experiment import run_extend

    try:
        settings = settings_from_args(args)
    except (TypeError, ValueError) as err:
        return _error(str(err), 2)
    dist = setup()
    torch.set_num_threads(settings.threads or max(1, (os.cpu_count() or 1) // dist.world))
    start = time.perf_counter()
    try:
        results = run_extend(settings, dist)
    except CheckpointError as err:  # a file's content: before ValueError, which it is too
        return _error(str(err), 1)
    except (FileNotFoundError, NotADirectoryError, ValueError) as err:  # a path or value given is wrong
        return _error(str(err), 2)
    except OSError as err:
        return _error(f"{err}", 1)
    except KeyboardInterrupt:
        return _error("interrupted; rerun the same command to resume", 130)
    finally:
        teardown(dist)
    if dist.is_main:
        print()
        print(report.render_tables(results))
        print(f"\nresults: {os.path.join(settings.out, 'results.json')} (.csv, .png, passkey.png); "
              f"{time.perf_counter() - start:.1f} s"
              + (f"; {dist.world} processes" if dist.world > 1 else ""))
    return 0
