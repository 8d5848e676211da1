"""A length-dependent scheme's turn limbs under ``torch.compile``: the op ``ropelab::limbs``.

Dynamic NTK and LongRoPE take their frequencies from the current length, and the exact
rows need those frequencies' turn limbs, made on the host in float64 and integer
arithmetic (:func:`ropelab.rows.limbs_for`). Eager calls make them directly. Compiled
code cannot trace that host arithmetic, and the length there may be symbolic (a
``dynamic=True`` compile) or follow traced positions, so the limbs come from this opaque
op: it runs at call time with the actual length, so the graph has no break and no
recompile per length, and the limbs are exact. A length taken from the positions
(``max(positions) + 1``, as transformers reads it) is read on the host inside the op.

The op names its config by a key (:func:`config_key`) in a table of the configs that
asked, since an op's arguments are tensors and plain values.
"""

from __future__ import annotations

import threading

import torch

from .. import rows

__all__ = ["config_key", "limbs"]

# configs by key: repr(config) holds every field, so equal configs share an entry
_CONFIGS: dict = {}
_LOCK = threading.Lock()


@torch.compiler.assume_constant_result  # run while tracing: the key is a constant
def config_key(config) -> str:
    """The key that names ``config`` to the op (kept while the process lives: a config
    is a few numbers)."""
    key = repr(config)
    if key not in _CONFIGS:
        with _LOCK:
            _CONFIGS.setdefault(key, config)
    return key


@torch.library.custom_op("ropelab::limbs", mutates_args=())
def _limbs(key: str, positions: torch.Tensor, seq_len: int) -> torch.Tensor:
    """float32 turn limbs ``(6, R/2)`` on the positions' device for this length
    (``seq_len < 0``: ``max(positions) + 1``)."""
    config = _CONFIGS[key]
    # a given length is checked against CPU positions only: elsewhere a read would wait for the device
    length = rows.call_length(config, positions, "torch", None if seq_len < 0 else seq_len,
                              readable=positions.is_cpu)
    return torch.from_numpy(rows.limbs_for(config, length).copy()).to(positions.device)


@_limbs.register_fake
def _(key, positions, seq_len):
    return positions.new_empty((rows.LIMBS, _CONFIGS[key].rotary_dim // 2), dtype=torch.float32)


def limbs(config, positions, seq_len):
    """The turn limbs of ``config`` at ``seq_len`` (None: from ``positions``) as a float32
    tensor on the positions' device, through the op (for compiled code)."""
    return _limbs(config_key(config), positions, -1 if seq_len is None else seq_len)
