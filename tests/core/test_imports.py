"""The core imports no deep-learning framework; front ends name the extra when theirs is missing."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap

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
        ropelab.apply_rope(np.ones((3, 8)), cos, sin)
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
        ropelab.apply_rope(((1.0, 2.0),), cos, sin)
