"""The backend registry of ropelab.kernels: order, status, declining, and the extension
hook (kernels.register) through every entry point.

Shapes: B batch, H heads, T time, D head dim, P table rows.
"""

from __future__ import annotations

import numpy as np
import pytest

from ropelab import RopeConfig, apply_rope, apply_rope_, kernels, rope_tables
from ropelab.kernels import Rows, Status, reference

torch = pytest.importorskip("torch")
from ropelab.torch import rope_op  # noqa: E402


class Spy:
    """A backend as a user would write one: it rotates through the reference path (in
    place by copying back) and records each call it takes or declines."""

    def __init__(self, name="spy", *, usable=True, takes=lambda xs: True):
        self.name, self.devices = name, ("cpu",)
        self.usable, self.takes = usable, takes
        self.asked, self.calls = 0, []

    def status(self):
        self.asked += 1
        return Status(self.usable, "the spy" if self.usable else "the spy is switched off")

    def rope(self, xs, angles, *, layout, inverse, inplace):
        assert type(angles) is Rows
        if not self.takes(xs):
            self.calls.append(("declined", len(xs)))
            return None
        self.calls.append(("inplace" if inplace else "inverse" if inverse else "forward", len(xs)))
        cos, sin, positions = angles
        if inplace:
            return tuple(reference.rotate_inplace(x, cos, sin, layout=layout, positions=positions) for x in xs)
        return tuple(reference.rotate(x, cos, sin, layout=layout, positions=positions, inverse=inverse).contiguous()
                     if isinstance(x, torch.Tensor) else
                     reference.rotate(x, cos, sin, layout=layout, positions=positions, inverse=inverse) for x in xs)


@pytest.fixture
def registered():
    """Register backends for one test; the built-in ones alone again afterwards."""
    before = kernels.backends()
    added = []

    def add(backend):
        kernels.register(backend)
        added.append(backend.name)
        return backend

    yield add
    for name in added:
        if name in (b.name for b in kernels.backends()):
            kernels.unregister(name)
    assert kernels.backends() == before


def _tables(T=6, D=8, layout="half"):
    return rope_tables(RopeConfig(D, layout=layout), np.arange(T))


def test_a_registered_backend_runs_first_for_every_entry_point(registered):
    spy = registered(Spy())
    assert kernels.backends()[0] is spy and kernels.backend() == "spy"
    assert kernels.backend_note().startswith("the spy;")
    cos, sin = _tables()
    x = torch.randn(2, 3, 6, 8)
    want = reference.rotate(x, cos, sin, layout="half")

    torch.testing.assert_close(apply_rope(x, cos, sin, layout="half"), want, rtol=0, atol=0)
    y = x.clone()
    version = y._version
    assert apply_rope_(y, cos, sin, layout="half") is y
    torch.testing.assert_close(y, want, rtol=0, atol=0)
    assert y._version > version  # autograd is told of the write
    xn = x.numpy()
    np.testing.assert_array_equal(apply_rope(xn, cos, sin, layout="half"), want.numpy())
    assert spy.calls == [("forward", 1), ("inplace", 1), ("forward", 1)]

    # the torch op: forward, then the gradient through the inverse rotation
    spy.calls.clear()
    leaf = x.clone().requires_grad_(True)
    g = torch.randn(x.shape)
    (rope_op.rotate(leaf, cos, sin, "half") * g).sum().backward()
    assert spy.calls == [("forward", 1), ("inverse", 1)]
    torch.testing.assert_close(leaf.grad, reference.rotate(g, cos, sin, layout="half", inverse=True),
                               rtol=0, atol=1e-6)
    spy.calls.clear()
    with torch.no_grad():
        q, k = rope_op.rotate_qk(x, x[:, :1], torch.from_numpy(cos).float(), torch.from_numpy(sin).float(), "half")
    assert spy.calls == [("forward", 2)]  # q and k in one call
    torch.testing.assert_close(q, want, rtol=0, atol=1e-6)


def test_unregister_restores_the_built_in_order(registered):
    before = kernels.backends()
    registered(Spy("first"))
    registered(Spy("second"))
    assert [b.name for b in kernels.backends()[:2]] == ["second", "first"]
    registered(Spy("first"))  # the same name again: replaced, and tried first
    assert [b.name for b in kernels.backends()].count("first") == 1
    assert kernels.backends()[0].name == "first"
    kernels.unregister("first")
    kernels.unregister("second")
    assert kernels.backends() == before


def test_an_unusable_backend_is_never_asked(registered):
    spy = registered(Spy(usable=False))
    cos, sin = _tables()
    x = torch.randn(2, 6, 8)
    torch.testing.assert_close(apply_rope(x, cos, sin, layout="half"), reference.rotate(x, cos, sin, layout="half"),
                               rtol=0, atol=1e-6)
    apply_rope_(x, cos, sin, layout="half")
    assert spy.calls == [] and kernels.backend() != "spy"
    # its status is asked once, then kept until reset_backend()
    kernels.backend_note()
    assert spy.asked == 1
    kernels.reset_backend()
    kernels.backend()
    assert spy.asked == 2


def test_a_backend_that_declines_passes_the_call_on(registered, fused_calls):
    spy = registered(Spy(takes=lambda xs: False))
    cos, sin = _tables()
    x = torch.randn(2, 6, 8)
    got = apply_rope(x, cos, sin, layout="half")
    torch.testing.assert_close(got, reference.rotate(x, cos, sin, layout="half"), rtol=0, atol=1e-6)
    assert spy.calls == [("declined", 1)]
    if fused_calls is not None:
        assert fused_calls  # the next backend (numba) took it


def test_arrays_no_backend_takes_together_are_tried_one_by_one(registered, fused_calls):
    spy = registered(Spy(takes=lambda xs: len(xs) == 1))
    cos, sin = _tables()
    q = torch.randn(1, 4, 6, 8)
    k = torch.randn(1, 2, 6, 16)[..., ::2]  # features not adjacent: the numba loops decline it
    got_q, got_k = apply_rope((q, k), cos, sin, layout="half")
    assert spy.calls == [("declined", 2), ("forward", 1), ("forward", 1)]
    if fused_calls is not None:
        assert fused_calls == []  # numba declined the pair as a whole, writing nothing
    torch.testing.assert_close(got_q, reference.rotate(q, cos, sin, layout="half"), rtol=0, atol=1e-6)
    torch.testing.assert_close(got_k, reference.rotate(k, cos, sin, layout="half"), rtol=0, atol=1e-6)


def test_nothing_reaches_a_backend_while_autograd_records(registered):
    spy = registered(Spy())
    cos, sin = _tables()
    leaf = torch.randn(2, 6, 8, requires_grad=True)
    out = kernels.rope(leaf, cos, sin, layout="half")
    assert out.requires_grad and spy.calls == []


def test_register_refuses_what_is_not_a_backend():
    class Nameless:
        devices = ("cpu",)

        def status(self):
            return Status(True, "")

    with pytest.raises(TypeError, match=r"needs name, rope"):
        kernels.register(Nameless())
    spy = Spy(name="")
    with pytest.raises(ValueError, match="non-empty string"):
        kernels.register(spy)
    with pytest.raises(ValueError, match=r"no kernel backend is called 'nope'.*numba"):
        kernels.unregister("nope")
