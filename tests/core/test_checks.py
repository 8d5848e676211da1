"""ropelab.checks is the one way to check an argument: its predicates and helpers, and a
walk of the source that finds hand-written copies of its checks elsewhere.

The messages of the checks themselves are rows of ``tests/core/test_bad_inputs.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import ropelab
from ropelab.checks import check_str, is_finite_number, is_int

SRC = Path(ropelab.__file__).parent

# ``isinstance(v, bool) or not isinstance(v, ...)`` and ``... and not isinstance(v, bool)``:
# the hand-written integer/number check that ropelab.checks replaces
_HAND_WRITTEN = re.compile(
    r"isinstance\(\s*[\w.\[\]\"']+\s*,\s*\(?\s*bool\b[^)]*\)\s*\)?\s*or\s+not\s+isinstance\("
    r"|not\s+isinstance\(\s*[\w.\[\]\"']+\s*,\s*bool\s*\)"
)

#: files still holding such checks, each with why; strict: an entry whose file no longer
#: has one fails, so the list only shrinks
ALLOWED = {
    "torch/rotary.py": "rewritten with the kernels (rows from positions); its checks move then",
    "inspect.py": "the command line's own module, reworked apart",
}


def _hand_written() -> dict[str, list[str]]:
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel == "checks.py":
            continue
        hits = [line.strip() for line in path.read_text().splitlines() if _HAND_WRITTEN.search(line)]
        if hits:
            found[rel] = hits
    return found


def test_no_hand_written_checks_outside_the_checks_module():
    found = _hand_written()
    unexpected = {rel: hits for rel, hits in found.items() if rel not in ALLOWED}
    assert not unexpected, f"use ropelab.checks (check_int, check_float, check_bool, is_int, ...): {unexpected}"
    stale = sorted(set(ALLOWED) - set(found))
    assert not stale, f"these files no longer hand-write checks; take them off ALLOWED: {stale}"


def test_the_walk_finds_what_it_looks_for():
    for line in (
        "if isinstance(n, bool) or not isinstance(n, int) or n < 1:",
        "if isinstance(self.x, (bool, np.bool_)) or not isinstance(self.x, numbers.Real):",
        "ok = isinstance(value, int) and not isinstance(value, bool)",
    ):
        assert _HAND_WRITTEN.search(line), line
    assert not _HAND_WRITTEN.search("if isinstance(cos, RopeTables):")


@pytest.mark.parametrize(
    "value,integer,finite",
    [
        (3, True, True),
        (np.int64(3), True, True),
        (True, False, False),
        (np.bool_(True), False, False),
        (3.0, False, True),
        (float("nan"), False, False),
        (float("inf"), False, False),
        (10**400, True, False),
        ("3", False, False),
        (None, False, False),
    ],
)
def test_predicates(value, integer, finite):
    assert is_int(value) is integer
    assert is_finite_number(value) is finite


def test_check_str():
    assert check_str("name", "rope") == "rope"
    assert check_str("name", "", empty=True) == ""
    with pytest.raises(TypeError, match="name must be a string, got 3 \\(int\\)"):
        check_str("name", 3)
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        check_str("name", "")
