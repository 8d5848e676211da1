"""Optional dependencies: import on use, and say which extra installs them.

The core of ropelab needs numpy alone. Frameworks are looked up in ``sys.modules``
when an array is classified (an array of a framework means the framework is already
imported), and imported through :func:`require` only where a front end needs them.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

# module name -> the pip extra that brings it
EXTRAS = {
    "torch": "torch",
    "jax": "jax",
    "flax": "jax",
    "transformers": "hf",
    "numba": "kernels",
    "matplotlib": "plot",
    "safetensors": "lab",
    "tqdm": "lab",
}


def require(module: str, *, feature: str | None = None) -> ModuleType:
    """Import ``module`` or raise ImportError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        extra = EXTRAS.get(top, top)
        what = f"{feature} needs" if feature else "this needs"
        raise ImportError(
            f"{what} the optional dependency {top!r}, which is not installed; "
            f"install it with: pip install 'ropelab[{extra}]'"
        ) from err


def available(module: str) -> bool:
    """True when ``module`` can be imported (without importing it if already loaded)."""
    if module in sys.modules:
        return True
    return importlib.util.find_spec(module) is not None


def array_kind(x) -> str:
    """Classify an array as ``"numpy"``, ``"torch"`` or ``"jax"``; TypeError otherwise."""
    import numpy as np

    if isinstance(x, np.ndarray):
        return "numpy"
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return "torch"
    jax = sys.modules.get("jax")
    if jax is not None and isinstance(x, jax.Array):
        return "jax"
    raise TypeError(
        f"expected a numpy array, torch tensor or jax array, got {type(x).__module__}."
        f"{type(x).__qualname__}"
    )


def lazy_exports(package: str, where: dict[str, str]):
    """``(__getattr__, __dir__)`` for a package whose public names are imported on first
    use: ``where`` maps each name to the submodule that defines it, so importing the
    package (or one light submodule of it) does not import the heavy ones."""

    def __getattr__(name: str):
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__():
        return sorted(set(vars(sys.modules[package])) | set(where))

    return __getattr__, __dir__
