"""Every ```python block of README.md runs.

The README is split into its ``## `` sections; each section's blocks run in order in one
namespace (a block may use what an earlier block of its section defined), in a fresh
temporary folder. A block that imports an optional framework which is not installed
skips the rest of its section, saying which; everything before it has run.
"""

import importlib.util
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"

#: what a block imports -> the installed module it needs
NEEDS = {
    "torch": "torch",
    "ropelab.torch": "torch",
    "transformers": "transformers",
    "ropelab.hf": "transformers",
    "jax": "jax",
    "flax": "flax",
    "ropelab.nnx": "flax",
    "matplotlib": "matplotlib",
}


def _sections() -> dict[str, list[tuple[int, str]]]:
    """``## `` heading -> its python blocks as (first line number, source)."""
    sections: dict[str, list[tuple[int, str]]] = {}
    heading, block, start = "(top)", None, 0
    for number, line in enumerate(README.read_text().splitlines(), start=1):
        if block is None and line.startswith("## "):
            heading = line[3:].strip()
        elif block is None and line.strip() == "```python":
            block, start = [], number + 1
        elif block is not None and line.strip() == "```":
            sections.setdefault(heading, []).append((start, "\n".join(block)))
            block = None
        elif block is not None:
            block.append(line)
    assert block is None, f"README.md: the python block from line {start} is never closed"
    return sections


def _missing(source: str) -> list[str]:
    """The modules this block imports (directly or through ropelab) that are not installed."""
    imported = re.findall(r"^\s*(?:from|import)\s+([\w.]+(?:\s*,\s*[\w.]+)*)", source, re.M)
    names = {name.strip() for group in imported for name in group.split(",")}
    # "ropelab.torch.kinds" needs what "ropelab.torch" needs; "jax.numpy" what "jax" does
    prefixes = {".".join(n.split(".")[:i]) for n in names for i in range(1, n.count(".") + 2)}
    needed = {NEEDS[p] for p in prefixes if p in NEEDS}
    return sorted(m for m in needed if importlib.util.find_spec(m) is None)


SECTIONS = _sections()


def test_the_readme_has_python_blocks_to_run():
    assert sum(len(blocks) for blocks in SECTIONS.values()) >= 3
    assert "PyTorch: attention that drops into a model" in SECTIONS


def test_missing_frameworks_are_read_from_the_imports(monkeypatch):
    absent = {"torch", "transformers", "flax"}
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name in absent else real(name))
    assert _missing("import numpy as np\nimport ropelab") == []
    assert _missing("import dataclasses\nimport torch, ropelab") == ["torch"]
    assert _missing("from ropelab.hf import attention_from_hf") == ["transformers"]
    assert _missing("    from ropelab.nnx.attention import Attention") == ["flax"]
    assert _missing("import jax.numpy as jnp") == []


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_readme_section_runs(section, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__readme__"}
    for start, source in SECTIONS[section]:
        missing = _missing(source)
        if missing:
            pytest.skip(f"README.md line {start}: needs {', '.join(missing)}, not installed")
        # padded so a traceback names the README's own line numbers
        code = compile("\n" * (start - 1) + source, str(README), "exec")
        exec(code, namespace)
