"""``ropelab extend``: take a trained checkpoint past its context.

For a transformers checkpoint folder and held-out text, every extension scheme (none,
linear / Position Interpolation, NTK-aware, dynamic NTK, YaRN, Llama 3, LongRoPE with
factors searched here) is measured at multiples of the checkpoint's original length:
bits per token over sliding windows and passkey retrieval by depth. The chosen scheme
can be written back as a checkpoint transformers loads extended. ``ropelab extend
--help`` lists the options; :func:`run_extend` is the same from Python. Imports torch
and transformers.
"""

from .experiment import run_extend
from .passkey import PasskeySettings
from .schemes import NAMES
from .search import SearchSettings, search_longrope
from .settings import ExtendSettings

__all__ = ["NAMES", "ExtendSettings", "PasskeySettings", "SearchSettings", "run_extend", "search_longrope"]
