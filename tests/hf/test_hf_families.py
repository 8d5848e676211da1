"""Every transformers model family that applies rotary embeddings, read by ``RopeConfig.from_hf``
and held to that family's own code.

The families are found in the installed transformers, not listed by hand: every
``transformers.models.*.modeling_*`` source that defines ``apply_rotary_pos_emb``,
``rotate_half`` or a ``*RotaryEmbedding`` class, and every ``model_type`` whose config class
``CONFIG_MAPPING`` places in that package. For each model type the default config (its text
part, as transformers finds it) is built and random q and k are rotated by the family's own
``*RotaryEmbedding`` and the rotation function its attention calls. Only the rotary pieces
are built (no weights), so the config's sizes cost nothing.

Each model type must either match ropelab (``from_hf`` then ``rope_tables`` and
``apply_rope``) to 1e-5, or be refused by ``from_hf`` with a ValueError naming it and the
reason. A few families pair features interleaved but write the rotated pairs back
de-interleaved (DeepSeek-style ``apply_rotary_pos_emb_interleave``); both q and k move the
same way, so attention scores are those of the interleaved layout, and that permutation is
accepted (and named in the outcome).

Shapes: B batch, H heads, T time, D head dim, R rotary dim.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import pathlib
import re
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from transformers.models.auto.configuration_auto import (  # noqa: E402
    CONFIG_MAPPING,
    CONFIG_MAPPING_NAMES,
    model_type_to_module_name,
)

from ropelab import RopeConfig, apply_rope, rope_tables  # noqa: E402
from ropelab.families import INTERLEAVED, REFUSED, ROPE_MODEL_TYPES  # noqa: E402

B, H, T = 1, 3, 5  # H != T, so a q laid out (B, T, H, D) never broadcasts against (B, H, T, D)
POSITIONS = np.array([3, 4, 5, 11, 20])  # small: transformers forms angles in float32
TOL = 1e-5

# model types the sweep cannot drive through the family's code, with the reason (printed
# as the skip reason). Empty unless a family's code needs inputs this harness cannot make.
SKIP: dict[str, str] = {}

_APPLIES_ROPE = re.compile(r"def apply_rotary_pos_emb|def rotate_half|class \w*RotaryEmbedding")
# rotation helpers for other inputs than the text tokens' q and k
_NOT_TEXT = ("vision", "2d", "time", "cross", "self_attn", "video", "audio")


@functools.cache
def rope_packages() -> dict[str, tuple[str, ...]]:
    """transformers.models package -> its modeling modules that apply rotary embeddings."""
    root = pathlib.Path(transformers.__file__).parent / "models"
    found: dict[str, list[str]] = {}
    for path in sorted(root.glob("*/modeling_*.py")):
        if _APPLIES_ROPE.search(path.read_text(encoding="utf-8")):
            found.setdefault(path.parent.name, []).append(path.stem)
    return {k: tuple(v) for k, v in found.items()}


@functools.cache
def family_model_types() -> tuple[tuple[str, str], ...]:
    """(model_type, package) for every config class CONFIG_MAPPING places in a RoPE package."""
    packages = rope_packages()
    out = []
    for model_type in CONFIG_MAPPING_NAMES:
        package = model_type_to_module_name(model_type)
        if package in packages:
            out.append((model_type, package))
    return tuple(sorted(out))


def _text_config(cfg):
    try:
        return cfg.get_text_config(decoder=True)
    except (AttributeError, ValueError, TypeError):
        return cfg


def _rotary_classes(modules, text):
    """The family's ``*RotaryEmbedding`` classes built from a config, those typed for this
    config's class first."""
    found = []
    for module in modules:
        for name, obj in vars(module).items():
            if (
                isinstance(obj, type)
                and name.endswith("RotaryEmbedding")
                and issubclass(obj, torch.nn.Module)
                and "config" in inspect.signature(obj.__init__).parameters
            ):
                found.append((module, obj))
    typed = [
        (m, c)
        for m, c in found
        if inspect.signature(c.__init__).parameters["config"].annotation is type(text)
    ]
    return typed or found


def _rotation_functions(module, cfg) -> list[str]:
    """Names of the rotation functions the family's text attention calls."""
    src = inspect.getsource(module)
    names = [
        n
        for n, f in vars(module).items()
        if n.startswith("apply_rotary")
        and inspect.isfunction(f)
        and not any(w in n.lower() for w in _NOT_TEXT)
    ]
    called = [n for n in names if re.search(rf"[^\w.]{n}\(", src.replace(f"def {n}(", ""))]
    if {"apply_rotary_pos_emb", "apply_rotary_pos_emb_interleave"} <= set(called) and (
        "config.rope_interleave" in src
    ):  # DeepSeek-V3 and its kin choose by a config flag
        flag = bool(getattr(cfg, "rope_interleave", False))
        return ["apply_rotary_pos_emb_interleave" if flag else "apply_rotary_pos_emb"]
    return called or names


def _call(fn, q, k, tables):
    params = list(inspect.signature(fn).parameters)
    if not isinstance(tables, tuple):  # one complex tensor (freqs_cis)
        return fn(q, k, tables)
    a, b = tables
    if params[1] in ("cos", "sin"):  # one tensor at a time: (x, cos, sin) or (tensor, sin, cos)
        return fn(q, a, b), fn(k, a, b)
    return fn(q, k, a, b)


def _hf_rotate(fn, q, k, tables):
    """(q, k) rotated by ``fn``, trying the layouts (B, H, T, D) / (B, T, H, D) and, for
    functions that rotate only what they are given, the leading rotary features."""
    first = tables[0] if isinstance(tables, tuple) else tables
    width = first.shape[-1] * (2 if first.is_complex() else 1)
    widths = [None] + [w for w in (width, 2 * width) if w < q.shape[-1]]
    errors = []
    for transposed in (False, True):
        for rot in widths:
            qq, kk = (q.transpose(1, 2), k.transpose(1, 2)) if transposed else (q, k)
            qr, kr = (qq, kk) if rot is None else (qq[..., :rot], kk[..., :rot])
            try:
                a, b = _call(fn, qr, kr, tables)
            except (RuntimeError, ValueError, IndexError, TypeError) as err:
                errors.append(f"{type(err).__name__}: {err}"[:120])
                continue
            if rot is not None:
                a = torch.cat([a, qq[..., rot:]], -1)
                b = torch.cat([b, kk[..., rot:]], -1)
            if transposed:
                a, b = a.transpose(1, 2), b.transpose(1, 2)
            if a.shape == q.shape and b.shape == k.shape:
                return a.detach().double().numpy(), b.detach().double().numpy()
            errors.append(f"shape {tuple(a.shape)}")
    raise AssertionError(f"{fn.__name__} would not rotate q {tuple(q.shape)}: {errors}")


def _deinterleaved(x, rotary_dim):
    """Interleaved pairs written back as (all first members, all second members)."""
    order = np.r_[np.arange(0, rotary_dim, 2), np.arange(1, rotary_dim, 2), np.arange(rotary_dim, x.shape[-1])]
    return x[..., order]


_ROPE_KEYS = (
    "rope_parameters",
    "rope_scaling",
    "rope_theta",
    "rotary_emb_base",
    "rotary_pct",
    "rotary_dim",
    "partial_rotary_factor",
)


def _without_rope_keys(data: dict) -> dict:
    out = {k: v for k, v in data.items() if k not in _ROPE_KEYS}
    for key, value in out.items():
        if isinstance(value, dict) and "model_type" in value:  # text_config and kin
            out[key] = _without_rope_keys(value)
    return out


@dataclasses.dataclass
class Outcome:
    kind: str  # "match" or "refused"
    detail: str


@functools.cache
def outcome(model_type: str) -> Outcome:
    """Read the default config of ``model_type`` with from_hf and hold it to transformers."""
    package = model_type_to_module_name(model_type)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = CONFIG_MAPPING[model_type]()
    try:
        ours = RopeConfig.from_hf(cfg)
    except ValueError as err:
        return Outcome("refused", str(err))
    # the config.json form reads the same, or is refused (never read differently)
    try:
        from_dict = RopeConfig.from_hf(cfg.to_dict())
    except ValueError:
        from_dict = None
    assert from_dict in (None, ours), f"{model_type}: config.json read {from_dict}, config {ours}"
    # a config.json that leaves every rope key out gets the family's defaults, as the
    # config class does (these defaults are what `cfg` holds)
    try:
        bare = RopeConfig.from_hf(_without_rope_keys(cfg.to_dict()))
    except ValueError:
        bare = None
    assert bare in (None, ours), f"{model_type}: config.json without rope keys read {bare}, config {ours}"

    text = _text_config(cfg)
    # a multimodal family may run its text on another family's model (its text config's)
    packages = dict.fromkeys((package, model_type_to_module_name(text.model_type or model_type)))
    modules = [
        importlib.import_module(f"transformers.models.{p}.{name}")
        for p in packages
        for name in rope_packages().get(p, ())
    ]
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(B, H, T, ours.head_dim, generator=gen)
    k = torch.randn(B, H, T, ours.head_dim, generator=gen)
    positions = torch.from_numpy(POSITIONS)[None]  # (1, T)
    tables = rope_tables(ours, POSITIONS)  # (T, R/2) float64, carrying from_hf's layout and widths
    expect_q = apply_rope(q.double().numpy(), tables)
    expect_k = apply_rope(k.double().numpy(), tables)
    tried = []
    for module, cls in _rotary_classes(modules, text):
        try:
            rotary = cls(config=text)
        except Exception as err:  # noqa: BLE001 - a class for another sub-config
            tried.append(f"{cls.__name__}: {type(err).__name__}: {err}"[:160])
            continue
        tables = None
        # text tokens' positions; multimodal RoPE (M-RoPE) takes them once per axis (3, B, T)
        for pos in (positions, positions[None].expand(3, 1, T)):
            try:
                tables = rotary(q, pos)
                break
            except Exception as err:  # noqa: BLE001
                tried.append(f"{cls.__name__}({tuple(pos.shape)}): {type(err).__name__}: {err}"[:160])
        if tables is None:
            continue
        for name in _rotation_functions(module, text):
            got_q, got_k = _hf_rotate(getattr(module, name), q, k, tables)
            how = f"{cls.__name__} + {name}"
            err = max(np.abs(got_q - expect_q).max(), np.abs(got_k - expect_k).max())
            if err <= TOL:
                return Outcome("match", f"{how}, max error {err:.1e}")
            if ours.layout == "interleaved":
                r = ours.rotary_dim
                err2 = max(
                    np.abs(got_q - _deinterleaved(expect_q, r)).max(),
                    np.abs(got_k - _deinterleaved(expect_k, r)).max(),
                )
                if err2 <= TOL:
                    return Outcome("match", f"{how} (pairs written de-interleaved), max error {err2:.1e}")
            raise AssertionError(
                f"{model_type}: from_hf read {ours}, which differs from {how} by {err:.3g}"
            )
    raise AssertionError(
        f"{model_type}: from_hf accepted the config ({ours}) but no rotary path of the family "
        f"ran on it: {tried or 'no *RotaryEmbedding class takes a config'}"
    )


_CASES = family_model_types()


@pytest.mark.parametrize("model_type", [m for m, _ in _CASES])
def test_family_matches_or_is_refused(model_type):
    if model_type in SKIP:
        pytest.skip(f"{model_type}: {SKIP[model_type]}")
    result = outcome(model_type)
    if result.kind == "refused":
        assert model_type in result.detail, f"the refusal does not name {model_type}: {result.detail}"
    else:
        assert model_type in ROPE_MODEL_TYPES


def test_families_are_found():
    # the sweep would pass vacuously if discovery found nothing
    types = {m for m, _ in _CASES}
    assert len(rope_packages()) > 50 and {"llama", "gpt_neox", "gptj", "cohere", "glm"} <= types


def test_family_tables_name_only_real_model_types():
    known = set(CONFIG_MAPPING_NAMES)
    assert not (set(ROPE_MODEL_TYPES) - known - {"llama4_text"})
    assert INTERLEAVED <= set(ROPE_MODEL_TYPES)
    assert not (set(REFUSED) & set(ROPE_MODEL_TYPES))


def test_configs_without_rope_are_refused():
    for cls in (transformers.GPT2Config, transformers.BertConfig, transformers.T5Config):
        with pytest.raises(ValueError, match=cls().model_type):
            RopeConfig.from_hf(cls())


def test_readme_gives_the_sweep_counts():
    """README's paragraph states the counts of the sweep for the transformers it names."""
    readme = (pathlib.Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    stated = re.search(
        r"With transformers ([\d.]+): (\d+) model types in (\d+) packages; \*\*(\d+) read and "
        r"matched\*\* \((\d+) of\s+them interleaved\) and \*\*(\d+) refused\*\*",
        readme,
    )
    assert stated, "README lost its paragraph of family counts"
    version, types, packages, matched, interleaved, refused = stated.groups()
    if not transformers.__version__.startswith(version):
        pytest.skip(f"README counts transformers {version}; {transformers.__version__} is installed")
    results = {m: outcome(m) for m, _ in _CASES}
    kinds = [r.kind for r in results.values()]
    layouts = [
        RopeConfig.from_hf(CONFIG_MAPPING[m]()).layout for m, r in results.items() if r.kind == "match"
    ]
    got = (len(_CASES), len(rope_packages()), kinds.count("match"), layouts.count("interleaved"),
           kinds.count("refused"))
    print(f"transformers {transformers.__version__}: {got[0]} model types in {got[1]} packages, "
          f"{got[2]} matched ({got[3]} interleaved), {got[4]} refused")
    assert got == (int(types), int(packages), int(matched), int(interleaved), int(refused))
