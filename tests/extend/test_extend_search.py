"""The LongRoPE search: its candidates keep the paper's constraints, it improves on its
initial population within a small budget, it is seeded, and it resumes exactly."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ropelab import scaling  # noqa: E402
from ropelab.extend.search import SearchSettings, default_keep, initial_candidates, search_longrope  # noqa: E402

THETA, ROTARY, ORIGINAL, TARGET = 10000.0, 16, 32, 128  # 8 pairs, extension ratio 4
HIDDEN = np.array([1.0, 1.0, 1.3, 2.2, 3.1, 3.4, 4.4, 4.9])  # a monotone optimum inside the range


def _objective(calls):
    def objective(factors):
        calls.append(list(factors))
        return float(np.sum((np.log(factors) - np.log(HIDDEN)) ** 2))

    return objective


def _search(budget=40, seed=0, keep=None, **kw):
    calls = []
    result = search_longrope(_objective(calls), theta=THETA, rotary_dim=ROTARY, original=ORIGINAL, target=TARGET,
                    settings=SearchSettings(budget=budget, population=8, keep=keep, seed=seed), **kw)
    return result, calls


def test_initial_population_is_pi_ntk_yarn():
    c = initial_candidates(THETA, ROTARY, ORIGINAL, 4.0, keep=0)
    base = scaling.default_inv_freq(THETA, ROTARY)
    assert c["pi"].tolist() == [4.0] * 8
    # each candidate, as LongRoPE factors, gives its scheme's frequencies (up to the 0.01 grid)
    for name, scheme in (("ntk", scaling.NTK(4.0)), ("yarn", scaling.YaRN(4.0, ORIGINAL)), ("pi", scaling.Linear(4.0))):
        np.testing.assert_allclose(base / c[name], scheme.inv_freq(THETA, ROTARY), rtol=0.005)


def test_candidates_keep_the_constraints():
    result, calls = _search(budget=40, keep=2)
    upper = 1.25 * TARGET / ORIGINAL
    assert len(calls) == 40 == len(result.history)  # the budget, each candidate scored once
    assert len({tuple(c) for c in calls}) == 40
    for factors in calls:
        f = np.array(factors)
        assert np.all(np.diff(f) >= 0), factors  # non-decreasing along the pairs
        assert f[0] == f[1] == 1.0  # the kept pairs left alone
        assert f.min() >= 1.0 and f.max() <= upper + 1e-9
        np.testing.assert_allclose(f * 100, np.round(f * 100), atol=1e-9)  # on the 0.01 grid


def test_improves_on_its_initial_population():
    result, _ = _search(budget=40)
    best_initial = min(v for _, v in result.initial.values())
    assert set(result.initial) == {"pi", "ntk", "yarn"}
    assert result.value < 0.5 * best_initial
    assert result.value == min(v for _, v in result.history)


def test_seeded():
    a, _ = _search(seed=3)
    b, _ = _search(seed=3)
    c, _ = _search(seed=4)
    assert a.history == b.history
    assert a.history != c.history


def test_resumes_exactly():
    full, calls = _search(budget=30)
    cache = {tuple(f): v for f, v in full.history[:17]}
    resumed, more = _search(budget=30, cache=cache)
    assert resumed.history == full.history and resumed.factors == full.factors
    assert more == calls[17:]  # only the candidates not scored before


def test_default_keep_is_yarns_kept_pairs():
    # a 4096-token model with 128-wide heads: YaRN keeps the pairs turning more than 32 times
    assert default_keep(10000.0, 128, 4096) == scaling.YaRN(2.0, 4096).correction_range(10000.0, 128)[0] == 20
    assert default_keep(THETA, ROTARY, ORIGINAL) == 0


def test_settings_are_checked():
    with pytest.raises(ValueError, match="--search-budget must be an integer >= 1, got 0"):
        SearchSettings(budget=0).check(8)
    with pytest.raises(ValueError, match=r"--search-keep must be in \[0, 7\]"):
        SearchSettings(keep=8).check(8)
    with pytest.raises(ValueError, match="must exceed the original length"):
        search_longrope(lambda f: 0.0, theta=THETA, rotary_dim=ROTARY, original=32, target=32, settings=SearchSettings())


def test_search_on_a_checkpoint_beats_pi_ntk_yarn(tiny_checkpoint, held_out):
    """On a trained model (16 tokens), at 4x: a few dozen evaluations find factors with
    lower bits per token on the search text than PI, NTK and YaRN."""
    from ropelab.extend.schemes import SchemeSettings, longrope_scheme, rope_at
    from ropelab.extend.text import bits_per_token, sliding_windows
    from ropelab.hf import load_pretrained

    model = load_pretrained(tiny_checkpoint)
    tokens = torch.tensor(list(open(held_out, "rb").read()[:20000]))
    windows = sliding_windows(tokens, length=64, stride_tokens=32, start=32, count=4096, bos=256)
    base = model.config.rope

    def objective(factors):
        model.set_rope(rope_at(base, "longrope", 64, SchemeSettings(16), longrope_scheme(factors, 16, 64)))
        return bits_per_token(model, windows, batch_size=16)[0]

    result = search_longrope(objective, theta=base.theta, rotary_dim=base.rotary_dim, original=16, target=64,
                    settings=SearchSettings(budget=24, population=8))
    best_initial = min(v for _, v in result.initial.values())
    assert result.value < best_initial, (result.value, result.initial)
