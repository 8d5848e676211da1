"""The package's metadata and entry points: ranges rather than pins, a lock that the
scripts install through, and ``--version``."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

import ropelab

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]


def _requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    yield from project["dependencies"]
    for extra in project["optional-dependencies"].values():
        yield from extra


def test_metadata_states_ranges_not_pins():
    pinned = [r for r in _requirements() if "==" in r or "===" in r]
    assert pinned == [], f"exact pins in pyproject.toml: {pinned}"


def _pins(lock: str) -> dict[str, str]:
    text = (ROOT / "requirements" / lock).read_text()
    pins = re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", text, flags=re.M)
    return {name.lower().replace("_", "-"): version for name, version in pins}


def test_locks_hold_every_dependency_and_the_cpu_torch():
    full, main = _pins("lock.txt"), _pins("lock-main.txt")
    assert full["torch"].endswith("+cpu"), full["torch"]
    for requirement in _requirements():
        name = re.match(r"[A-Za-z0-9_.\-]+", requirement).group(0).lower().replace("_", "-")
        if name != "ropelab":
            assert name in full, f"{name} is not in requirements/lock.txt"
    # the main job's lock is resolved within the test lock: the same versions
    assert {name: full.get(name) for name in main} == main
    for script, lock in (("test.sh", "lock.txt"), ("main.sh", "lock-main.txt")):
        assert f"requirements/{lock}" in (ROOT / "scripts" / script).read_text(), script


def test_version_flag():
    for command in (["-m", "ropelab", "--version"], ["-c", "from ropelab.cli import main; main()", "--version"]):
        out = subprocess.run([sys.executable, *command], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == f"ropelab {ropelab.__version__}"
