"""Exact cos/sin rows in float32, computed on the positions' own device (torch, jax).

A float32 angle ``p * inv_freq`` is off by up to ~0.03 rad at p = 1,000,000 (one float32
ulp of 1e6 is 0.0625), which is how most libraries lose accuracy at long context; float64
cannot be asked of every accelerator. Here the angle is reduced in *turns* with integer
arithmetic that float32 carries out exactly, so no table indexed by position is needed
and nothing leaves the device:

- Host, once per frequency vector: each frequency's turns ``inv_freq / (2 pi)`` (the
  float64 ``inv_freq`` the scheme defines, divided by a 256-bit ``2 pi`` in exact integer
  arithmetic), its fractional part as a 66-bit fixed-point number, stored as six 11-bit
  limbs in float32 (:func:`turn_limbs`; integers below 2048 are exact in float32).
- Device, per call: ``|p|`` split into three 11-bit limbs by integer shifts. Every limb
  product is below 2**22 and every sum of three below 2**24, so the fraction of a turn
  ``frac(|p| * turns)`` is formed exactly to 22 bits, plus a small float32 remainder. A
  quarter-turn reduction leaves an angle within pi/4 (+ a hair) for float32 ``sin``/``cos``,
  whose results are then rotated by the quarter (exact swaps and signs), and by the sign of
  ``p`` (negative positions are rotations by negative angles).

Error against the true cos and sin of ``p * inv_freq``: below 3e-7 absolute for every
integer ``|p| < 2**31`` (float32 sin/cos of the small angle dominates). Positions up to
2**33 in magnitude keep the bound; beyond that the top limb's products stop being exact.

Every step is elementwise (shifts, masks, multiply-adds, floor, round, sin, cos), so the
rows trace under ``torch.compile(fullgraph=True, dynamic=True)`` and ``jax.jit`` with no
graph break, no host round trip and no recompile per position value.
"""

from __future__ import annotations

import math
import sys
import threading
from functools import lru_cache

import numpy as np

from .checks import check_device_positions

__all__ = ["LIMBS", "MAX_EXACT_POSITION", "call_length", "call_limbs", "host_readable", "jax_rows", "length_regimes", "limbs_for", "rope_rows", "torch_limbs", "torch_rows", "turn_limbs"]

# floor(2**256 / (2 pi)): the turns of a radian to 256 bits
_INV_TWO_PI_256 = 0x28BE60DB9391054A7F09D5F47D4D377036D8A5664F10E4107F9458EAF7AEF158
_BITS = 11  # limb width: limb products < 2**22, sums of three < 2**24 (exact in float32)
LIMBS = 6  # fraction limbs: 66 bits of a turn
_FRACTION_BITS = _BITS * LIMBS
_MASK = (1 << _BITS) - 1
_TWO_PI_F32 = float(np.float32(2 * math.pi))


def _turns_fixed(inv_freq: float) -> int:
    """frac(inv_freq / (2 pi)) * 2**66, rounded to the nearest integer (exact arithmetic)."""
    num, den = float(inv_freq).as_integer_ratio()  # den is a power of two
    scaled = num * _INV_TWO_PI_256  # inv_freq / (2 pi) * 2**256 * den
    shift = 256 + den.bit_length() - 1 - _FRACTION_BITS
    fixed = (scaled + (1 << (shift - 1))) >> shift
    return fixed & ((1 << _FRACTION_BITS) - 1)


@lru_cache(maxsize=64)
def _limbs_cached(freq_bytes: bytes) -> np.ndarray:
    inv_freq = np.frombuffer(freq_bytes, dtype=np.float64)
    out = np.empty((LIMBS, inv_freq.size), dtype=np.float32)
    for col, f in enumerate(inv_freq):
        fixed = _turns_fixed(f)
        for j in range(LIMBS):  # limb j weighs 2**(-11 (j + 1))
            out[j, col] = (fixed >> (_BITS * (LIMBS - 1 - j))) & _MASK
    out.setflags(write=False)
    return out


def turn_limbs(inv_freq) -> np.ndarray:
    """The fractional turns of each frequency as ``(6, R/2)`` float32 11-bit limbs.

    Row ``j`` holds the integers ``T_j`` (0..2047) with
    ``frac(inv_freq / (2 pi)) ~= sum_j T_j * 2**(-11 (j + 1))`` to 2**-67.
    ``inv_freq`` must be finite and non-negative (what every scheme gives).
    """
    freq = np.ascontiguousarray(inv_freq, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(freq)) or np.any(freq < 0):
        raise ValueError("inv_freq must be finite and >= 0 to form exact rows")
    return _limbs_cached(freq.tobytes())


def _fraction(a_limbs, limbs, floor, round_):
    """Quarter-reduced turns: (quadrant q in 0..3 as float, turn u within +-1/8 + 2**-8).

    ``a_limbs``: the three float32 limbs of |p| (each shaped like the positions + (1,));
    ``limbs``: the six frequency limbs, each shaped (R/2,).
    """
    p0, p1, p2 = a_limbs
    t1, t2, t3, t4, t5, t6 = limbs
    # S_k: the products of weight 2**(-11 k); k <= 0 are whole turns and drop out
    s1 = p0 * t1 + p1 * t2 + p2 * t3
    s2 = p0 * t2 + p1 * t3 + p2 * t4
    s3 = p0 * t3 + p1 * t4 + p2 * t5
    s4 = p0 * t4 + p1 * t5 + p2 * t6
    s5 = p0 * t5 + p1 * t6
    # 22 exact bits of the turn: (s1 mod 2**11) * 2**11 + s2 < 2**24, then mod 2**22
    whole = (s1 - floor(s1 * 2.0**-11) * 2.0**11) * 2.0**11 + s2
    whole = whole - floor(whole * 2.0**-22) * 2.0**22
    g = whole * 2.0**-22  # in [0, 1), exact
    q = round_(g * 4.0)  # nearest quarter, 0..4
    g = g - q * 0.25  # within +-1/8, exact
    rest = s3 * 2.0**-33 + (s4 * 2.0**-44 + s5 * 2.0**-55)
    q = q - floor(q * 0.25) * 4.0  # 4 -> 0
    return q, g + rest


def _finish(q, u, negative, sin, cos, where, factor):
    angle = u * _TWO_PI_F32
    c, s = cos(angle), sin(angle)
    # rotate by q quarter turns: (cos, sin) of (q pi/2) are exact 0/+-1
    cq = abs(q - 2.0) - 1.0
    sq = 1.0 - abs(q - 1.0)
    cos_out = c * cq - s * sq
    sin_out = s * cq + c * sq
    sin_out = where(negative, -sin_out, sin_out)
    if factor != 1.0:
        cos_out = cos_out * factor
        sin_out = sin_out * factor
    return cos_out, sin_out


def torch_rows(positions, limbs, *, attention_factor: float = 1.0):
    """cos, sin float32 of ``positions[..., None] * inv_freq`` on the positions' device.

    Args:
        positions: an integer torch tensor, any shape.
        limbs: ``turn_limbs(inv_freq)`` as a float32 tensor ``(6, R/2)`` on the
            positions' device (modules keep it as a buffer; :func:`rope_rows` makes it).
        attention_factor: multiplies both rows (YaRN's and LongRoPE's temperature).

    Returns ``(cos, sin)``, each ``positions.shape + (R/2,)``, float32.
    """
    import torch

    # int64 first: |int32 -2**31| would wrap
    a = (positions if positions.dtype == torch.int64 else positions.long()).abs()
    # (..., 1) float32 limbs of |p|: 11, 11 and the rest (exact below 2**33)
    parts = [(((a >> (_BITS * i)) & _MASK) if i < 2 else (a >> (_BITS * i))).to(torch.float32)[..., None]
             for i in range(3)]
    q, u = _fraction(parts, limbs.unbind(0), torch.floor, torch.round)
    negative = (positions < 0)[..., None]
    return _finish(q, u, negative, torch.sin, torch.cos, torch.where, float(attention_factor))


def jax_rows(positions, limbs, *, attention_factor: float = 1.0):
    """:func:`torch_rows` for jax arrays: float32 rows of integer ``positions``."""
    import jax.numpy as jnp

    if jnp.issubdtype(positions.dtype, jnp.signedinteger) and positions.dtype.itemsize < 4:
        positions = positions.astype(jnp.int32)  # |-128| in int8 (and |-32768| in int16) would wrap
    a = jnp.abs(positions)
    if a.dtype == jnp.int32:  # |-2**31| wraps to -2**31, whose bits as uint32 are 2**31
        a = a.astype(jnp.uint32)
    parts = [(((a >> (_BITS * i)) & _MASK) if i < 2 else (a >> (_BITS * i))).astype(jnp.float32)[..., None]
             for i in range(3)]
    q, u = _fraction(parts, tuple(limbs[j] for j in range(LIMBS)), jnp.floor, jnp.round)
    negative = (positions < 0)[..., None]
    return _finish(q, u, negative, jnp.sin, jnp.cos, jnp.where, float(attention_factor))


# -- rope_tables for torch and jax positions ------------------------------------------

#: positions of larger magnitude lose the exactness bound (the top limb's products)
MAX_EXACT_POSITION = 2**33 - 1


def host_readable(positions, kind: str) -> bool:
    """Whether ``positions`` (of array ``kind``: "numpy", "torch" or "jax") can be read
    without a device sync or a trace: numpy arrays, CPU tensors outside compile, CPU jax
    arrays outside jit."""
    if kind == "numpy":
        return True
    if kind == "torch":
        import torch

        return positions.device.type == "cpu" and not torch.compiler.is_compiling()
    import jax

    return not isinstance(positions, jax.core.Tracer) and all(
        d.platform == "cpu" for d in positions.devices()
    )


def _size(positions) -> int:
    return int(positions.numel()) if hasattr(positions, "numel") else int(positions.size)


def length_from(largest: int | None, config) -> int:
    """A length-dependent scheme's length when no seq_len is given: ``largest + 1`` for
    the largest position, as transformers reads it (1 for no positions). Positions all
    negative say nothing of a length: ValueError asking for seq_len."""
    if largest is None:
        return 1
    if largest < 0:
        raise ValueError(
            f"{config.scaling.name} reads its length as max(positions) + 1, and these positions "
            f"are all negative (the largest is {largest}); pass seq_len= for them"
        )
    return largest + 1


def check_length_covers(seq_len: int, largest: int | None, config) -> None:
    """ValueError when a given ``seq_len`` is shorter than the positions it serves."""
    if largest is not None and seq_len <= largest:
        raise ValueError(
            f"seq_len={seq_len} is shorter than the positions it serves (the largest is "
            f"{largest}); {config.scaling.name} needs seq_len >= max(positions) + 1 = {largest + 1}"
        )


def _length(positions, kind: str, config) -> int:
    """max(positions) + 1, for length-dependent schemes when no seq_len is given. Read
    on the host: positions on an accelerator wait for it here (as transformers' dynamic
    schemes do; pass seq_len= to spare the wait); traced jax positions cannot be read."""
    if kind == "jax":
        import jax

        if isinstance(positions, jax.core.Tracer):
            raise ValueError(
                "a length-dependent scheme (dynamic NTK, LongRoPE) needs seq_len= (a static "
                "int) for positions traced by jax: max(positions) + 1 is not known while tracing"
            )
    return length_from(int(positions.max()) if _size(positions) else None, config)


#: turn limbs kept per config besides its base ones (length-dependent schemes' regimes)
_REGIMES_KEPT = 8


def _compiling() -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and torch.compiler.is_compiling()


def _check_static_seq_len(seq_len) -> None:
    """TypeError for a ``seq_len`` traced by ``jax.jit``: it picks host-made frequencies,
    so it must be known when the function is traced."""
    jax = sys.modules.get("jax")
    if jax is not None and isinstance(seq_len, jax.core.Tracer):
        raise TypeError(
            "seq_len must be a static Python int, got a value traced by jax.jit; mark it static "
            "(jax.jit(f, static_argnames='seq_len') or static_argnums) or pass it from outside the jitted function"
        )


def limbs_for(config, seq_len: int | None = None) -> np.ndarray:
    """:func:`turn_limbs` of ``config.inv_freq(seq_len)``, kept on the config.

    A config makes its base frequencies' limbs when it is built, so that
    ``torch.compile`` reads them as a constant instead of tracing host arithmetic; a
    length-dependent scheme's other regimes (dynamic NTK past its original length,
    LongRoPE's long factors) are made on first use, outside compiled code, a few kept.
    """
    _check_static_seq_len(seq_len)
    key = config.scaling.regime(seq_len) if config.dynamic else None
    cache = config._turn_limbs
    found = cache.get(key)
    if found is None:
        if _compiling():
            raise RuntimeError(
                f"the {config.scaling.name} frequencies for seq_len={seq_len} are not made yet; "
                "call rope_tables once outside torch.compile at this length first"
            )
        found = turn_limbs(config.inv_freq(seq_len))
        if len(cache) > _REGIMES_KEPT:
            cache.pop(next(k for k in cache if k != config.scaling.regime(None)), None)
        cache[key] = found
    return found


def length_regimes(config, bound: int | None = None, *, limit: int = 4) -> list[int] | None:
    """The first length of each regime a length-dependent scheme passes through over the
    lengths ``1..bound`` (None: every length), ascending; None when there are more than
    ``limit`` (dynamic NTK grows new frequencies at every length past its original one).

    Traced positions whose length can only be one of these regimes get the rows of
    each and pick one by the traced length.
    """
    firsts = [1]
    while True:
        last = config.scaling.regime(firsts[-1]).last
        if last is None or (bound is not None and last >= bound):
            return firsts
        if len(firsts) == limit:
            return None
        firsts.append(last + 1)


def call_limbs(config, positions, kind: str, *, seq_len: int | None = None):
    """The turn limbs for a call's torch or jax ``positions``, once they are checked
    (integers within :data:`MAX_EXACT_POSITION`); a length-dependent scheme reads
    ``seq_len`` (at least ``max(positions) + 1``, checked where the positions can be
    read), by default ``max(positions) + 1`` where that needs no device read. A numpy
    array, or under torch.compile for a length-dependent scheme a float32 tensor on the
    positions' device (made at call time: :mod:`ropelab.torch.limbs_op`)."""
    concrete = host_readable(positions, kind)
    check_device_positions("positions", positions, kind, concrete=concrete, limit=MAX_EXACT_POSITION)
    if not config.dynamic:
        return limbs_for(config)
    if kind == "torch" and _compiling():  # made at call time by an op: see torch.limbs_op
        from .torch import limbs_op

        return limbs_op.limbs(config, positions, seq_len)
    return limbs_for(config, call_length(config, positions, kind, seq_len, readable=concrete))


def call_length(config, positions, kind: str, seq_len: int | None, *, readable: bool) -> int:
    """A length-dependent scheme's length for a call: ``seq_len``, checked against the
    positions where they are ``readable`` without waiting for a device, or by default
    ``max(positions) + 1``."""
    if seq_len is None:
        return _length(positions, kind, config)
    if readable and _size(positions):
        check_length_covers(seq_len, int(positions.max()), config)
    return seq_len


# limbs copied to a device, by (id of the kept numpy limbs, device): (limbs, tensor)
_ON_DEVICE: dict = {}
_ON_DEVICE_KEPT = 64
_ON_DEVICE_LOCK = threading.Lock()


def torch_limbs(limbs: np.ndarray, device):
    """Kept turn ``limbs`` (:func:`limbs_for`) as a float32 torch tensor on ``device``,
    copied there once: a host-to-device copy per call would wait for the device's queue
    to drain (torch synchronises a copy from pageable memory), a stall every decode step.
    Under torch.compile the copy is traced as a constant instead."""
    import torch

    if isinstance(limbs, torch.Tensor):  # made on the device by torch.limbs_op
        return limbs
    if _compiling():
        # a copy: torch warns on a read-only array (the kept limbs are); 6 x R/2 numbers
        return torch.from_numpy(limbs.copy()).to(device)
    key = (id(limbs), str(device))
    found = _ON_DEVICE.get(key)
    if found is not None and found[0] is limbs:  # (an id is reused only once its array is gone)
        return found[1]
    tensor = torch.from_numpy(limbs.copy()).to(device)
    with _ON_DEVICE_LOCK:  # readers need none: a lookup sees an entry or not
        if len(_ON_DEVICE) >= _ON_DEVICE_KEPT:
            _ON_DEVICE.pop(next(iter(_ON_DEVICE)))
        _ON_DEVICE[key] = (limbs, tensor)
    return tensor


def rope_rows(config, positions, kind: str, *, seq_len: int | None = None):
    """cos, sin float32 rows for torch or jax ``positions`` (see :func:`ropelab.rope_tables`)."""
    factor = config.attention_factor
    limbs = call_limbs(config, positions, kind, seq_len=seq_len)
    if kind == "torch":
        return torch_rows(positions, torch_limbs(limbs, positions.device), attention_factor=factor)
    import jax.numpy as jnp

    return jax_rows(positions, jnp.asarray(limbs), attention_factor=factor)
