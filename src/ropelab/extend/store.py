"""Files of an extend run: strict JSON written atomically, and the resume book.

Every file goes to a temporary name in its folder and is moved into place with
``os.replace``: a run killed at any moment leaves the old file or the new one. JSON is
strict (``allow_nan=False``): a NaN or infinity is a bug here, never written as such.

Each evaluated point (a scheme at a length) is one file ``points/<scheme>@<length>.json``
holding its record and the key it was computed under (checkpoint, text, scheme settings,
evaluation settings). A rerun finds the points whose key matches and skips them, so an
interrupted run resumes where it stopped and a run with changed settings redoes what
they touch.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from .. import files

__all__ = ["digest", "point_path", "read_json", "write_json", "write_text"]


def write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`ropelab.files.write_atomic`)."""
    files.write_atomic(path, text)


def write_json(path: str, obj: Any) -> None:
    """Strict JSON (no NaN or infinity: ValueError), atomically."""
    files.write_json(path, obj)


def read_json(path: str, default: Any = None) -> Any:
    """The JSON in ``path``; ``default`` when the file is missing or not valid JSON
    (a result file from a killed run is redone rather than trusted)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return default
    except (json.JSONDecodeError, UnicodeDecodeError):
        return default


def digest(obj: Any) -> str:
    """A short hash of a JSON-able object (the key results are filed under)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def point_path(out: str, scheme: str, length: int) -> str:
    return os.path.join(out, "points", f"{scheme}@{length}.json")
