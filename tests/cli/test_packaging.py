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


def test_lock_holds_every_dependency_and_the_cpu_torch():
    lock = (ROOT / "requirements" / "lock.txt").read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", lock, flags=re.M))
    pins = {name.lower().replace("_", "-"): version for name, version in pins.items()}
    assert pins["torch"].endswith("+cpu"), pins["torch"]
    for requirement in _requirements():
        name = re.match(r"[A-Za-z0-9_.\-]+", requirement).group(0).lower().replace("_", "-")
        if name != "ropelab":
            assert name in pins, f"{name} is not in requirements/lock.txt"
    for script in ("test.sh", "main.sh"):
        assert "requirements/lock.txt" in (ROOT / "scripts" / script).read_text(), script


def test_version_flag():
    for command in (["-m", "ropelab", "--version"], ["-c", "from ropelab.cli import main; main()", "--version"]):
        out = subprocess.run([sys.executable, *command], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == f"ropelab {ropelab.__version__}"
