"""ropelab.torch.kinds: the one table of layer kinds, each kind building its layer in a
Transformer (decode equals full forward), the options each kind reads, and the import
graph (the modules a kind builds never import the table)."""

import ast
import importlib.util
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from ropelab.positional import PRoPE  # noqa: E402
from ropelab.torch import (  # noqa: E402
    LAYER_KINDS,
    AxialRoPE,
    LinearAttention,
    MRoPE,
    RotaryEmbedding,
    ShawAttention,
    T5Bias,
    Transformer,
    TransformerConfig,
    XPos,
)

BUILT_IN = ("rope", "nope", "alibi", "t5", "xpos", "prope", "mrope", "axial", "shaw", "linear_attention")

# the options a kind needs (axial) or that keep the test small
OPTIONS = {
    "prope": {"p": 0.5},
    "t5": {"num_buckets": 8, "max_distance": 6},
    "axial": {"cols": 3},
    "shaw": {"clip": 3},
    "linear_attention": {"block_size": 4},
}


def _model(kind, seed=6, **options):
    torch.manual_seed(seed)
    kind_options = {kind: {**OPTIONS.get(kind, {}), **options}} if (kind in OPTIONS or options) else {}
    cfg = TransformerConfig(40, d_model=32, num_heads=4, layers=(kind, "rope"), kind_options=kind_options)
    return Transformer(cfg).eval()


def test_the_table_holds_every_built_in_kind():
    assert set(BUILT_IN) <= set(LAYER_KINDS)
    for name in BUILT_IN:  # written in kinds.py itself, not registered from elsewhere
        assert LAYER_KINDS[name].__module__ == "ropelab.torch.kinds", name


@pytest.mark.parametrize("kind", BUILT_IN)
def test_transformer_layer_kinds_decode_equals_full(kind):
    model = _model(kind)
    tokens = torch.randint(0, 40, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(tokens)
        cache = model.new_cache(2, 12)
        steps = [model(tokens[:, :4], cache=cache)] + [
            model(tokens[:, t : t + 1], cache=cache) for t in range(4, 10)
        ]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-4, atol=1e-4)


def test_each_kind_builds_its_module():
    want = {
        "rope": lambda a: isinstance(a.rope, RotaryEmbedding) and type(a).__name__ == "Attention",
        "nope": lambda a: a.rope is None and a.score_bias is None,
        "alibi": lambda a: a.rope is None and type(a.score_bias).__name__ == "ALiBiBias",
        "t5": lambda a: isinstance(a.score_bias, T5Bias) and a.score_bias.max_distance == 6,
        "xpos": lambda a: isinstance(a.rope, XPos),
        "prope": lambda a: a.rope.config.scaling == PRoPE(0.5),
        "mrope": lambda a: isinstance(a.rope, MRoPE),
        "axial": lambda a: isinstance(a.rope, AxialRoPE) and a.rope.cols == 3,
        "shaw": lambda a: isinstance(a, ShawAttention) and a.clip == 3,
        "linear_attention": lambda a: isinstance(a, LinearAttention) and a.block_size == 4,
    }
    assert set(want) == set(BUILT_IN)
    for kind in BUILT_IN:
        assert want[kind](_model(kind).blocks[0].attn), kind


def test_prope_kind_uses_p_option():
    rope = _model("prope", p=0.25).blocks[0].attn.rope.config
    assert rope.scaling == PRoPE(0.25)


def test_kind_options_pass_other_attention_arguments_through():
    attn = _model("alibi", window=5).blocks[0].attn
    assert attn.window == 5
    assert _model("t5").blocks[0].attn.score_bias.bidirectional is False  # follows causal


def test_axial_kind_needs_cols():
    with pytest.raises(ValueError, match="cols"):
        Transformer(TransformerConfig(40, d_model=32, num_heads=4, layers=("axial",)))


# --- no import cycles ---------------------------------------------------------------------


def _module_imports(path: Path, package: str) -> set[str]:
    """ropelab modules that ``path`` imports when it is loaded (not inside functions or
    TYPE_CHECKING blocks), as dotted names."""
    tree = ast.parse(path.read_text())
    found = set()

    def visit(body):
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")
                if node.level:
                    base = base[: len(base) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                if node.module is None:  # from . import a, b: each name is a module
                    found.update(f"{module}.{alias.name}" for alias in node.names)
                else:
                    found.add(module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)

    visit(tree.body)
    return {name for name in found if name.startswith("ropelab")}


def test_torch_front_end_has_no_import_cycle():
    folder = Path(importlib.util.find_spec("ropelab.torch").origin).parent
    graph = {}
    for path in folder.glob("*.py"):
        name = "ropelab.torch" if path.stem == "__init__" else f"ropelab.torch.{path.stem}"
        graph[name] = {m for m in _module_imports(path, "ropelab.torch") if m.startswith("ropelab.torch.")}
    assert graph["ropelab.torch.kinds"] >= {
        "ropelab.torch.positional",
        "ropelab.torch.shaw",
        "ropelab.torch.linear_attention",
    }
    for module in ("positional", "shaw", "attention", "linear_attention", "rotary", "cache"):
        assert "ropelab.torch.kinds" not in graph[f"ropelab.torch.{module}"], module

    state = {}

    def walk(node, trail):
        if state.get(node) == "done":
            return
        assert state.get(node) != "open", f"import cycle: {' -> '.join(trail + [node])}"
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            walk(nxt, trail + [node])
        state[node] = "done"

    for node in sorted(graph):
        walk(node, [])
