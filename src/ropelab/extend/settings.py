"""Settings of an extend run: one frozen dataclass, checked before any work.

Lengths are given as multiples of the checkpoint's original length (``"4x"``) or in
tokens (``"512"``) and resolved once the checkpoint is open (:func:`resolve_length`).
Everything that can be wrong with the arguments alone raises ``ValueError`` naming the
flag, the value and what was expected.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field

from ..checks import check_int
from .passkey import PasskeySettings
from .schemes import NAMES
from .search import SearchSettings

__all__ = ["DTYPES", "ExtendSettings", "parse_length", "resolve_length"]

DTYPES = ("float32", "bfloat16", "float16", "float64")
#: the marker file of a folder written by --write (such a folder may be written again)
WRITE_MARKER = "ropelab-extend.json"


def parse_length(text: str, flag: str) -> tuple[str, float]:
    """``"4x"`` -> ``("x", 4.0)``; ``"512"`` -> ``("tokens", 512)``; ValueError otherwise."""
    raw = str(text).strip().lower()
    try:
        if raw.endswith("x"):
            value = float(raw[:-1])
            kind = "x"
        else:
            value = int(raw)
            kind = "tokens"
    except ValueError:
        raise ValueError(f"{flag} takes lengths like 4x (times the original length) or 512 (tokens), got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{flag} lengths must be positive, got {text!r}")
    return kind, value


def resolve_length(text: str, original: int, flag: str) -> int:
    """A length in tokens: ``"4x"`` is ``round(4 * original)``."""
    kind, value = parse_length(text, flag)
    length = int(round(value * original)) if kind == "x" else int(value)
    if length < 2:
        raise ValueError(f"{flag} {text!r} is {length} tokens; lengths need at least 2")
    return length


@dataclass(frozen=True)
class ExtendSettings:
    folder: str
    text: tuple[str, ...]
    out: str = "extend-out"
    lengths: tuple[str, ...] = ("1x", "2x", "4x", "8x")
    schemes: tuple[str, ...] = NAMES
    factor: float | None = None
    original_length: int | None = None
    yarn_beta_fast: float = 32.0
    yarn_beta_slow: float = 1.0
    llama3_low_freq_factor: float = 1.0
    llama3_high_freq_factor: float = 4.0
    stride: float = 0.5
    eval_tokens: int | None = None
    search_fraction: float = 0.5
    batch_size: int = 8
    passkey: PasskeySettings = field(default_factory=PasskeySettings)
    search: SearchSettings = field(default_factory=SearchSettings)
    search_length: str | None = None
    search_tokens: int = 4096
    longrope_factors: str | None = None
    write: str | None = None
    write_scheme: str = "best"
    write_length: str | None = None
    dtype: str = "float32"
    device: str = "cpu"
    seed: int = 0
    progress: bool = True
    threads: int | None = None

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def searching(self) -> bool:
        return "longrope" in self.schemes and self.longrope_factors is None

    def validate(self) -> None:
        """ValueError for anything wrong with the arguments themselves."""
        if not self.schemes:
            raise ValueError(f"--schemes is empty; known schemes: {', '.join(NAMES)}")
        for name in self.schemes:
            if name not in NAMES:
                raise ValueError(f"unknown scheme {name!r}; known schemes: {', '.join(NAMES)}")
        if len(set(self.schemes)) != len(self.schemes):
            raise ValueError(f"--schemes names a scheme twice: {' '.join(self.schemes)}")
        if not self.lengths:
            raise ValueError("--lengths is empty")
        for text in self.lengths:
            parse_length(text, "--lengths")
        for flag, value in (("--search-length", self.search_length), ("--write-length", self.write_length)):
            if value is not None:
                parse_length(value, flag)
        from .text import check_paths

        check_paths(self.text)
        if os.path.exists(self.out) and not os.path.isdir(self.out):
            raise ValueError(f"--out {self.out!r} is a file; pass a folder (created if missing)")
        if self.factor is not None and not (math.isfinite(self.factor) and self.factor >= 1):
            raise ValueError(f"--factor must be a number >= 1 (or per-length), got {self.factor!r}")
        if self.original_length is not None and self.original_length < 1:
            raise ValueError(f"--original-length must be a positive integer, got {self.original_length!r}")
        for flag, value in (("--yarn-beta-fast", self.yarn_beta_fast), ("--yarn-beta-slow", self.yarn_beta_slow),
                            ("--llama3-low-freq-factor", self.llama3_low_freq_factor),
                            ("--llama3-high-freq-factor", self.llama3_high_freq_factor)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{flag} must be a number > 0, got {value!r}")
        if not self.yarn_beta_fast > self.yarn_beta_slow:
            raise ValueError(f"--yarn-beta-fast ({self.yarn_beta_fast}) must exceed --yarn-beta-slow ({self.yarn_beta_slow})")
        if self.llama3_low_freq_factor > self.llama3_high_freq_factor:
            raise ValueError(f"--llama3-low-freq-factor ({self.llama3_low_freq_factor}) must not exceed "
                             f"--llama3-high-freq-factor ({self.llama3_high_freq_factor})")
        if not 0 < self.stride <= 1:
            raise ValueError(f"--stride is a fraction of the length in (0, 1], got {self.stride!r}")
        low = 0 < self.search_fraction < 1 if self.searching else 0 <= self.search_fraction < 1
        if not low:
            raise ValueError(f"--search-fraction must be in (0, 1) when LongRoPE factors are searched "
                             f"([0, 1) otherwise), got {self.search_fraction!r}")
        for flag, value in (("--eval-tokens", self.eval_tokens), ("--batch-size", self.batch_size),
                            ("--search-tokens", self.search_tokens), ("--threads", self.threads)):
            if value is not None:
                check_int(flag, value, minimum=1)
        self.passkey.check()
        self.search.check(2**31)  # the pair count is checked again once the checkpoint is open
        if self.longrope_factors is not None:
            if "longrope" not in self.schemes:
                raise ValueError("--longrope-factors is given but longrope is not among --schemes")
            if not os.path.isfile(self.longrope_factors):
                raise ValueError(f"--longrope-factors {self.longrope_factors!r} is not a file")
        if self.write_scheme != "best" and self.write_scheme not in self.schemes:
            raise ValueError(f"--write-scheme {self.write_scheme!r} is not among --schemes ({' '.join(self.schemes)}) or 'best'")
        if self.write is not None:
            _check_write_folder(self.write, self.folder)
        if self.dtype not in DTYPES:
            raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"--device must be cpu or cuda, got {self.device!r}")


def _check_write_folder(write: str, folder: str) -> None:
    target, source = os.path.abspath(write), os.path.abspath(folder)
    if target == source or target.startswith(source + os.sep) or source.startswith(target + os.sep):
        raise ValueError(f"--write {write!r} must be a folder apart from the checkpoint {folder!r}")
    if os.path.exists(target):
        if not os.path.isdir(target):
            raise ValueError(f"--write {write!r} is a file; pass a new folder")
        if os.listdir(target) and not os.path.isfile(os.path.join(target, WRITE_MARKER)):
            raise ValueError(
                f"--write {write!r} exists and holds files not written by ropelab extend; pass a new folder"
            )
