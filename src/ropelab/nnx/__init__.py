"""ropelab's Flax NNX front end (needs the ``jax`` extra: jax and flax).

- :class:`RopeMHA`: seed 002's multi-head attention with interleaved RoPE.
- :class:`Attention`: RoPE or NoPE, grouped-query, causal or bidirectional attention,
  with the same meaning (and weight names) as :class:`ropelab.torch.Attention`.
- :func:`load_torch_state_dict`: copy torch weights into either module.
"""

from .._optional import require

require("jax", feature="ropelab.nnx")
require("flax", feature="ropelab.nnx")

from .attention import Attention, attend, load_torch_state_dict, position_tables  # noqa: E402
from .mha import RopeMHA  # noqa: E402

__all__ = ["Attention", "RopeMHA", "attend", "load_torch_state_dict", "position_tables"]
