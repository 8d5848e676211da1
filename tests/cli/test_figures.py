"""ropelab.figures: the printed numbers against independent computations, and the papers' shapes."""

import json
import math
import types

import numpy as np
import pytest

from ropelab import figures
from ropelab.figures import (
    base_bound,
    first_negative,
    min_base_for_length,
    model_marks,
    pi_bounds,
    real_models,
    roformer_decay,
)

# --- RoFormer's long-term decay --------------------------------------------------------


def test_decay_equals_direct_sum_of_partial_sums():
    d, base = 64, 10000.0
    curve = roformer_decay(d, base, 300)
    theta = base ** (-2.0 * np.arange(d // 2) / d)
    for m in (0, 1, 7, 64, 255, 300):
        s, total = 0j, 0.0
        for k in range(d // 2):  # S_{k+1} = S_k + e^{i m theta_k}
            s += complex(math.cos(m * theta[k]), math.sin(m * theta[k]))
            total += abs(s)
        assert curve.bound[m] == pytest.approx(total / (d // 2), rel=1e-10)


def test_decay_shape_as_in_roformer_fig2():
    curve = roformer_decay(128, 10000.0, 256)
    assert curve.bound[0] == pytest.approx((64 + 1) / 2)  # S_j(0) = j
    assert curve.bound.argmax() == 0
    windows = [curve.bound[a : a + 32].mean() for a in range(0, 256, 32)]
    assert windows[0] > windows[2] > windows[-1]  # the bound decays with distance
    assert curve.bound[200:].max() < 0.5 * curve.bound[0]


def test_decay_rejects_odd_head_dim():
    with pytest.raises(ValueError, match="head_dim must be even"):
        roformer_decay(127)


# --- Position Interpolation --------------------------------------------------------------


@pytest.fixture(scope="module")
def pi():
    return pi_bounds()  # the paper's setting: d = 128, c = 10000, L = 2048


def _a(h, s, d=128, c=10000.0):
    theta = c ** (-2.0 * np.arange(d // 2) / d)
    return np.real(np.exp(1j * np.outer(s, theta)) @ h)


def test_pi_numbers_equal_independent_evaluation(pi):
    L = pi.length
    s = np.arange(2 * L)
    a = _a(pi.h, s)
    assert pi.max_abs_trained == pytest.approx(np.abs(a[:L]).max(), rel=1e-9)
    assert pi.max_abs_extrapolated == pytest.approx(np.abs(a[L:]).max(), rel=1e-9)
    fine = np.arange(8 * (L - 1) + 1) / 8
    lo = np.floor(fine).astype(int)
    hi = np.minimum(lo + 1, L - 1)
    lin = (1 - (fine - lo)) * a[lo] + (fine - lo) * a[hi]
    assert pi.max_interpolation_error == pytest.approx(np.abs(_a(pi.h, fine) - lin).max(), rel=1e-6)
    assert pi.interpolation_bound == pytest.approx(
        128 * np.abs(pi.h).max() / (32 * math.log(10000.0))
    )
    theta = 10000.0 ** (-2.0 * np.arange(64) / 128)
    b = np.abs(np.cumsum(np.exp(1j * np.outer(s, theta)), axis=1)).sum(axis=1)
    assert pi.min_b_over_d == pytest.approx(b.min() / 128, rel=1e-9)


def test_pi_reproduces_the_papers_shape(pi):
    # Fig. 2: the fit stays near [-1, 1] on [0, L) and explodes (their "beyond 8000") past L
    assert pi.max_abs_trained < 1.5
    assert pi.max_abs_extrapolated > 1000 * pi.max_abs_trained
    # Theorem 2.1 holds, and interpolation stays on the scale of the trained scores
    assert pi.max_interpolation_error <= pi.interpolation_bound
    assert pi.max_interpolation_error < pi.max_abs_trained
    # Appendix B: B(s)/d >= 1, so the eq. 8 bound is >= 2 * 32 ln c ~ 590 times Thm 2.1's
    assert pi.min_b_over_d >= 1.0
    assert pi.min_extrapolation_bound / pi.interpolation_bound >= 2 * 32 * math.log(10000.0) * 0.999


def test_pi_rejects_short_length():
    with pytest.raises(ValueError, match="length"):
        pi_bounds(length=1)


# --- base bounds context length ----------------------------------------------------------


def _passes(d, base, length):
    theta = base ** (-2.0 * np.arange(d // 2) / d)
    return np.cos(np.outer(np.arange(length + 1), theta)).sum(axis=1).min() >= 0


def test_min_base_agrees_with_a_plain_grid_walk():
    d, length, step = 64, 300, 1.005
    found = min_base_for_length(d, length, start=2.0, step=step)
    assert _passes(d, found, length)
    grid = 2.0
    while not _passes(d, grid, length):
        grid *= step
    # the bisection lands between the last failing grid point and the first passing one
    assert grid / step < found <= grid * (1 + 1e-12)


def test_base_grows_with_context_length():
    result = base_bound(64, (128, 256, 512, 1024))
    assert all(a < b for a, b in zip(result.bases, result.bases[1:], strict=False))
    for length, base in zip(result.lengths, result.bases, strict=True):
        assert _passes(64, base, length)


def test_min_base_rejects_bad_length():
    with pytest.raises(ValueError, match="length"):
        min_base_for_length(64, 0)


def _first_negative_by_loop(inv_freq, length):
    for m in range(length + 1):
        if math.fsum(math.cos(m * f) for f in inv_freq) < 0:
            return m
    return None


def test_first_negative_equals_a_plain_loop():
    from ropelab import RopeConfig

    for theta, length in ((10000.0, 3000), (500000.0, 3000), (50.0, 100)):
        config = RopeConfig(64, theta=theta)
        want = _first_negative_by_loop(config.inv_freq(), length)
        assert first_negative(config, length, block=257) == want
    assert first_negative(RopeConfig(64, theta=10000.0), 0) is None  # B(0) = d/2
    with pytest.raises(ValueError, match="length must be an integer >= 0, got -1"):
        first_negative(RopeConfig(64), -1)


def test_real_models_take_their_numbers_from_the_presets():
    from ropelab import preset

    models = {name: (config, context) for name, config, context in real_models()}
    assert {name: (c.theta, n) for name, (c, n) in models.items()} == {
        "Llama 2": (10000.0, 4096),
        "Mistral 7B v0.1": (10000.0, 8192),
        "Llama 3": (500000.0, 8192),
        "Llama 3.1": (500000.0, 131072),
        "Qwen2.5": (1e6, 32768),
        "Mistral 7B v0.2+": (1e6, 32768),
    }
    assert models["Llama 3.1"][0] == preset("llama-3.1-8b")  # with its Llama 3 scaling
    assert all(c.scaling is None for name, (c, _) in models.items() if name != "Llama 3.1")
    assert all(c.rotary_dim == 128 for c, _ in models.values())


def test_model_marks_check_each_model_on_its_own_frequencies():
    marks = {m.name: m for m in model_marks(128)}
    for name, config, context in real_models():
        mark = marks[name]
        assert (mark.base, mark.context) == (config.theta, context)
        want = _first_negative_by_loop(config.inv_freq(), min(context, 30000))
        if want is not None:  # the loop is slow: check the answer where it is below 30000
            assert mark.first_negative == want
    # what the figure shows: Llama 2 and Mistral v0.1 far below their length's bound, Llama 3
    # above and passing; 1e6 lies above 32K's smallest base, in a gap where B dips below 0
    assert marks["Llama 2"].first_negative == 1707 and marks["Llama 3"].first_negative is None
    assert marks["Qwen2.5"].first_negative == 27115
    assert marks["Llama 3.1"].scaling.startswith("Llama 3") and marks["Llama 3.1"].first_negative > 8192
    assert model_marks(64) == []  # the models are d = 128


def test_base_figure_marks_the_models(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    result = base_bound(128, (1024, 2048))  # a short curve: the models still get their lines
    lines = figures.plot_base(result, str(tmp_path / "base.png"))
    assert (tmp_path / "base.png").read_bytes()[:4] == b"\x89PNG"
    assert "Llama 2: base 10000, 4096 tokens: B(m) < 0 first at m = 1707" in lines
    assert "Llama 3: base 500000, 8192 tokens: B(m) >= 0 for every m <= its context" in lines


# --- the command -------------------------------------------------------------------------


def test_command_writes_pngs_and_prints_numbers(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    args = types.SimpleNamespace(
        out=str(tmp_path),
        head_dim=32,
        theta=10000.0,
        decay_distance=64,
        pi_length=256,
        seed=1,
        pi_rcond=1e-7,
        lengths=[64, 128],
    )
    assert figures.run(args) == 0
    for name in ("roformer_decay.png", "pi_bounds.png", "base_bound.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    numbers = json.loads((tmp_path / "numbers.json").read_text())
    out = capsys.readouterr().out
    decay = roformer_decay(32, 10000.0, 64)
    assert numbers["roformer_decay"]["bound"] == pytest.approx(decay.bound.tolist())
    assert f"m=   16: {decay.bound[16]:7.3f}" in out
    base = base_bound(32, (64, 128))
    assert numbers["base_bound"]["bases"] == pytest.approx(base.bases)
    assert f"L=     128: base >= {base.bases[1]:9.3g}" in out


def test_cli_parses_figures_arguments():
    from ropelab.cli import _parser

    parser, module = _parser(["figures", "--out", "x", "--lengths", "64", "128"])
    args = parser.parse_args(["figures", "--out", "x", "--lengths", "64", "128"])
    assert module is figures and args.out == "x" and args.lengths == [64, 128]
