"""ropelab: positional encoding for attention, exact and fast.

The core (this namespace) needs numpy alone; front ends live in ``ropelab.torch``
and ``ropelab.nnx`` and import their framework when used.
"""

from . import scaling
from .config import LAYOUTS, RopeConfig
from .hf_tables import hf_from_rows, rows_from_hf
from .positional import alibi_slopes, sinusoidal, t5_relative_buckets
from .presets import PRESETS, preset
from .rotary import apply_rope, apply_rope_, permute_for_layout
from .tables import rope_tables
from .tables_type import RopeTables

__version__ = "0.1.0"

__all__ = [
    "LAYOUTS",
    "alibi_slopes",
    "sinusoidal",
    "t5_relative_buckets",
    "PRESETS",
    "RopeConfig",
    "RopeTables",
    "apply_rope",
    "apply_rope_",
    "hf_from_rows",
    "permute_for_layout",
    "preset",
    "rope_tables",
    "rows_from_hf",
    "scaling",
]
