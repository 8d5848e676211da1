"""Every public ``forward`` / ``__call__`` in the PyTorch and Flax NNX front ends says
what it takes and returns: the classes of every module of ``ropelab.torch`` and
``ropelab.nnx`` are walked, and a method defined without a docstring of its own fails."""

import importlib
import inspect
import pkgutil

import pytest


def _undocumented(package_name: str) -> list[str]:
    """``module.Class.method`` of each public forward/__call__ without its own docstring."""
    package = importlib.import_module(package_name)
    modules = [package] + [
        importlib.import_module(f"{package_name}.{info.name}")
        for info in pkgutil.iter_modules(package.__path__)
        if not info.name.startswith("_")
    ]
    missing = []
    for module in modules:
        for name, cls in vars(module).items():
            if not inspect.isclass(cls) or name.startswith("_") or cls.__module__ != module.__name__:
                continue
            for method in ("forward", "__call__"):
                fn = vars(cls).get(method)
                if fn is None:
                    continue
                fn = getattr(fn, "__func__", fn)  # staticmethod / classmethod
                if not (fn.__doc__ or "").strip():
                    missing.append(f"{module.__name__}.{name}.{method}")
    return sorted(set(missing))


@pytest.mark.parametrize("package, framework", [("ropelab.torch", "torch"), ("ropelab.nnx", "flax")])
def test_every_public_forward_and_call_has_a_docstring(package, framework):
    pytest.importorskip(framework)
    missing = _undocumented(package)
    assert not missing, f"no docstring: {missing}"


def test_the_walk_finds_methods_and_sees_a_missing_docstring(monkeypatch):
    """The check can fail: a forward stripped of its docstring is reported."""
    pytest.importorskip("torch")
    from ropelab.torch import attention

    monkeypatch.setattr(attention.Attention.forward, "__doc__", None)
    assert "ropelab.torch.attention.Attention.forward" in _undocumented("ropelab.torch")
