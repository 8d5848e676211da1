"""One way to check an argument: a wrong type raises TypeError, a wrong value ValueError.

Every message names the argument, shows the value it got and says what was expected,
e.g. ``head_dim must be an integer, got '64' (str)`` or
``num_heads must be an integer >= 1, got 0``. Booleans are never numbers here (``True``
is not a head count), numpy scalars are (an ``np.int64`` from an array is a fine count).

Numpy only, like the rest of the core; front ends check tensors themselves and call these
for their plain arguments.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import numpy as np

__all__ = [
    "LAYOUTS",
    "MAX_HEAD_DIM",
    "MAX_POSITION",
    "check_bool",
    "check_choice",
    "check_device_positions",
    "check_float",
    "check_int",
    "check_layout",
    "check_positions",
    "check_str",
    "check_torch_integer_ops",
    "derived",
    "is_derived",
    "is_finite_number",
    "is_float_dtype",
    "is_int",
    "show",
]

#: largest position magnitude ropelab computes exactly (integers beyond 2**53 are not
#: float64 numbers; the numpy tables refuse them rather than round them)
MAX_POSITION = 2**62
_EXACT_FLOAT_INT = 2**53


#: "interleaved": pairs (x[2i], x[2i+1]) (RoFormer, GPT-J, Meta's Llama code);
#: "half": pairs (x[i], x[i + R/2]) (GPT-NeoX, Hugging Face Llama).
LAYOUTS = ("interleaved", "half")

#: the widest head ropelab accepts; real heads are 32 to 512 wide, and a bound here keeps a
#: mistyped config.json (head_dim 1e9) from allocating gigabytes of frequencies
MAX_HEAD_DIM = 2**16


def show(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters (a 10,000-item list stays one line)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + " ...>"


def _type_error(name: str, expected: str, value: Any) -> TypeError:
    return TypeError(f"{name} must be {expected}, got {show(value)} ({type(value).__name__})")


def _num(x) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _bounds(kind: str, minimum, maximum, *, above=None) -> str:
    low = f"> {_num(above)}" if above is not None else (None if minimum is None else f">= {_num(minimum)}")
    high = None if maximum is None else f"<= {_num(maximum)}"
    parts = [p for p in (low, high) if p]
    return f"{kind} {' and '.join(parts)}" if parts else kind


def is_int(value: Any) -> bool:
    """True for an integer (Python or numpy), never for a bool: the predicate
    :func:`check_int` applies, for code that reports a bad value its own way (a file's
    content)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_float_dtype(dtype: Any) -> bool:
    """True for a numpy floating dtype, and for ml_dtypes' bfloat16 (the one jax uses;
    numpy has none of its own), which numpy does not count as floating."""
    dtype = np.dtype(dtype)
    return dtype.kind == "f" or dtype.name == "bfloat16"


def is_finite_number(value: Any) -> bool:
    """True for a finite real number (int, float, numpy scalar), never for a bool or a
    string: the predicate :func:`check_float` applies."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float64's range
        return False


def check_int(
    name: str,
    value: Any,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    whole_floats: bool = False,
) -> int:
    """``value`` as an int.

    TypeError unless it is an integer (Python or numpy; not a bool; with
    ``whole_floats``, a float with a whole value such as ``4.0`` too), ValueError when it
    lies outside ``[minimum, maximum]`` or is a float that is not whole.
    """
    if isinstance(value, (bool, np.bool_)):
        raise _type_error(name, "an integer", value)
    if isinstance(value, (int, np.integer)):
        number = int(value)
    elif whole_floats and isinstance(value, numbers.Real):
        if not math.isfinite(value) or value != int(value):
            raise ValueError(f"{name} must be a whole number, got {show(value)}")
        number = int(value)
    else:
        raise _type_error(name, "an integer", value)
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise ValueError(f"{name} must be {_bounds('an integer', minimum, maximum)}, got {show(value)}")
    return number


def check_float(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
) -> float:
    """``value`` as a finite float.

    TypeError unless it is a real number (int, float, numpy scalar; not a bool, not a
    string such as ``"1e4"``), ValueError when it is NaN or infinite, below ``minimum``,
    not strictly above ``above``, or above ``maximum``.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise _type_error(name, "a number", value)
    try:
        number = float(value)
    except OverflowError:  # an int beyond float64's range
        number = math.inf
    if (
        not math.isfinite(number)
        or (minimum is not None and number < minimum)
        or (above is not None and number <= above)
        or (maximum is not None and number > maximum)
    ):
        expected = _bounds("a finite number", minimum, maximum, above=above)
        raise ValueError(f"{name} must be {expected}, got {show(value)}")
    return number


def check_bool(name: str, value: Any) -> bool:
    """``value`` itself if it is a bool (or numpy bool); TypeError otherwise (1 is not True)."""
    if not isinstance(value, (bool, np.bool_)):
        raise _type_error(name, "True or False", value)
    return bool(value)


def check_str(name: str, value: Any, *, empty: bool = False) -> str:
    """``value`` if it is a string (TypeError otherwise); ValueError for an empty one
    unless ``empty``."""
    if not isinstance(value, str):
        raise _type_error(name, "a string", value)
    if not value and not empty:
        raise ValueError(f"{name} must be a non-empty string, got ''")
    return value


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` if it is one of ``choices``; ValueError listing them otherwise (TypeError
    when the choices are all strings and ``value`` is not one)."""
    choices = tuple(choices)
    if all(isinstance(c, str) for c in choices) and not isinstance(value, str):
        raise _type_error(name, f"one of {', '.join(map(repr, choices))}", value)
    try:
        known = value in choices
    except TypeError:  # an unhashable value against a set-like
        known = False
    if not known:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {show(value)}")
    return value


def check_layout(layout: Any) -> str:
    """``layout`` must be one of :data:`LAYOUTS` (ValueError naming it otherwise)."""
    return check_choice("layout", layout, LAYOUTS)


def check_positions(name: str, positions: Any) -> np.ndarray:
    """Token positions as a numpy array of integers or reals, exact as float64.

    TypeError for booleans, complex numbers, strings or objects; ValueError for NaN or
    infinity, and for positions of magnitude above 2**53 (float64 would round integers
    there, and reals there are not even whole-number exact).
    """
    arr = np.asarray(positions)
    kind = arr.dtype.kind
    if kind not in "iuf":
        raise TypeError(f"{name} must be integers or real numbers, got dtype {arr.dtype}")
    if arr.size == 0:
        return arr
    if kind == "f":
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be finite; got NaN or infinity")
        worst = float(np.max(np.abs(arr)))
        if worst > _EXACT_FLOAT_INT:
            raise ValueError(
                f"{name} must lie within +-2**53 to be exact in float64, got {worst:g} "
                f"(at most {_EXACT_FLOAT_INT})"
            )
    else:
        # an unsigned max above int64 and a signed min are checked without overflow
        top = int(arr.max())
        bottom = int(arr.min())
        worst = max(abs(top), abs(bottom))
        if worst > _EXACT_FLOAT_INT:
            raise ValueError(
                f"{name} must lie within +-2**53 to be exact in float64, got {worst} "
                f"(at most {_EXACT_FLOAT_INT})"
            )
    return arr


#: torch's unsigned integer dtypes wider than 8 bits are storage types: torch has no min,
#: max, sum or arithmetic for them on the CPU, so they are refused by name
_TORCH_STORAGE_ONLY = ("uint16", "uint32", "uint64")


@lru_cache(maxsize=1)
def _torch_storage_only() -> frozenset:
    """The dtype objects themselves: a set lookup per call, not a str() of the dtype
    (this runs on every decode step)."""
    import torch

    return frozenset(getattr(torch, name) for name in _TORCH_STORAGE_ONLY if hasattr(torch, name))


def check_torch_integer_ops(name: str, dtype: Any) -> None:
    """TypeError naming ``name`` when the torch integer ``dtype`` is one torch cannot
    compute with (uint16, uint32, uint64), saying to convert it."""
    if dtype in _torch_storage_only():
        raise TypeError(
            f"{name} must be int8, int16, int32, int64 or uint8, got dtype {dtype}, which torch "
            f"stores but cannot compute with (no min, max or sums); convert it with .long()"
        )


def check_device_positions(name: str, positions: Any, kind: str, *, concrete: bool, limit: int) -> None:
    """Integer torch/jax positions; when ``concrete`` (values readable without a device
    sync or a trace), also within ``+-limit``. TypeError for other dtypes (and torch's
    uint16, uint32 and uint64, which torch cannot compute with), ValueError for a
    position out of range."""
    dtype = positions.dtype
    if kind == "torch":
        integer = not (dtype.is_floating_point or dtype.is_complex) and str(dtype) != "torch.bool"
        size = positions.numel()
    else:
        integer = np.issubdtype(np.dtype(dtype), np.integer)
        size = positions.size
    if not integer:
        raise TypeError(f"{name} must be an integer {kind} array, got dtype {dtype}")
    if kind == "torch":
        check_torch_integer_ops(name, dtype)
    if concrete and size:
        if kind == "torch" and size <= 16:  # a decode step's few: read as a list, faster than two reductions
            values = positions.reshape(-1).tolist()
            worst = max(abs(min(values)), abs(max(values)))
        else:
            worst = max(abs(int(positions.min())), abs(int(positions.max())))
        if worst > limit:
            raise ValueError(f"{name} must lie within +-{limit}, got {worst}")


# -- fields computed from other fields ---------------------------------------------------
#
# A frozen dataclass stores a field it computed (RopeConfig.rotary_dim from head_dim,
# YaRN.attention_factor from factor) as one of these subclasses. dataclasses.replace
# passes every field back to the constructor; the mark tells it the value was not set by
# the caller, so it is computed again from the new fields instead of kept stale. They
# compare, hash, print and serialise as the plain number.


class _DerivedInt(int):
    __slots__ = ()


class _DerivedFloat(float):
    __slots__ = ()


def derived(value: int | float) -> int | float:
    """``value`` marked as computed (see above)."""
    return _DerivedInt(value) if isinstance(value, int) else _DerivedFloat(value)


def is_derived(value: Any) -> bool:
    """True for a value marked by :func:`derived`."""
    return isinstance(value, (_DerivedInt, _DerivedFloat))
