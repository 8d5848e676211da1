"""Presets: the rotary settings of real model families, as data.

Each preset is the RoPE part of a public Hugging Face ``config.json`` (see
``presets_data.py`` for the numbers and where they come from); :func:`preset` turns
one into a :class:`RopeConfig` through :meth:`RopeConfig.from_hf`, so presets and
user configs take the same road.
"""

from __future__ import annotations

import copy

from .checks import show
from .config import RopeConfig
from .presets_data import PRESETS

__all__ = ["PRESETS", "preset", "preset_hf_config"]


def preset_hf_config(name: str) -> dict:
    """The config.json fields of a preset: a deep copy, so editing it (say its
    ``rope_scaling``) leaves the preset as it is."""
    if not isinstance(name, str):
        raise TypeError(f"a preset name must be a string, got {show(name)} ({type(name).__name__})")
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
    return copy.deepcopy(PRESETS[name])


def preset(name: str) -> RopeConfig:
    """The :class:`RopeConfig` of a named preset, e.g. ``preset("llama-3.1-8b")``."""
    return RopeConfig.from_hf(preset_hf_config(name))
