"""Length-dependent schemes (dynamic NTK, LongRoPE) under torch.compile(fullgraph=True):
their turn limbs come from the op ``ropelab::limbs`` at call time, so a compiled
module follows the length as eager does, with no graph break and no recompile per
length; and the length rules shared with eager (at least max(positions) + 1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch._dynamo.testing import CompileCounter

from ropelab import RopeConfig, rope_tables, scaling
from ropelab.torch import Attention, RotaryEmbedding

SCHEMES = {
    "dynamic": scaling.DynamicNTK(2.0, 4),
    "longrope": scaling.LongRoPE((1.0, 1.5, 2.0, 3.0), (2.0, 4.0, 8.0, 16.0), 4, factor=4.0),
}


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("name", sorted(SCHEMES))
@pytest.mark.parametrize("given", [True, False])
def test_compiled_rotary_follows_the_length_like_eager_without_recompiling(name, given):
    """Lengths on both sides of the original one (4): the short and long regimes."""
    rope = RotaryEmbedding(RopeConfig(8, scaling=SCHEMES[name]))
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 2, 3, 8, generator=g), torch.randn(1, 2, 3, 8, generator=g)
    counter = CompileCounter()
    if given:
        compiled = torch.compile(lambda q, k, p, n: rope(q, k, p, seq_len=n), backend=counter,
                                 fullgraph=True, dynamic=True)
    else:
        compiled = torch.compile(lambda q, k, p: rope(q, k, p), backend=counter, fullgraph=True, dynamic=True)
    for length in (3, 4, 9, 40, 5):
        positions = torch.arange(length - 3, length)
        args = (q, k, positions, length) if given else (q, k, positions)
        want = rope(q, k, positions, seq_len=length)
        got = compiled(*args)
        for w, o in zip(want, got, strict=True):
            torch.testing.assert_close(o, w, rtol=0, atol=5e-7)
    assert counter.frame_count == 1


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_compiled_attention_with_a_mask_or_positions_equals_eager(name):
    attention = Attention(16, 2, rope=RopeConfig(8, scaling=SCHEMES[name])).eval()
    x = torch.randn(2, 6, 16, generator=torch.Generator().manual_seed(1))
    compiled = torch.compile(attention, fullgraph=True, dynamic=True)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1] * 6])
    with torch.no_grad():
        for kwargs in ({}, {"positions": torch.arange(6) + 10}, {"attention_mask": mask}):
            torch.testing.assert_close(compiled(x, **kwargs), attention(x, **kwargs), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_length_rules_are_the_same_in_numpy_torch_and_compiled_code(name):
    """All-negative positions say nothing of a length: seq_len= is asked for; a seq_len
    shorter than the positions it serves is refused; negative positions with a seq_len
    are rotations backwards, as eager NumPy computes them."""
    config = RopeConfig(8, scaling=SCHEMES[name])
    rope = RotaryEmbedding(config)
    q = torch.randn(1, 1, 2, 8)
    negative = np.array([-5, -3])
    for positions in (negative, torch.from_numpy(negative)):
        with pytest.raises(ValueError, match=r"all negative \(the largest is -3\); pass seq_len="):
            rope_tables(config, positions)
        with pytest.raises(ValueError, match=r"seq_len=3 is shorter than the positions it serves \(the largest is 11\)"):
            rope_tables(config, positions + 14, seq_len=3)
    compiled = torch.compile(lambda q, p: rope(q, positions=p), fullgraph=True)
    with pytest.raises(ValueError, match=r"all negative"):
        compiled(q, torch.from_numpy(negative))
    cos, sin = rope_tables(config, negative, seq_len=16)
    want_cos, want_sin = rope_tables(config, -negative, seq_len=16)
    np.testing.assert_allclose(cos, want_cos, rtol=0, atol=1e-15)
    np.testing.assert_allclose(sin, -want_sin, rtol=0, atol=1e-15)


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_positions_off_the_host_read_their_length_instead_of_failing(name, monkeypatch):
    """Positions that cannot be read without waiting for their device (on a GPU) still
    get max(positions) + 1 as their length, read back, as transformers does: the call
    waits rather than fails. Seen here by making CPU positions count as off the host."""
    from ropelab import rows

    config = RopeConfig(8, scaling=SCHEMES[name])
    positions = torch.arange(3, 9)
    want = rope_tables(config, positions)
    monkeypatch.setattr(rows, "host_readable", lambda positions, kind: False)
    got = rope_tables(config, positions)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=0)
