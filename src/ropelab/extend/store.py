"""Files of an extend run: strict JSON written atomically, and the resume book.

Every file goes to a temporary name in its folder and is moved into place with
``os.replace``: a run killed at any moment leaves the old file or the new one. JSON is
strict (``allow_nan=False``): a NaN or infinity is a bug here, never written as such.

Each evaluated point (a scheme at a length) is one file ``points/<scheme>@<length>.json``
holding its record, the key it was computed under (checkpoint, text, scheme settings,
evaluation settings, the version of the files' format) and a checksum of both. A rerun
finds the points whose key matches and skips them, so an interrupted run resumes where
it stopped and a run with changed settings redoes what they touch.

Nothing read back is trusted (the reads of :mod:`ropelab.lab.store`): a file that does
not parse, does not hold what this version writes, or does not match its checksum (a
damaged or edited file) is refused in one line naming it, and its work is done again.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from .. import files
from ..checks import is_finite_number, is_int, show
from ..lab import store as lab_store
from ..lab.errors import BadFile

__all__ = [
    "FORMAT",
    "RECORD_FIELDS",
    "BadFile",
    "check_record",
    "check_scored",
    "digest",
    "point_path",
    "read_json",
    "sealed",
    "unseal",
    "warn",
    "write_json",
    "write_text",
]

#: version of the resume files' content; part of every key, so files another version
#: wrote are redone rather than read
FORMAT = 2

#: the fields of a point's record, as this version writes them
RECORD_FIELDS = ("scheme", "length", "factor", "bits_per_token", "tokens", "passkey_depths",
                 "passkey_accuracy", "passkey_mean", "note", "rope")


def write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`ropelab.files.write_atomic`)."""
    files.write_atomic(path, text)


def write_json(path: str, obj: Any) -> None:
    """Strict JSON (no NaN or infinity: ValueError), atomically."""
    files.write_json(path, obj)


def read_json(path: str, default: Any = None) -> Any:
    """The JSON in ``path`` (strict: no NaN or Infinity); ``default`` when the file is
    missing; :class:`BadFile` naming it when it is not a regular file or not valid JSON."""
    return lab_store.read_json(path, default)


def warn(message: str) -> None:
    """One line on stderr: a file read back was refused and what the run does instead."""
    print(f"ropelab extend: {message}", file=sys.stderr, flush=True)


def digest(obj: Any) -> str:
    """A short hash of a JSON-able object (the key results are filed under)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def point_path(out: str, scheme: str, length: int) -> str:
    return os.path.join(out, "points", f"{scheme}@{length}.json")


# -- the resume book -----------------------------------------------------------------


def sealed(key: str, name: str, value: Any) -> dict:
    """``{"key": key, name: value, "check": ...}``: what a resume file holds."""
    return {"key": key, name: value, "check": digest({"key": key, name: value})}


def unseal(path: str, saved: Any, key: str, name: str, check: Callable[[str, Any], Any]) -> Any:
    """``check(path, value)`` of the ``name`` entry of a resume file read from ``path``,
    when the file was filed under ``key``; None when it is missing or was filed under
    another key (other settings, or another version: not an error). BadFile when it is
    not a resume file, ``check`` refuses its content, or its checksum does not match
    (damaged, or edited by hand)."""
    if saved is None:
        return None
    if isinstance(saved, dict) and isinstance(saved.get("key"), str) and saved["key"] != key:
        return None  # other settings, or another version's file (the format is part of the key)
    if not isinstance(saved, dict) or set(saved) != {"key", name, "check"}:
        raise BadFile(path, f"is not a resume file (expected an object with key, {name} and check)")
    value = check(path, saved[name])
    if saved["check"] != digest({"key": key, name: saved[name]}):
        raise BadFile(path, "does not match its checksum (damaged or edited)")
    return value


def _fraction(value) -> bool:
    return is_finite_number(value) and 0 <= value <= 1


def check_record(path: str, record: Any, *, scheme: str, length: int, depths: list, rope: dict) -> dict:
    """``record`` if it is a point record of ``scheme`` at ``length`` as this version
    writes it (every field, of its type, finite numbers); BadFile naming what is not."""
    if not isinstance(record, dict):
        raise BadFile(path, f"holds the record {show(record)}, expected an object with the fields {', '.join(RECORD_FIELDS)}")
    missing = [k for k in RECORD_FIELDS if k not in record]
    unknown = sorted(set(record) - set(RECORD_FIELDS))
    if missing or unknown:
        parts = ([f"without {', '.join(missing)}"] if missing else []) + ([f"with {', '.join(unknown)}"] if unknown else [])
        raise BadFile(path, f"holds a record {' and '.join(parts)}; this version writes {', '.join(RECORD_FIELDS)}")
    if (record["scheme"], record["length"]) != (scheme, length):
        raise BadFile(path, f"holds the record of {record['scheme']!r} at {record['length']!r}, expected {scheme} at {length}")
    accuracy = record["passkey_accuracy"]
    checks = (
        ("factor", is_finite_number(record["factor"]) and record["factor"] >= 1, "a number >= 1"),
        ("bits_per_token", is_finite_number(record["bits_per_token"]) and record["bits_per_token"] >= 0, "a number >= 0"),
        ("tokens", is_int(record["tokens"]) and record["tokens"] >= 1, "an integer >= 1"),
        ("passkey_depths", record["passkey_depths"] == depths, f"the run's depths {depths}"),
        ("passkey_accuracy", accuracy is None or (isinstance(accuracy, list) and len(accuracy) == len(depths)
                                                 and all(map(_fraction, accuracy))),
         f"null or {len(depths)} numbers in [0, 1]"),
        ("passkey_mean", record["passkey_mean"] is None if accuracy is None else _fraction(record["passkey_mean"]),
         "a number in [0, 1] (null without accuracies)"),
        ("note", isinstance(record["note"], str), "a string"),
        ("rope", record["rope"] == json.loads(json.dumps(rope)), "the scheme's RoPE configuration"),
    )
    for name, ok, expected in checks:
        if not ok:
            raise BadFile(path, f"holds a record whose {name} is {show(record[name])}, expected {expected}")
    return record


def check_scored(path: str, scored: Any, pairs: int) -> list[tuple[list[float], float]]:
    """The scored candidates of a search file: ``[[factors, value], ...]`` with ``pairs``
    factors >= 1 and a value >= 0 each; BadFile naming the first that is not."""
    if not isinstance(scored, list):
        raise BadFile(path, f"holds scored {show(scored)}, expected a list of [factors, value]")
    out = []
    for i, item in enumerate(scored):
        ok = (isinstance(item, list) and len(item) == 2 and isinstance(item[0], list) and len(item[0]) == pairs
              and all(is_finite_number(v) and v >= 1 for v in item[0])
              and is_finite_number(item[1]) and item[1] >= 0)
        if not ok:
            raise BadFile(path, f"scored entry {i} is {show(item)}, expected [{pairs} factors >= 1, a value >= 0]")
        out.append(([float(v) for v in item[0]], float(item[1])))
    return out
