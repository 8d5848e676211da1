"""LongRoPE's evolutionary search for per-pair rescale factors (Ding et al. 2024,
arXiv:2402.13753, its search algorithm, Algorithm 1), on a budget of evaluations.

A candidate is one rescale factor ``lambda_i`` per rotary pair (pair ``i`` turns at
``inv_freq_i / lambda_i``), the ``long_factor`` of a transformers ``longrope`` config.
For an extension ratio ``s`` (target length / original length) the search keeps, as
the paper does:

- factors on a grid of 0.01 in ``[1, 1.25 s]``;
- factors non-decreasing along the pair index (the paper's monotonic constraint:
  lower frequencies are interpolated at least as much as higher ones);
- the first ``keep`` pairs (the highest frequencies) at exactly 1, left alone. By
  default these are the pairs that turn more than ``beta_fast = 32`` times within the
  original length, the pairs YaRN also leaves alone.

The paper also searches ``n_hat``, a number of initial positions left un-interpolated;
transformers' ``longrope`` form cannot express it, so it is not searched (``n_hat = 0``).

Procedure (the paper's Algorithm 1, with its population sizes scaled by ``population``
and a budget of objective evaluations in place of a number of iterations):

1. The initial population holds the Position Interpolation candidate (every factor
   ``s``), the NTK-aware one (``s ** (2i / (R - 2))``) and YaRN's by-parts one (the
   divisor of YaRN's frequencies), each put on the grid and the constraints, then
   mutants of these three up to ``population`` members.
2. Every member is scored by the objective (bits per token at the target length on
   the search split; lower is better). The ``population // 2`` best seen so far are the
   parents.
3. Each generation makes ``population // 4`` mutants and ``population // 4`` crossovers
   of the parents, scores them, and updates the parents; generations repeat until the
   budget of evaluations is spent.

Mutation: every free pair is picked with probability ``p = 0.3`` (at least one is
picked); the picked pairs, in a random order, each draw a new value uniformly from the
grid points between their current neighbours, so a child always keeps the order.
Crossover: each free pair takes its value from one of two parents at random; a child
that breaks the order is drawn again (up to 20 times, else dropped). A candidate already
scored is never scored again (it is drawn again, up to 20 times). Everything random
comes from one ``numpy`` generator seeded by ``seed``, so the same seed and the same
objective values give the same search; scores read from a previous run's file count
against the budget as they did then, so a resumed search retraces its steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .. import scaling
from ..checks import check_int

__all__ = ["SearchResult", "SearchSettings", "default_keep", "initial_candidates", "search_longrope"]

STEP = 0.01
MUTATE_PROBABILITY = 0.3
TRIES = 20


@dataclass(frozen=True)
class SearchSettings:
    budget: int = 64  # objective evaluations
    population: int = 16
    keep: int | None = None  # pairs left at 1 (None: default_keep)
    seed: int = 0

    def check(self, pairs: int) -> None:
        for name in ("budget", "population"):
            check_int(f"--search-{name}", getattr(self, name), minimum=1)
        if self.population < 4:
            raise ValueError(f"--search-population must be >= 4 (parents, mutants, crossovers), got {self.population}")
        if self.keep is not None and not 0 <= self.keep < pairs:
            raise ValueError(f"--search-keep must be in [0, {pairs - 1}] (the checkpoint has {pairs} rotary pairs), got {self.keep}")


@dataclass
class SearchResult:
    factors: list[float]  # the best candidate
    value: float  # its objective
    initial: dict[str, tuple[list[float], float]]  # "pi", "ntk", "yarn": candidate, objective
    history: list[tuple[list[float], float]] = field(default_factory=list)  # every scored candidate, in order


def default_keep(theta: float, rotary_dim: int, original: int) -> int:
    """Pairs turning more than 32 times within ``original`` tokens (YaRN's kept pairs)."""
    low, _ = scaling.YaRN(2.0, original).correction_range(theta, rotary_dim)
    return max(0, min(int(low), rotary_dim // 2 - 1))


def _on_grid(values: np.ndarray, keep: int, upper: float) -> np.ndarray:
    """Rounded to the grid, clipped to [1, upper], the kept pairs at 1, made non-decreasing."""
    out = np.clip(np.round(np.asarray(values, dtype=np.float64) / STEP) * STEP, 1.0, upper)
    out[:keep] = 1.0
    return np.round(np.maximum.accumulate(out), 2)


def initial_candidates(theta: float, rotary_dim: int, original: int, scale: float, keep: int) -> dict[str, np.ndarray]:
    """PI, NTK-aware and YaRN factors for extension ratio ``scale``, on the grid and constraints."""
    pairs = rotary_dim // 2
    base = scaling.default_inv_freq(theta, rotary_dim)
    upper = _upper(scale)
    yarn = base / scaling.YaRN(scale, original).inv_freq(theta, rotary_dim)
    return {
        "pi": _on_grid(np.full(pairs, scale), keep, upper),
        "ntk": _on_grid(scale ** (2 * np.arange(pairs) / (rotary_dim - 2)), keep, upper),
        "yarn": _on_grid(yarn, keep, upper),
    }


def _upper(scale: float) -> float:
    return math.floor(1.25 * scale / STEP + 1e-9) * STEP


def _key(candidate: np.ndarray) -> tuple:
    return tuple(int(round(v / STEP)) for v in candidate)


def _valid(candidate: np.ndarray, keep: int, upper: float) -> bool:
    return bool(
        np.all(np.diff(candidate) >= -1e-12) and np.all(candidate[:keep] == 1.0)
        and candidate.min() >= 1.0 and candidate.max() <= upper + 1e-9
    )


def _mutate(parent: np.ndarray, rng: np.random.Generator, keep: int, upper: float) -> np.ndarray:
    child = parent.copy()
    free = np.arange(keep, len(child))
    if not len(free):
        return child
    picked = free[rng.random(len(free)) < MUTATE_PROBABILITY]
    if not len(picked):
        picked = free[rng.integers(len(free), size=1)]
    for i in rng.permutation(picked):
        lo = child[i - 1] if i > 0 else 1.0
        hi = child[i + 1] if i + 1 < len(child) else upper
        steps = int(round((hi - lo) / STEP))
        child[i] = round(lo + STEP * int(rng.integers(0, steps + 1)), 2)
    return child


def _crossover(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, keep: int) -> np.ndarray:
    take = rng.random(len(a)) < 0.5
    take[:keep] = True
    return np.where(take, a, b)


def search_longrope(objective: Callable[[list[float]], float], *, theta: float, rotary_dim: int, original: int,
           target: int, settings: SearchSettings, cache: dict | None = None,
           on_score: Callable[[list[float], float], None] | None = None,
           progress: Callable[[], None] | None = None) -> SearchResult:
    """Search LongRoPE long factors for ``target`` tokens (see the module docstring).

    Args:
        objective: candidate factors (list of R/2 floats) -> value to minimise.
        theta, rotary_dim, original: the checkpoint's base, rotary width and length.
        target: the length searched for (ratio ``s = target / original``).
        settings: budget, population, kept pairs, seed.
        cache: ``{tuple(factors): value}`` scored before (a resumed search).
        on_score: called with each newly scored candidate and its value.
        progress: called once per evaluation spent (scored or read from ``cache``).
    """
    pairs = rotary_dim // 2
    settings.check(pairs)
    scale = target / original
    if scale <= 1:
        raise ValueError(f"the search length {target} must exceed the original length {original}")
    keep = default_keep(theta, rotary_dim, original) if settings.keep is None else settings.keep
    upper = _upper(scale)
    rng = np.random.default_rng(settings.seed)
    cache = {_key(np.asarray(k, dtype=np.float64)): v for k, v in (cache or {}).items()}
    scored: dict[tuple, float] = {}
    order: list[tuple[list[float], float]] = []

    def score(candidate: np.ndarray) -> float | None:
        key = _key(candidate)
        if key in scored:
            return scored[key]
        if len(scored) >= settings.budget:
            return None
        factors = [round(float(v), 2) for v in candidate]
        if key in cache:
            value = float(cache[key])
        else:
            value = float(objective(factors))
            if not math.isfinite(value):
                raise ValueError(f"the objective of LongRoPE factors {factors} is {value}")
            if on_score is not None:
                on_score(factors, value)
        scored[key] = value
        order.append((factors, value))
        if progress is not None:
            progress()
        return value

    def fresh(make) -> np.ndarray | None:
        for _ in range(TRIES):
            child = make()
            if _valid(child, keep, upper) and _key(child) not in scored:
                return child
        return None

    seeds = initial_candidates(theta, rotary_dim, original, scale, keep)
    initial = {}
    for name, candidate in seeds.items():
        value = score(candidate)
        if value is not None:
            initial[name] = ([round(float(v), 2) for v in candidate], value)
    starts = list(seeds.values())
    members = len(dict.fromkeys(_key(c) for c in starts))
    while members < settings.population and len(scored) < settings.budget:
        child = fresh(lambda: _mutate(starts[rng.integers(len(starts))], rng, keep, upper))
        if child is None:
            break
        score(child)
        members += 1
    n_parents = max(2, settings.population // 2)
    n_children = max(1, settings.population // 4)

    def mutant(parents):
        return _mutate(parents[rng.integers(len(parents))], rng, keep, upper)

    def cross(parents):
        if len(parents) < 2:
            return mutant(parents)
        i, j = rng.choice(len(parents), size=2, replace=False)
        return _crossover(parents[i], parents[j], rng, keep)

    stalled = 0
    while len(scored) < settings.budget and stalled < TRIES:
        parents = [np.array(f) for f, _ in sorted(order, key=lambda fv: fv[1])[:n_parents]]
        before = len(scored)
        for make in [mutant] * n_children + [cross] * n_children:
            child = fresh(lambda make=make: make(parents))  # noqa: B023 (used at once, in this iteration)
            if child is not None:
                score(child)
        stalled = stalled + 1 if len(scored) == before else 0  # a tiny space can run out of new candidates
    best_factors, best_value = min(order, key=lambda fv: fv[1])
    return SearchResult(best_factors, best_value, initial, order)
