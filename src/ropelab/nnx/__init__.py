"""ropelab's Flax NNX front end (needs the ``jax`` extra: jax and flax).

- :class:`RopeMHA`: bidirectional multi-head attention with interleaved RoPE (the NNX
  RoPE multi-head attention exercise's module).
- :class:`Attention`: RoPE or NoPE, grouped-query, causal or bidirectional attention
  with Llama 4's chunked attention, qk norm and temperature tuning, a sliding window,
  left padding and a :class:`KVCache` for decoding; the same meaning (and weight names)
  as :class:`ropelab.torch.Attention`.
- :class:`KVCache`, :func:`positions_from_mask`: the decoding cache (an immutable
  pytree) and the padding rule for positions.
- :func:`load_torch_state_dict`: copy torch weights into either module.
"""

from .._optional import require

require("jax", feature="ropelab.nnx")
require("flax", feature="ropelab.nnx")

from .attention import Attention, attend, position_tables, rms_norm  # noqa: E402
from .cache import KVCache, positions_from_mask  # noqa: E402
from .mha import RopeMHA  # noqa: E402
from .torch_weights import load_torch_state_dict  # noqa: E402

__all__ = [
    "Attention",
    "KVCache",
    "RopeMHA",
    "attend",
    "load_torch_state_dict",
    "position_tables",
    "positions_from_mask",
    "rms_norm",
]
