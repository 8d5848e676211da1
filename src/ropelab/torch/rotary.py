"""RotaryEmbedding: RoPE as a PyTorch module with cached, exact tables.

RoFormer (Su et al. 2021, arXiv:2104.09864). The cos/sin tables come from
:func:`ropelab.rope_tables` (float64 on the host, exact at any position), are cast once
to float32 buffers and grown by doubling when a position goes past them; a forward pass
only slices or gathers them. The rotation itself is :func:`ropelab.torch.rope_op.rotate`.

Shapes: B batch, H heads, K kv heads, T time, D head dim, R rotary dim.
    q (B, H, T, D), k (B, K, T, D); positions (T,) or (B, T) long; tables (N, R/2).

Length-dependent schemes (``config.dynamic``: dynamic NTK, LongRoPE) choose their
frequencies from ``seq_len = max(position) + 1``, as transformers does for the current
call. The scheme says which regime a length falls in (:meth:`ropelab.scaling.Scheme.regime`:
LongRoPE has two, short and long; dynamic NTK has one at or below its original length
and one per longer ``seq_len``), and the tables of the last few regimes are kept.
Unlike transformers' dynamic NTK, which remembers the longest length seen so far, the
choice here depends only on the positions of the call, so a module has no hidden state.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .. import kernels
from .._optional import require
from ..config import RopeConfig
from ..scaling import Regime
from ..tables import rope_tables

torch = require("torch", feature="ropelab.torch")
nn = torch.nn

from . import rope_op  # noqa: E402

__all__ = ["RotaryEmbedding"]

# tables kept for length-dependent schemes (one per regime; see the module docstring)
_REGIMES_KEPT = 4


def _compiling() -> bool:
    return torch.compiler.is_compiling()


class RotaryEmbedding(nn.Module):
    """Rotate queries and keys by their positions (RoPE), from cached exact tables.

    Args:
        config: the rotary schedule (:class:`ropelab.RopeConfig`).
        max_positions: rows of the tables built up front. Longer inputs grow them
            (doubling) outside compiled code; call :meth:`ensure` before compiling a
            model that will see longer positions.

    ``forward(q, k, positions=None, offset=0, *, seq_len=None) -> (q, k)``:
        q ``(B, H, T, D)``, k ``(B, K, T, D)``. ``positions`` None means
        ``offset + arange(T)``; a ``(T,)`` or ``(B, T)`` integer tensor gives each
        token its own position (left padding, packed sequences, cache steps).
        ``seq_len`` overrides the length that dynamic schemes read (default
        ``max(position) + 1``; needed under ``torch.compile`` for those schemes when
        positions is a tensor). Returns rotated q and k in their dtypes.
    """

    cos: torch.Tensor
    sin: torch.Tensor

    def __init__(self, config: RopeConfig, max_positions: int = 4096):
        super().__init__()
        if not isinstance(config, RopeConfig):
            raise TypeError(f"config must be a ropelab.RopeConfig, got {type(config).__name__}")
        if (
            isinstance(max_positions, bool)
            or not isinstance(max_positions, int)
            or max_positions < 1
        ):
            raise ValueError(f"max_positions must be a positive integer, got {max_positions!r}")
        self.config = config
        self._initial = max_positions
        self.register_buffer("cos", torch.empty(0), persistent=False)
        self.register_buffer("sin", torch.empty(0), persistent=False)
        # Regime -> (cos, sin) float32 tables, for length-dependent schemes (the base
        # regime's are self.cos and self.sin)
        self._regimes: OrderedDict = OrderedDict()
        self._base: Regime | None = None
        # the kernels' view of cos/sin, kept for decode steps: (key, plan); see _kernel_tables
        self._planned: tuple = ((None, None, None), None)
        self._build(max_positions)

    # -- tables -------------------------------------------------------------------

    @property
    def layout(self) -> str:
        return self.config.layout

    @property
    def max_positions(self) -> int:
        """Rows of the cached tables (positions below this need no growth)."""
        return int(self.cos.shape[0])

    def _tables(self, n: int, regime: Regime | None):
        """Rows 0..n-1 of a regime's tables (None: a scheme that ignores the length)."""
        seq_len = None if regime is None else regime.first  # any length of it gives its frequencies
        cos, sin = rope_tables(self.config, np.arange(n), seq_len=seq_len)
        device = self.cos.device
        return (
            torch.from_numpy(cos).to(device=device, dtype=torch.float32),
            torch.from_numpy(sin).to(device=device, dtype=torch.float32),
        )

    def _build(self, n: int) -> None:
        # the static tables; for dynamic schemes those of the base regime, whatever n is
        # (rope_tables' default seq_len, n, would be a longer regime when n is past it)
        self._base = self.config.scaling.regime(None) if self.config.dynamic else None
        self.cos, self.sin = self._tables(n, self._base)
        self._regimes.clear()

    def ensure(self, n: int) -> None:
        """Make the tables cover positions ``0 .. n-1`` (grown by doubling); eager only."""
        if n <= self.max_positions:
            return
        if _compiling():
            raise RuntimeError(
                f"RotaryEmbedding tables hold {self.max_positions} positions but position "
                f"{n - 1} was asked for inside torch.compile; call .ensure({n}) (or build with "
                f"max_positions >= {n}) before compiling"
            )
        size = self.max_positions
        while size < n:
            size *= 2
        self._build(size)

    def set_config(self, config: RopeConfig) -> None:
        """Swap the rotary schedule (e.g. Linear/NTK/YaRN extension at inference)."""
        if not isinstance(config, RopeConfig):
            raise TypeError(f"config must be a ropelab.RopeConfig, got {type(config).__name__}")
        self.config = config
        self._build(self.max_positions)

    def _regime(self, seq_len: int):
        """Tables for a dynamic scheme at this length: (cos, sin)."""
        scaling = self.config.scaling
        regime = scaling.regime(seq_len)
        if regime == self._base:
            self.ensure(seq_len)
            return self.cos, self.sin
        if regime in self._regimes:
            cos, sin = self._regimes[regime]
            if cos.shape[0] >= seq_len:
                self._regimes.move_to_end(regime)
                return cos, sin
        if _compiling():
            raise RuntimeError(
                f"the {scaling.name} tables for seq_len={seq_len} ({regime.name} regime) are not "
                "built; run the module once eagerly at this length before compiling"
            )
        # twice the regime's first length, so that longer lengths of an open-ended regime
        # reuse the tables; never past its last length
        size = max(seq_len, 2 * regime.first)
        if regime.last is not None:
            size = min(size, regime.last)
        cos, sin = self._tables(size, regime)
        self._regimes[regime] = (cos, sin)
        while len(self._regimes) > _REGIMES_KEPT:
            self._regimes.popitem(last=False)
        return cos, sin

    def _apply(self, fn, recurse=True):
        # follow the module to its device, but never keep tables in a cast dtype
        # (model.to(torch.bfloat16) would round the angles): rebuild them from float64
        out = super()._apply(fn, recurse)
        if self.cos.dtype != torch.float32:
            self._build(self.max_positions)
        else:
            self._regimes = OrderedDict((k, (fn(c), fn(s))) for k, (c, s) in self._regimes.items())
        return out

    # -- forward ------------------------------------------------------------------

    def tables_for(self, positions=None, offset: int = 0, length: int = 1, *, seq_len=None):
        """cos, sin float32 of shape (T, R/2) or (B, T, R/2) for these positions."""
        if positions is None:
            if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
                raise ValueError(f"offset must be an integer >= 0, got {offset!r}")
            end = offset + length
            if self.config.dynamic:
                cos, sin = self._regime(seq_len or end)
            else:
                self.ensure(end)
                cos, sin = self.cos, self.sin
            return cos[offset:end], sin[offset:end]
        self._check_positions(positions)
        if self.config.dynamic:
            if seq_len is None and _compiling():
                raise RuntimeError(
                    "a length-dependent rope scheme needs seq_len= under torch.compile "
                    "when positions is a tensor (max(positions) + 1 is data-dependent)"
                )
            high = self._span(positions)[1] if not _compiling() and positions.numel() else 0
            cos, sin = self._regime(high + 1 if seq_len is None else seq_len)
        else:
            self._cover(positions)
            cos, sin = self.cos, self.sin
        return cos[positions], sin[positions]

    @staticmethod
    def _check_positions(positions) -> None:
        if not isinstance(positions, torch.Tensor):
            raise TypeError(f"positions must be a torch tensor, got {type(positions).__name__}")
        if (
            positions.dtype.is_floating_point
            or positions.dtype == torch.bool
            or positions.is_complex()
        ):
            raise TypeError(f"positions must be an integer tensor, got dtype {positions.dtype}")
        if positions.dim() not in (1, 2):
            raise ValueError(
                f"positions must be shaped (T,) or (B, T), got shape {tuple(positions.shape)}"
            )

    @staticmethod
    def _span(positions) -> tuple[int, int]:
        """(lowest, highest) of non-empty eager positions; ValueError for a negative one."""
        if positions.numel() <= 64:  # a decode step's few: a list is cheaper than a reduction
            values = positions.reshape(-1).tolist()
            low, high = min(values), max(values)
        else:
            low, high = (int(v) for v in torch.aminmax(positions))
        if low < 0:
            raise ValueError(f"positions must be >= 0, got a minimum of {low}")
        return low, high

    def _kernel_tables(self):
        """``kernels.plan_tables`` of the static tables, made again whenever they change
        (rebuilt, grown, moved, cast or written in place): ~3 us less per decode step."""
        cos, sin = self.cos, self.sin
        stamp = (cos.data_ptr(), sin.data_ptr(), cos._version, sin._version)
        (held_cos, held_sin, held_stamp), plan = self._planned
        # the held tensors keep their ids from being reused while the plan is kept
        if held_cos is not cos or held_sin is not sin or held_stamp != stamp:
            plan = kernels.plan_tables(cos, sin)
            self._planned = ((cos, sin, stamp), plan)
        return plan

    def _cover(self, positions) -> None:
        """Static tables: grow them to the largest position; refuse negative ones (eager)."""
        if not _compiling() and positions.numel():
            self.ensure(self._span(positions)[1] + 1)

    def forward(self, q, k, positions=None, offset: int = 0, *, seq_len: int | None = None):
        if q.dim() != 4 or k.dim() != 4:
            raise ValueError(
                f"q and k must be shaped (B, H, T, D), got {tuple(q.shape)} and {tuple(k.shape)}"
            )
        length = q.shape[-2]
        if k.shape[-2] != length:
            raise ValueError(f"q and k must have the same T, got {q.shape[-2]} and {k.shape[-2]}")
        if positions is not None and not isinstance(positions, torch.Tensor):
            raise TypeError(
                f"positions must be a torch tensor or None, got {type(positions).__name__}"
            )
        if positions is not None and positions.shape[-1] != length:
            raise ValueError(
                f"positions of shape {tuple(positions.shape)} do not match T={length} of q"
            )
        if (
            positions is not None
            and positions.dim() == 2
            and positions.shape[0] not in (1, q.shape[0])
        ):
            raise ValueError(
                f"positions of shape {tuple(positions.shape)} do not match the batch B={q.shape[0]}"
            )
        layout = self.config.layout
        if positions is not None and not self.config.dynamic and not _compiling():
            # the kernels read table rows by position: no gathered copy of the tables
            self._check_positions(positions)
            self._cover(positions)
            index = positions.unsqueeze(1) if positions.dim() == 2 else positions  # (B, 1, T)
            cos, sin = self.cos, self.sin
            rot = 2 * cos.shape[-1]
            same_device = q.device == k.device == cos.device == positions.device
            floating = q.dtype.is_floating_point and k.dtype.is_floating_point
            fits = rot <= q.shape[-1] and rot <= k.shape[-1]
            batch_ok = positions.dim() == 1 or positions.shape[0] in (1, k.shape[0])
            if same_device and floating and fits and batch_ok:
                # everything rotate_qk checks is checked above: shapes, range, device
                if index.dtype != torch.long:
                    index = index.long()
                return rope_op._rotate_qk(q, k, cos, sin, layout, index, tables=self._kernel_tables())
            return rope_op.rotate_qk(q, k, cos, sin, layout, positions=index)
        cos, sin = self.tables_for(positions, offset, length, seq_len=seq_len)
        if cos.dim() == 3:  # (B, T, R/2) -> (B, 1, T, R/2): one row per token, all heads
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        return rope_op.rotate_qk(q, k, cos, sin, layout)

    def extra_repr(self) -> str:
        return f"{self.config!r}, max_positions={self.max_positions}"
