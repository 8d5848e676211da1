"""The core imports no deep-learning framework; front ends name the extra when theirs is missing."""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

FRAMEWORKS = ["torch", "jax", "flax", "transformers", "numba", "matplotlib"]

# a meta-path finder that makes the named top-level modules fail to import
BLOCKER = textwrap.dedent(
    """
    import sys
    class _Block:
        def __init__(self, names):
            self.names = set(names)
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.names:
                raise ImportError(f"No module named {name!r} (blocked by the test)")
            return None
    sys.meta_path.insert(0, _Block(BLOCKED))
    """
)


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_import_ropelab_loads_no_framework():
    code = textwrap.dedent(
        f"""
        import json, sys
        import numpy as np
        import ropelab, ropelab.scaling, ropelab.config, ropelab.tables, ropelab.rotary
        import ropelab.positional, ropelab.exercises, ropelab.presets
        for name in ropelab.PRESETS:
            ropelab.preset(name)
        cos, sin = ropelab.rope_tables(ropelab.RopeConfig(8), np.arange(3))
        print(json.dumps([m for m in {FRAMEWORKS!r} if m in sys.modules]))
        # using numpy arrays may load a CPU kernel (numba), never a deep-learning framework
        ropelab.apply_rope(np.ones((3, 8)), cos, sin, layout="half")
        print(json.dumps([m for m in {FRAMEWORKS!r} if m in sys.modules and m != "numba"]))
        """
    )
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr
    after_import, after_use = proc.stdout.strip().splitlines()[-2:]
    assert json.loads(after_import) == []
    assert json.loads(after_use) == []


def test_core_works_with_frameworks_blocked():
    code = (
        f"BLOCKED = {FRAMEWORKS!r}\n"
        + BLOCKER
        + textwrap.dedent(
            """
        import numpy as np
        import ropelab
        cos, sin = ropelab.rope_tables(ropelab.RopeConfig(8, layout="half"), np.arange(4))
        out = ropelab.apply_rope(np.ones((4, 8)), cos, sin, layout="half")
        print(out.shape)
        """
        )
    )
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "(4, 8)"


@pytest.mark.parametrize(
    "module,extra",
    [("torch", "torch"), ("jax", "jax"), ("transformers", "hf"), ("matplotlib", "plot")],
)
def test_require_names_the_extra(module, extra):
    code = (
        f"BLOCKED = [{module!r}]\n"
        + BLOCKER
        + textwrap.dedent(
            f"""
        from ropelab._optional import require
        try:
            require({module!r}, feature="this test")
        except ImportError as err:
            print(err)
        else:
            print("no error")
        """
        )
    )
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr
    assert f"ropelab[{extra}]" in proc.stdout
    assert "this test" in proc.stdout


def _is_regular_package(name: str) -> bool:
    spec = importlib.util.find_spec(name)
    return spec is not None and spec.origin not in (None, "namespace")


@pytest.mark.parametrize(
    "front_end,blocked,extra",
    [("ropelab.torch", ["torch"], "torch"), ("ropelab.nnx", ["jax", "flax"], "jax")],
)
def test_front_end_without_its_framework(front_end, blocked, extra):
    if not _is_regular_package(front_end):
        pytest.skip(f"{front_end} is not written yet (no __init__.py)")
    code = (
        f"BLOCKED = {blocked!r}\n"
        + BLOCKER
        + textwrap.dedent(
            f"""
        try:
            import {front_end}
        except ImportError as err:
            print("ImportError:", err)
        else:
            print("imported")
        """
        )
    )
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ImportError:"), proc.stdout
    assert f"ropelab[{extra}]" in proc.stdout


def test_apply_rope_on_unknown_array_names_the_kinds():
    import numpy as np

    import ropelab

    cos, sin = ropelab.rope_tables(ropelab.RopeConfig(2), np.arange(1))
    with pytest.raises(TypeError, match=r"numpy array, torch tensor or jax array"):
        ropelab.apply_rope(((1.0, 2.0),), cos, sin, layout="half")


# -- import cycles ------------------------------------------------------------------------
#
# Every module of src/ropelab is read (not imported) and its imports of other ropelab
# modules become edges of a graph. Two graphs must be free of cycles:
# - the module-level imports (what runs at import time);
# - those plus the imports inside functions of "light" modules (whose own import pulls in
#   nothing but the standard library and numpy). An import deferred into a function is how
#   a module keeps a framework off ``import ropelab``; deferring a light one buys nothing
#   but a way around a cycle, so it counts as the cycle it hides.


def _ropelab_modules() -> dict:
    """Dotted name -> path of every module of the ropelab package."""
    import ropelab

    root = Path(ropelab.__file__).parent
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(node) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(body, *, in_function: bool):
    """(node, in_function) for every statement and expression below ``body``, skipping
    ``if TYPE_CHECKING:`` blocks (never run)."""
    stack = [(node, in_function) for node in body]
    while stack:
        node, inner = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack += [(n, inner) for n in node.orelse]
            continue
        yield node, inner
        deeper = inner or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        stack += [(child, deeper) for child in ast.iter_child_nodes(node)]


def _targets(node, name: str, is_package: bool, modules: dict) -> set:
    """The ropelab modules an import statement of module ``name`` runs."""
    package = name if is_package else name.rpartition(".")[0]
    ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    if is_package:
        ancestors.add(name)

    def run(dotted: str) -> set:
        # importing a.b.c runs a, a.b and a.b.c; the importer's own packages are already running
        parts = dotted.split(".")
        prefixes = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
        return {p for p in prefixes if p in modules and p not in ancestors}

    if isinstance(node, ast.Import):
        return set().union(*(run(alias.name) for alias in node.names))
    if node.level:
        base = package.split(".")
        base = base[: len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    if not (source == "ropelab" or source.startswith("ropelab.")):
        return set()
    found = run(source)
    for alias in node.names:
        sub = f"{source}.{alias.name}"
        if sub in modules:
            found |= run(sub)
        elif source in ancestors:
            found.add(source)  # a name from a package that is still running its __init__
    return found


def _import_graphs():
    """(module-level edges, function-local edges, heavy modules): the first two map a
    module to the ropelab modules it imports; heavy modules import a framework (or call
    ``require``) at module level."""
    modules = _ropelab_modules()
    top, local, heavy = {}, {}, set()
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        top[name], local[name] = set(), set()
        for node, inner in _walk(tree.body, in_function=False):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                (local if inner else top)[name] |= _targets(node, name, is_package, modules)
                if not inner:
                    roots = [a.name.split(".")[0] for a in node.names] if isinstance(node, ast.Import) \
                        else [(node.module or "").split(".")[0]] if not node.level else []
                    if any(r and r not in sys.stdlib_module_names and r not in ("numpy", "ropelab") for r in roots):
                        heavy.add(name)
            elif (not inner and isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                  and node.func.id == "require"):
                heavy.add(name)
    return top, local, heavy


def _closure(graph, start) -> set:
    seen, stack = set(), [start]
    while stack:
        for nxt in graph.get(stack.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def _cycles(graph) -> list:
    """One cycle (a list of modules, first == last) through each module that lies on one."""
    found, reported = [], set()
    for start in sorted(graph):
        if start in reported:
            continue
        # breadth-first from start's targets back to start: the shortest cycle through it
        parent, frontier = {}, [start]
        while frontier and start not in parent:
            nxt = []
            for node in frontier:
                for t in sorted(graph.get(node, ())):
                    if t not in parent:
                        parent[t] = node
                        nxt.append(t)
            frontier = nxt
        if start in parent:
            path, node = [start], parent[start]
            while node != start:
                path.append(node)
                node = parent[node]
            path.append(start)
            cycle = path[::-1]
            reported.update(cycle)
            found.append(cycle)
    return found


def test_module_level_imports_have_no_cycle():
    top, _, _ = _import_graphs()
    assert len(top) > 30  # the walk found the package
    cycles = _cycles(top)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_deferred_imports_do_not_hide_a_cycle():
    top, local, heavy = _import_graphs()
    light = {m for m in top if not ({m} | _closure(top, m)) & heavy}
    assert "ropelab.scaling" in light and "ropelab.torch.rope_op" not in light
    graph = {m: top[m] | {t for t in local[m] if t in light} for m in top}
    cycles = _cycles(graph)
    assert not cycles, (
        "imports deferred into functions close a cycle (import at the top of the module and "
        "break the cycle instead): " + "; ".join(" -> ".join(c) for c in cycles)
    )


def test_the_cycle_check_sees_a_cycle():
    """The checks above can fail: a two-module cycle and a package importing a name back."""
    assert _cycles({"a": {"b"}, "b": {"a"}}) in ([["a", "b", "a"]], [["b", "a", "b"]])
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    modules = {"ropelab", "ropelab.kernels", "ropelab.kernels.x", "ropelab.rotary"}
    back = ast.parse("from . import Status").body[0]  # in ropelab.kernels.x: the package itself
    assert _targets(back, "ropelab.kernels.x", False, modules) == {"ropelab.kernels"}
    sub = ast.parse("from . import x").body[0]  # in ropelab/kernels/__init__.py: a submodule
    assert _targets(sub, "ropelab.kernels", True, modules) == {"ropelab.kernels.x"}
    up = ast.parse("from ..rotary import f").body[0]
    assert _targets(up, "ropelab.kernels.x", False, modules) == {"ropelab.rotary"}
