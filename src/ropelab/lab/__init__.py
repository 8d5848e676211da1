"""The lab: how positional schemes behave past their training length.

Tiny decoder transformers (``ropelab.torch.Transformer``), one per scheme, are trained
on a task at one length and evaluated at multiples of it; RoPE is also evaluated with
inference-time extension (PI, NTK, YaRN). ``ropelab lab --help`` lists the options.
The positional schemes it compares are its *contenders* (:data:`CONTENDERS`), and its
presets are *settings presets* (:data:`SETTINGS_PRESETS`), so as not to be confused
with :data:`ropelab.scaling.SCHEMES` and :data:`ropelab.PRESETS`.
Imports torch.
"""

from .contenders import CONTENDERS, EXTENSIONS, Contender, available_contenders
from .errors import LabError, OutInUse
from .experiment import failures, run_lab
from .settings import SETTINGS_PRESETS, LabSettings
from .tasks import TASKS, CopyTask, RecallTask, TextTask

__all__ = [
    "CONTENDERS",
    "EXTENSIONS",
    "SETTINGS_PRESETS",
    "TASKS",
    "Contender",
    "CopyTask",
    "LabError",
    "LabSettings",
    "OutInUse",
    "RecallTask",
    "TextTask",
    "available_contenders",
    "failures",
    "run_lab",
]
