"""An extend run: open the checkpoint, read the text, search LongRoPE, evaluate every
scheme at every length (resuming), report, and write the chosen scheme out.

Folder layout under ``--out``::

    points/<scheme>@<length>.json   one evaluated point, the key it was computed under, a checksum
    longrope-search.json            every candidate scored so far (a resumed search reuses them)
    longrope.json                   the searched factors, as a transformers longrope config
    results.json, results.csv       everything, in plan order (strict JSON, null for no number)
    results.png, passkey.png        the plots

A resume file that is damaged or edited is refused in one line naming it and its work
is done again (:mod:`ropelab.extend.store`).

Under ``torchrun`` every rank runs this; the windows and prompts of each point are shared
out across the ranks (:mod:`ropelab.extend.dist`) and rank 0 alone writes files.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, replace
from functools import partial

import torch

from ..checks import is_finite_number, show
from . import report, store
from .dist import SINGLE, Dist
from .passkey import accuracy, make_prompts
from .schemes import SchemeSettings, longrope_scheme, rope_at
from .search import SearchResult, search_longrope
from .settings import ExtendSettings, resolve_length
from .source import Source, open_checkpoint
from .store import BadFile
from .text import bits_per_token, read_text, score_start, sliding_windows, split_stream, stride

__all__ = ["run_extend"]

DEFAULT_EVAL_TOKENS = 16384
SEARCH_FILE = "longrope-search.json"
FACTORS_FILE = "longrope.json"


class _Progress:
    """One tqdm bar on rank 0 when progress is on; silent otherwise."""

    def __init__(self, settings: ExtendSettings, dist: Dist, total: int, desc: str):
        self.bar = None
        if settings.progress and dist.is_main and total:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, dynamic_ncols=True, leave=False)

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _say(settings: ExtendSettings, dist: Dist, message: str) -> None:
    if dist.is_main:
        if settings.progress:
            from tqdm.auto import tqdm

            tqdm.write(message)
        else:
            print(message, flush=True)


def _dtype(name: str):
    return getattr(torch, name)


#: where a --longrope-factors file may hold the long factors: a transformers config.json
#: (rope_parameters, or rope_scaling before transformers 5), a rope_parameters object
#: itself, or the longrope.json of this tool (factors)
_FACTOR_ENTRIES = (("factors",), ("long_factor",), ("rope_parameters", "long_factor"),
                   ("rope_scaling", "long_factor"), ("config", "rope_parameters", "long_factor"))


def _no_constant(name):
    raise ValueError(f"{name} is not a number JSON allows")


def _factors_from_file(path: str, pairs: int) -> list[float]:
    """Long factors from a JSON file: a list, this tool's longrope.json, or a transformers
    config.json (``rope_parameters.long_factor`` or ``rope_scaling.long_factor``)."""
    flag = f"--longrope-factors {path!r}"
    try:
        with open(path, encoding="utf-8") as f:
            data = json.loads(f.read(), parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise ValueError(f"{flag} is not JSON: {err}") from None
    except OSError as err:
        raise ValueError(f"{flag} cannot be read ({err.strerror or err})") from None
    where = "the file"
    if isinstance(data, dict):
        for entry in _FACTOR_ENTRIES:
            value = data
            for name in entry:
                value = value.get(name) if isinstance(value, dict) else None
            if value is not None:
                data, where = value, ".".join(entry)
                break
        else:
            raise ValueError(f"{flag} holds an object without long factors; expected a list of {pairs} numbers "
                             f"or an object with {', '.join('.'.join(e) for e in _FACTOR_ENTRIES)}")
    ok = isinstance(data, list) and len(data) == pairs and all(is_finite_number(v) and v > 0 for v in data)
    if not ok:
        raise ValueError(f"{flag}: {where} holds {show(data)}; expected a list of {pairs} positive numbers, "
                         "one per rotary pair of the checkpoint")
    return [float(v) for v in data]


def _search(source: Source, settings: ExtendSettings, dist: Dist, split, target: int, key_base: dict) -> dict:
    """The searched LongRoPE factors (resuming from the search file), as a results entry."""
    rope = source.base
    pairs = rope.rotary_dim // 2
    settings.search.check(pairs)
    step = stride(target, settings.stride)
    start = score_start([target], settings.stride, source.bos)
    count = min(settings.search_tokens, len(split.search) - start)
    if count < step:
        raise ValueError(
            f"the search split has {len(split.search)} tokens, too few for windows of {target} "
            f"(--search-fraction {settings.search_fraction}); pass more text"
        )
    windows = sliding_windows(split.search, length=target, stride_tokens=step, start=start, count=count, bos=source.bos)
    # the scores depend on the objective alone (not on the seed, budget or population):
    # a search with other settings reuses every candidate it meets again
    key = store.digest({**key_base, "target": target, "tokens": count, "stride": settings.stride})
    path = os.path.join(settings.out, SEARCH_FILE)
    history = []
    if dist.is_main:
        try:
            history = store.unseal(path, store.read_json(path), key, "scored",
                                   lambda path, scored: store.check_scored(path, scored, pairs)) or []
        except BadFile as bad:
            store.warn(f"search scores refused: {bad}; scoring the candidates again")
    history = dist.share(history)
    cache = {tuple(f): v for f, v in history}
    log = [[f, v] for f, v in history]

    def objective(factors):
        source.model.set_rope(rope_at(rope, "longrope", target, SchemeSettings(source.original),
                                      longrope_scheme(factors, source.original, target)))
        value, _ = bits_per_token(source.model, windows, batch_size=settings.batch_size, dist=dist, device=settings.device)
        return value

    def on_score(factors, value):
        log.append([factors, value])
        if dist.is_main:
            store.write_json(path, store.sealed(key, "scored", log))

    bar = _Progress(settings, dist, settings.search.budget, f"LongRoPE search @{target}")
    try:
        result: SearchResult = search_longrope(
            objective, theta=rope.theta, rotary_dim=rope.rotary_dim, original=source.original, target=target,
            settings=settings.search, cache=cache, on_score=on_score, progress=bar.update,
        )
    finally:
        bar.close()
        source.model.set_rope(source.rope)
    return {
        "source": "searched",
        "length": target,
        "factors": result.factors,
        "value": result.value,
        "evaluations": len(result.history),
        "tokens": windows.tokens,
        "initial": {k: {"factors": f, "value": v} for k, (f, v) in result.initial.items()},
    }


def _point_key(key_base: dict, rope, eval_key: dict) -> str:
    return store.digest({**key_base, "rope": rope.to_hf(), "eval": eval_key})


def run_extend(settings: ExtendSettings, dist: Dist = SINGLE) -> dict:
    """Run (or resume) an extend experiment; write its files; return results.json's content."""
    settings.validate()
    device = settings.device
    source = open_checkpoint(settings.folder, original_length=settings.original_length,
                             dtype=_dtype(settings.dtype), device=device)
    original = source.original
    lengths = sorted({resolve_length(t, original, "--lengths") for t in settings.lengths})
    tokens = source.encode(read_text(list(settings.text)))
    split = split_stream(tokens, settings.search_fraction)
    key_base = {
        "checkpoint": source.fingerprint,
        "text": hashlib.sha256(tokens.numpy().tobytes()).hexdigest()[:16],
        "search_fraction": settings.search_fraction,
        "original": original,
        "format": store.FORMAT,
    }
    start = score_start(lengths, settings.stride, source.bos)
    room = len(split.evaluation) - start
    eval_tokens = settings.eval_tokens or min(DEFAULT_EVAL_TOKENS, room)
    if eval_tokens > room or eval_tokens < 1:
        raise ValueError(
            f"the evaluation split has {len(split.evaluation)} tokens; scoring {eval_tokens} at lengths up to "
            f"{max(lengths)} needs {start + max(eval_tokens, 1)}; pass more text or lower --eval-tokens"
        )
    if dist.is_main:
        os.makedirs(settings.out, exist_ok=True)
    scheme_settings = SchemeSettings(
        original, settings.factor, settings.yarn_beta_fast, settings.yarn_beta_slow,
        settings.llama3_low_freq_factor, settings.llama3_high_freq_factor,
    )
    _say(settings, dist, f"{settings.folder}: original length {original}, lengths {lengths}, "
                         f"{len(tokens)} tokens of text ({len(split.search)} search, {len(split.evaluation)} evaluation)")

    longrope, searched = None, None
    if "longrope" in settings.schemes:
        target = resolve_length(settings.search_length, original, "--search-length") if settings.search_length else max(lengths)
        if settings.longrope_factors is not None:
            factors = _factors_from_file(settings.longrope_factors, source.base.rotary_dim // 2)
            searched = {"source": settings.longrope_factors, "length": target, "factors": factors}
        else:
            searched = _search(source, settings, dist, split, target, key_base)
        longrope = longrope_scheme(searched["factors"], original, target)
        searched["config"] = replace(source.base, scaling=longrope).to_hf()  # transformers' form
        if dist.is_main:
            store.write_json(os.path.join(settings.out, FACTORS_FILE), searched)

    windows = {n: sliding_windows(split.evaluation, length=n, stride_tokens=stride(n, settings.stride), start=start,
                                  count=eval_tokens, bos=source.bos) for n in lengths}
    prompts = {n: make_prompts(source.tokenizer, split.evaluation, n, settings.passkey, seed=settings.seed, bos=source.bos)
               for n in lengths}
    eval_key = {"stride": settings.stride, "tokens": eval_tokens, "start": start,
                "passkey": asdict(settings.passkey), "seed": settings.seed}
    plan = [(s, n) for s in settings.schemes for n in lengths]
    ropes = {(s, n): rope_at(source.base, s, n, scheme_settings, longrope) for s, n in plan}
    keys = {p: _point_key(key_base, ropes[p], eval_key) for p in plan}
    depths = list(settings.passkey.depths)
    saved = {}
    if dist.is_main:
        for p in plan:
            path = store.point_path(settings.out, *p)
            try:
                record = store.unseal(path, store.read_json(path), keys[p], "record", partial(
                    store.check_record, scheme=p[0], length=p[1], depths=depths, rope=ropes[p].to_hf()))
                if record is not None:
                    saved[p] = record
            except BadFile as bad:
                store.warn(f"point refused: {bad}; evaluating it again")
    saved = dist.share(saved)
    todo = [p for p in plan if p not in saved]
    if saved:
        _say(settings, dist, f"resumed: {len(saved)} of {len(plan)} points already evaluated under these settings")
    bar = _Progress(settings, dist, len(todo), "evaluate")
    try:
        for scheme, n in todo:
            rope = ropes[(scheme, n)]
            source.model.set_rope(rope)
            bits, count = bits_per_token(source.model, windows[n], batch_size=settings.batch_size, dist=dist, device=device)
            acc = None
            if prompts[n] is not None:
                acc = accuracy(source.model, prompts[n], len(depths), batch_size=settings.batch_size, dist=dist, device=device)
            record = {
                "scheme": scheme,
                "length": n,
                "factor": getattr(rope.scaling, "factor", None) or 1.0,
                "bits_per_token": bits,
                "tokens": count,
                "passkey_depths": depths,
                "passkey_accuracy": acc,
                "passkey_mean": None if acc is None else sum(acc) / len(acc),
                "note": "" if acc is not None else "the passkey prompt is longer than this length",
                "rope": rope.to_hf(),
            }
            saved[(scheme, n)] = record
            if dist.is_main:
                store.write_json(store.point_path(settings.out, scheme, n), store.sealed(keys[(scheme, n)], "record", record))
            bar.update()
    finally:
        bar.close()
        source.model.set_rope(source.rope)

    results = {
        "checkpoint": os.path.abspath(settings.folder),
        "original_length": original,
        "lengths": lengths,
        "eval_tokens": eval_tokens,
        "stride": settings.stride,
        "passkey": {"depths": depths, "trials": settings.passkey.trials, "digits": settings.passkey.digits},
        "settings": settings.to_json(),
        "records": [saved[p] for p in plan],
        "longrope": searched,
        "write": None,
    }
    if settings.write is not None:
        results["write"] = _write(source, settings, dist, results, scheme_settings, longrope, windows)
    if dist.is_main:
        report.write_results(settings.out, results)
        report.write_plots(settings.out, results)
    return results


def _write(source, settings, dist, results, scheme_settings, longrope, windows) -> dict | None:
    """Pick the scheme and length, write the folder (rank 0) and compare with transformers."""
    from .write import write_extended

    length = resolve_length(settings.write_length, source.original, "--write-length") if settings.write_length else max(results["lengths"])
    if length not in results["lengths"]:
        raise ValueError(f"--write-length {length} is not among the evaluated lengths {results['lengths']}")
    scheme = settings.write_scheme
    if scheme == "best":
        at = [r for r in results["records"] if r["length"] == length]
        scheme = min(at, key=lambda r: r["bits_per_token"])["scheme"]
    rope = rope_at(source.base, scheme, length, scheme_settings, longrope)
    written = None
    if dist.is_main:
        window = windows[length].inputs[:1]
        written = write_extended(source, rope, scheme, length, settings.write, window, device=settings.device)
        written["chosen_by"] = "lowest bits per token" if settings.write_scheme == "best" else "--write-scheme"
    return dist.share(written)
