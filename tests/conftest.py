"""Suite-wide settings and fixtures. Helpers that tests import live in
``tests/support/ropelab_testing.py``; each folder's conftest skips the folder once when
its framework is missing."""

from __future__ import annotations

import os

import numpy as np
import pytest

try:
    from hypothesis import HealthCheck, settings

    # moderate example counts keep the suite fast on 2 cores; CI can raise them
    settings.register_profile(
        "ropelab",
        max_examples=int(os.environ.get("ROPELAB_HYPOTHESIS_EXAMPLES", "40")),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.load_profile("ropelab")
except ImportError:  # hypothesis is a dev extra; the property tests skip without it
    pass

try:  # without a GPU, Triton kernels run under Triton's interpreter (set before any import)
    import torch

    _CUDA = torch.cuda.is_available()
except ImportError:
    _CUDA = False
if not _CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def fused_calls(monkeypatch):
    """Names of the numba kernels called during a test (None without numba kernels),
    so a test can tell the fused path ran."""
    from ropelab import kernels

    if kernels.backend() != "numba":
        return None
    from ropelab.kernels import _numba

    calls = []
    for name in ("rope_rows_inplace", "rope_rows_out", "rope_rows_inplace_serial", "rope_rows_out_serial"):
        original = getattr(_numba, name)

        def wrapper(*args, _original=original, _name=name):
            calls.append(_name)
            return _original(*args)

        monkeypatch.setattr(_numba, name, wrapper)
    return calls



def pytest_terminal_summary(terminalreporter):
    from ropelab_testing import SKIPPED_FOLDERS

    for line in SKIPPED_FOLDERS:
        terminalreporter.write_line(f"skipped folder {line}")
