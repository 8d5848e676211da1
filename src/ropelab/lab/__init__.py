"""The lab: how positional schemes behave past their training length.

Tiny decoder transformers (``ropelab.torch.Transformer``), one per scheme, are trained
on a task at one length and evaluated at multiples of it; RoPE is also evaluated with
inference-time extension (PI, NTK, YaRN). ``ropelab lab --help`` lists the options.
Imports torch.
"""

from .experiment import run_lab
from .schemes import EXTENSIONS, SCHEMES, available_schemes
from .settings import PRESETS, LabSettings
from .tasks import TASKS, CopyTask, RecallTask, TextTask

__all__ = [
    "EXTENSIONS",
    "PRESETS",
    "SCHEMES",
    "TASKS",
    "CopyTask",
    "LabSettings",
    "RecallTask",
    "TextTask",
    "available_schemes",
    "run_lab",
]
