"""Files of a lab run: atomic writes, and reads that check what they read.

Writes: every file goes to a temporary file of its own (``.tmp-<pid>-<random>-<name>``
in the same folder, created with ``O_EXCL | O_NOFOLLOW``: never an existing file, never
through a symbolic link), is flushed to disk and moved into place with ``os.replace``,
so a run killed at any moment leaves the old file or the new one, never half of one.
Temporaries left by a killed run are removed when the next run takes the folder
(:func:`clean_temporaries`). Files are created ``0666`` less the umask, like any
other output. A write that fails is a :class:`~ropelab.lab.errors.LabError` naming
the file.

Reads: nothing read back is trusted. A file must be a regular file (not a link), of
bounded size, and parse; tensors (safetensors, never pickle) must have exactly the
names, dtypes and shapes the caller expects, checked in the header before any tensor
is built, and finite values. Anything else is a :class:`~ropelab.lab.errors.BadFile`
for the caller to recover from.
"""

from __future__ import annotations

import json
import math
import os
import stat
from typing import Any

import torch

from .. import files
from ..files import TMP_PREFIX
from .errors import BadFile, LabError, write_error

__all__ = [
    "TMP_PREFIX",
    "Layout",
    "clean_temporaries",
    "layout_of",
    "model_tensors",
    "read_bytes",
    "read_json",
    "read_tensors",
    "remove",
    "save_tensors",
    "write_atomic",
    "write_json",
]

#: largest JSON file read back (losses of a long run are well below)
JSON_LIMIT = 64 << 20

#: tensor name -> (dtype, shape): what a safetensors file must hold
Layout = dict[str, tuple[torch.dtype, tuple[int, ...]]]

_ABSENT = object()

# safetensors' dtype names
_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}
_FLAGS_READ = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


# -- writing -----------------------------------------------------------------------


def write_atomic(path: str, data: bytes | str) -> None:
    """Write ``data`` to ``path`` atomically (:func:`ropelab.files.write_atomic`); an
    OSError becomes a LabError naming the file."""
    try:
        files.write_atomic(path, data)
    except OSError as err:
        raise write_error(path, err) from None


def write_json(path: str, obj: Any) -> None:
    """``obj`` as strict JSON (a NaN or infinity is a ValueError, never written)."""
    write_atomic(path, json.dumps(obj, indent=1, allow_nan=False) + "\n")


def save_tensors(path: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Tensors as a safetensors file, atomically."""
    from safetensors.torch import save

    write_atomic(path, save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata))


def remove(path: str) -> None:
    """Delete ``path`` if it is there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        raise LabError(f"cannot remove {path}: {err.strerror}") from None


def clean_temporaries(root: str) -> int:
    """Remove temporaries left under ``root`` by killed runs; how many.

    Call it only while holding ``root``'s lock: then no other run is writing there.
    """
    removed = 0
    for folder, _dirs, names in os.walk(root):  # does not follow links to folders
        for name in names:
            if name.startswith(TMP_PREFIX):
                remove(os.path.join(folder, name))
                removed += 1
    return removed


# -- reading -----------------------------------------------------------------------


def read_bytes(path: str, *, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes.

    FileNotFoundError when there is none; BadFile for a link, a folder, a larger file or
    a read error.
    """
    try:
        fd = os.open(path, _FLAGS_READ)
    except FileNotFoundError:
        raise
    except OSError as err:
        if os.path.islink(path):
            raise BadFile(path, "is a symbolic link; the lab reads only its own files") from None
        raise BadFile(path, f"cannot be read ({err.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise BadFile(path, "is not a regular file")
        if info.st_size > limit:
            raise BadFile(path, f"has {info.st_size} bytes, more than the {limit} it can hold")
        chunks, size = [], 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise BadFile(path, f"grew past {limit} bytes while read")
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as err:
        raise BadFile(path, f"cannot be read ({err.strerror})") from None
    finally:
        os.close(fd)


def _no_constant(name):
    raise ValueError(f"{name} is not a number JSON allows")


def read_json(path: str, default: Any = _ABSENT) -> Any:
    """The JSON value in ``path`` (strict: no NaN or Infinity); ``default`` when absent."""
    try:
        data = read_bytes(path, limit=JSON_LIMIT)
    except FileNotFoundError:
        if default is _ABSENT:
            raise BadFile(path, "is missing") from None
        return default
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise BadFile(path, f"is not valid JSON ({err})") from None


def layout_of(tensors: dict[str, torch.Tensor]) -> Layout:
    return {name: (t.dtype, tuple(t.shape)) for name, t in tensors.items()}


def _layout_bytes(layout: Layout) -> int:
    return sum(math.prod(shape) * torch.empty((), dtype=dtype).element_size() for dtype, shape in layout.values())


def _names(names) -> str:
    names = sorted(names)
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _check_header(path: str, data: bytes, layout: Layout) -> dict[str, str]:
    """Check the safetensors header against ``layout``; its metadata."""
    if len(data) < 8:
        raise BadFile(path, "is not a safetensors file (shorter than its header size)")
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8:
        raise BadFile(path, "is not a safetensors file (truncated header)")
    try:
        header = json.loads(data[8 : 8 + size].decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadFile(path, "is not a safetensors file (unreadable header)") from None
    if not isinstance(header, dict):
        raise BadFile(path, "is not a safetensors file (header is not a table)")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise BadFile(path, "is not a safetensors file (metadata is not a table)")
    missing, unexpected = layout.keys() - header.keys(), header.keys() - layout.keys()
    if missing or unexpected:
        parts = ([f"missing {_names(missing)}"] if missing else []) + ([f"unexpected {_names(unexpected)}"] if unexpected else [])
        raise BadFile(path, f"does not hold the tensors the run expects ({'; '.join(parts)})")
    for name, (dtype, shape) in layout.items():
        info = header[name]
        if not isinstance(info, dict):
            raise BadFile(path, f"tensor {name}: malformed header entry")
        if info.get("dtype") != _DTYPES.get(dtype):
            raise BadFile(path, f"tensor {name} is {info.get('dtype')}, expected {_DTYPES.get(dtype, dtype)}")
        if info.get("shape") != list(shape):
            raise BadFile(path, f"tensor {name} has shape {info.get('shape')}, expected {list(shape)}")
    return metadata


def read_tensors(path: str, layout: Layout) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors of a safetensors file holding exactly ``layout``, finite; and its metadata.

    The header is checked before any tensor is built; FileNotFoundError when absent,
    BadFile for anything else that is wrong.
    """
    from safetensors.torch import load

    data = read_bytes(path, limit=_layout_bytes(layout) + (1 << 20))
    metadata = _check_header(path, data, layout)
    try:
        tensors = load(data)
    except Exception as err:  # safetensors' own error type varies between releases
        raise BadFile(path, f"is not a valid safetensors file ({err})") from None
    for name, (dtype, shape) in layout.items():  # what was built, not only what was declared
        t = tensors[name]
        if t.dtype != dtype or tuple(t.shape) != shape:
            raise BadFile(path, f"tensor {name} is {t.dtype} {tuple(t.shape)}, expected {dtype} {shape}")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise BadFile(path, f"tensor {name} holds NaN or infinite values")
    return tensors, metadata


# -- model weights -----------------------------------------------------------------


def model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict on the CPU, a tied weight (embedding = lm head) once,
    under its first name."""
    seen, out = set(), {}
    for name, t in model.state_dict().items():
        key = (t.data_ptr(), t.shape, t.dtype)
        if key in seen and t.numel():
            continue
        seen.add(key)
        out[name] = t.detach().cpu().contiguous()
    return out


def load_model_tensors(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load tensors of :func:`model_tensors`'s layout (already checked) into ``model``."""
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    names = dict(model.named_parameters(remove_duplicate=False))
    kept = {id(names[n]) for n in tensors if n in names}
    missing = [n for n in missing if not (n in names and id(names[n]) in kept)]
    if missing or unexpected:  # the layout check makes this unreachable; kept as a guard
        raise RuntimeError(f"weights do not fit the model (missing {missing}, unexpected {unexpected})")
