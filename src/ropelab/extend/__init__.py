"""``ropelab extend``: take a trained checkpoint past its context.

For a transformers checkpoint folder and held-out text, every extension scheme (none,
linear / Position Interpolation, NTK-aware, dynamic NTK, YaRN, Llama 3, LongRoPE with
factors searched here) is measured at multiples of the checkpoint's original length:
bits per token over sliding windows and passkey retrieval by depth. The chosen scheme
can be written back as a checkpoint transformers loads extended. ``ropelab extend
--help`` lists the options; :func:`run_extend` is the same from Python. Imports torch
and transformers; the names below are imported on first use, so that the lab can use
:mod:`ropelab.extend.passkey` without transformers.
"""

from __future__ import annotations

from .._optional import lazy_exports

# public name -> the module that defines it
_WHERE = {
    "NAMES": "schemes",
    "ExtendSettings": "settings",
    "PasskeySettings": "passkey",
    "SearchSettings": "search",
    "run_extend": "experiment",
    "search_longrope": "search",
}

__all__ = sorted(_WHERE)

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
