"""The lab: how positional schemes behave past their training length.

Tiny decoder transformers (``ropelab.torch.Transformer``), one per scheme, are trained
on a task at one length and evaluated at multiples of it; RoPE is also evaluated with
inference-time extension (PI, NTK, YaRN). ``ropelab lab --help`` lists the options.
The positional schemes it compares are its *contenders* (:data:`CONTENDERS`), and its
presets are *settings presets* (:data:`SETTINGS_PRESETS`), so as not to be confused
with :data:`ropelab.scaling.SCHEMES` and :data:`ropelab.PRESETS`.

Training and evaluation import torch; the names below are imported on first use, so the
command line's parser (``ropelab lab --help``) and the settings' checks work without it.
"""

from __future__ import annotations

from .._optional import lazy_exports

# public name -> the module of the lab that defines it
_WHERE = {
    "CONTENDERS": "contenders",
    "EXTENSIONS": "contenders",
    "Contender": "contenders",
    "available_contenders": "contenders",
    "LabError": "errors",
    "OutInUse": "errors",
    "failures": "experiment",
    "run_lab": "experiment",
    "SETTINGS_PRESETS": "settings",
    "TASKS": "settings",
    "LabSettings": "settings",
    "CopyTask": "tasks",
    "RecallTask": "tasks",
    "TextTask": "tasks",
}

__all__ = sorted(_WHERE)


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
