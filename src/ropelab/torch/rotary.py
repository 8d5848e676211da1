"""RotaryEmbedding: RoPE as a PyTorch module, with exact cos/sin rows made per call.

RoFormer (Su et al. 2021, arXiv:2104.09864). Each call makes the cos/sin rows of exactly
the positions it rotates (:mod:`ropelab.rows`: the angle reduced in turns with integer
arithmetic that float32 carries out exactly), on the positions' device: float32 rows
within 3e-7 of the true cos and sin at any position ``|p| < 2**31``, negative ones
included (a rotation by the negative angle). No table indexed by position is kept, so
the memory a call uses depends on how many positions it rotates, never on their values
(a decode step at position 2**31 - 1 costs what one at position 10 does), and the module
holds nothing that a call changes: one module may serve many threads at once.

Where nothing is recorded for autograd: on a GPU with Triton, :meth:`forward` and
:meth:`rotate_` are one kernel launch that makes each token's rows from its position as
it rotates (:func:`ropelab.kernels.rotate_at`, :func:`ropelab.kernels.rotate_at_`); on
the CPU, :meth:`rotate_` is one in-place numba loop that makes the rows a chunk of
tokens at a time, and :meth:`forward` makes them with a numba loop and rotates them by
the fused kernels. While autograd records, the rows come from one kernel (numba on the
CPU, Triton on a GPU: :func:`ropelab.kernels.turn_rows`) and the rotation is
:func:`ropelab.torch.rope_op.rotate` (differentiable) or :func:`ropelab.apply_rope_`.
Under ``torch.compile`` (or with no kernel backend) the rows come from
:func:`ropelab.rows.torch_rows`, elementwise torch ops that trace under
``torch.compile(fullgraph=True, dynamic=True)`` with no recompile for a new position
value. The frequencies' limbs are copied to a device once, never per call (a
host-to-device copy would stall the device's queue).

Shapes: B batch, H heads, K kv heads, T time, D head dim, R rotary dim.
    q (B, H, T, D), k (B, K, T, D) (``heads_first=False``: (B, T, H, D), (B, T, K, D));
    positions (T,) or (B, T) integers; rows (T, R/2) or (B, T, R/2).

Length-dependent schemes (``config.dynamic``: dynamic NTK, LongRoPE) choose their
frequencies from ``seq_len``, by default ``max(position) + 1`` of the call, as
transformers does for the current call (unlike transformers' dynamic NTK, nothing
remembers the longest length seen). For positions on a GPU that default reads the
largest position back (the call waits for the device, as transformers' does); pass
``seq_len=`` to spare it. Under ``torch.compile`` the length is read when the code runs
(an op, :mod:`ropelab.torch.limbs_op`): no graph break, no recompile per length.
"""

from __future__ import annotations

from .. import kernels, rows
from .._optional import require
from ..config import RopeConfig
from ..kernels.checks import check_distinct
from ..rotary import apply_rope_

torch = require("torch", feature="ropelab.torch")
nn = torch.nn

from . import rope_op  # noqa: E402
from .checks import check_integer_tensor  # noqa: E402

__all__ = ["RotaryEmbedding"]


def _check_config(config) -> RopeConfig:
    if not isinstance(config, RopeConfig):
        raise TypeError(f"config must be a ropelab.RopeConfig, got {type(config).__name__}")
    return config


class RotaryEmbedding(nn.Module):
    """Rotate queries and keys by their positions (RoPE), with rows made per call.

    Args:
        config: the rotary schedule (:class:`ropelab.RopeConfig`).

    ``forward(q, k=None, positions=None, offset=0, *, seq_len=None, heads_first=True)``:
        q ``(B, H, T, D)``, k ``(B, K, T, D)`` or None (then q alone is returned).
        ``positions`` None means ``offset + arange(T)`` on q's device (``offset`` an
        int or a 0-dim integer tensor); a ``(T,)`` or ``(B, T)`` integer tensor gives
        each token its own position (left padding, packed sequences, cache steps), and
        then ``offset`` must stay 0 (ValueError otherwise);
        negative positions rotate by negative angles. ``seq_len`` overrides the length
        that length-dependent schemes read (default ``max(position) + 1``, read when
        the code runs, compiled or not). ``heads_first=False`` takes ``(B, T, H, D)``
        tensors (the transformers / flash-attn layout). Returns rotated copies in the
        inputs' dtypes, ``(q, k)`` or ``q``; differentiable.

    :meth:`rotate_` takes the same arguments and rotates q and k in place (one read and
    one write of each: the cheapest prefill).
    """

    def __init__(self, config: RopeConfig):
        super().__init__()
        self.config = _check_config(config)

    @property
    def layout(self) -> str:
        return self.config.layout

    def set_config(self, config: RopeConfig) -> None:
        """Swap the rotary schedule (e.g. Linear/NTK/YaRN extension at inference)."""
        self.config = _check_config(config)

    # -- rows ---------------------------------------------------------------------------

    def rows(self, positions, *, seq_len: int | None = None):
        """float32 ``(cos, sin)`` of shape ``positions.shape + (R/2,)`` on the positions'
        device: the exact rows of integer ``positions`` (any shape)."""
        check_integer_tensor("positions", positions)
        return self._rows(positions, rows.call_limbs(self.config, positions, "torch", seq_len=seq_len))

    def _rows(self, positions, limbs):
        """The rows of checked ``positions`` from their turn limbs."""
        factor = self.config.attention_factor
        if not torch.compiler.is_compiling():  # numba on the CPU, Triton on a GPU
            made = kernels.turn_rows(positions, limbs, attention_factor=factor)
            if made is not None:
                return made
        return rows.torch_rows(positions, rows.torch_limbs(limbs, positions.device), attention_factor=factor)

    def tables_for(self, positions=None, offset=0, length: int = 1, *, seq_len: int | None = None,
                   device=None):
        """cos, sin float32 of shape (T, R/2) or (B, T, R/2) for these positions
        (``positions`` None: ``offset + arange(length)`` on ``device``)."""
        if positions is None:
            positions = _arange(offset, length, device)
        else:
            _check_no_offset(offset)
            _check_positions(positions)
        return self.rows(positions, seq_len=seq_len)

    # -- rotation -------------------------------------------------------------------------

    def _positions(self, q, k, positions, offset, heads_first):
        """Checked inputs; the positions as a (T,) or (B, T) integer tensor on q's device."""
        if q.dim() != 4 or (k is not None and k.dim() != 4):
            shapes = tuple(q.shape) if k is None else f"{tuple(q.shape)} and {tuple(k.shape)}"
            want = "(B, H, T, D)" if heads_first else "(B, T, H, D)"
            raise ValueError(f"q and k must be shaped {want}, got {shapes}")
        time_dim = 2 if heads_first else 1
        length = q.shape[time_dim]
        if k is not None and (k.shape[time_dim] != length or k.shape[0] != q.shape[0]):
            raise ValueError(f"q and k must have the same B and T, got {tuple(q.shape)} and {tuple(k.shape)}")
        if positions is None:
            return _arange(offset, length, q.device)
        _check_no_offset(offset)
        _check_positions(positions)
        if positions.shape[-1] != length:
            raise ValueError(f"positions of shape {tuple(positions.shape)} do not match T={length} of q")
        if positions.dim() == 2 and positions.shape[0] not in (1, q.shape[0]):
            raise ValueError(
                f"positions of shape {tuple(positions.shape)} do not match the batch B={q.shape[0]}"
            )
        return positions if positions.device == q.device else positions.to(q.device)

    def _seq_len(self, q, positions, offset, seq_len, heads_first):
        """A length-dependent scheme's length for ``offset + arange(T)``, read on the host
        (no device round trip, and known under torch.compile): ``offset + T``."""
        if seq_len is None and positions is None and self.config.dynamic and not isinstance(offset, torch.Tensor):
            return offset + q.shape[2 if heads_first else 1]
        return seq_len

    def _fits(self, q, k) -> bool:
        """R <= D for q and k (the general path raises the error when not)."""
        rotary_dim = self.config.rotary_dim
        return rotary_dim <= q.shape[-1] and (k is None or rotary_dim <= k.shape[-1])

    def forward(self, q, k=None, positions=None, offset=0, *, seq_len: int | None = None,
                heads_first: bool = True):
        """Rotated copies of q (and k) at their positions: ``(q, k)``, or q when k is None.

        q ``(B, H, T, D)`` and k ``(B, K, T, D)`` (``(B, T, H, D)`` and ``(B, T, K, D)``
        with ``heads_first=False``); positions ``(T,)`` or ``(B, T)`` integers, or None for
        ``offset + arange(T)``. The cos/sin rows are made for exactly these positions,
        exact at any of them; see the class docstring.
        """
        seq_len = self._seq_len(q, positions, offset, seq_len, heads_first)
        positions = self._positions(q, k, positions, offset, heads_first)
        limbs = rows.call_limbs(self.config, positions, "torch", seq_len=seq_len)
        xs = (q,) if k is None else (q, k)
        kernel = not _recording(q, k) and self._fits(q, k)
        if kernel:  # rows made inside the kernel, where a backend does that (Triton, on a GPU)
            views = xs if heads_first else tuple(x.transpose(1, 2) for x in xs)
            outs = kernels.rotate_at(views, positions, limbs, attention_factor=self.config.attention_factor,
                                     layout=self.config.layout)
            if outs is not None:
                outs = outs if heads_first else tuple(o.transpose(1, 2) for o in outs)
                return outs[0] if k is None else outs
        cos, sin = self._rows(positions, limbs)  # (T, R/2) or (B, T, R/2)
        if kernel and heads_first and positions.is_cpu:
            outs = kernels.rotate_fresh(xs, cos, sin, layout=self.config.layout)
            if outs is not None:  # a decode step: tens of microseconds less than the general path
                return outs[0] if k is None else outs
        cos, sin = _per_head(cos, sin, heads_first)
        if k is None:
            return rope_op.rotate(q, cos, sin, self.config.layout)
        return rope_op.rotate_qk(q, k, cos, sin, self.config.layout)

    def rotate_(self, q, k=None, positions=None, offset=0, *, seq_len: int | None = None,
                heads_first: bool = True):
        """:meth:`forward` written into q and k (returns them): a fused in-place pass
        where the kernels take it. Autograd rules are :func:`ropelab.apply_rope_`'s."""
        seq_len = self._seq_len(q, positions, offset, seq_len, heads_first)
        positions = self._positions(q, k, positions, offset, heads_first)
        if k is not None:
            check_distinct((q, k))
        layout, rotary_dim = self.config.layout, self.config.rotary_dim
        limbs = rows.call_limbs(self.config, positions, "torch", seq_len=seq_len)
        if not _recording(q, k) and self._fits(q, k):
            # the rows made inside the in-place kernel (on the CPU a chunk of tokens at a time)
            xs = (q,) if k is None else (q, k)
            views = xs if heads_first else tuple(x.transpose(1, 2) for x in xs)
            if kernels.rotate_at_(views, positions, limbs, attention_factor=self.config.attention_factor,
                                  layout=layout) is not None:
                return q if k is None else (q, k)
        cos, sin = _per_head(*self._rows(positions, limbs), heads_first)
        if k is None:
            return apply_rope_(q, cos, sin, layout=layout, rotary_dim=rotary_dim)
        apply_rope_((q, k), cos, sin, layout=layout, rotary_dim=rotary_dim)
        return q, k

    def extra_repr(self) -> str:
        return repr(self.config)


def _per_head(cos, sin, heads_first: bool):
    """Rows (T, R/2) or (B, T, R/2) with a size-1 heads dim where q and k need one: one
    row per token, shared by all heads."""
    at = -3 if heads_first else -2
    if cos.dim() == 3 or not heads_first:
        return cos.unsqueeze(at), sin.unsqueeze(at)
    return cos, sin


def _recording(q, k) -> bool:
    """Whether autograd would record the rotation (or torch.compile traces it)."""
    if torch.compiler.is_compiling():
        return True
    return torch.is_grad_enabled() and (q.requires_grad or (k is not None and k.requires_grad))


def _arange(offset, length: int, device):
    """``offset + arange(length)``: int64 positions on ``device``."""
    if isinstance(offset, torch.Tensor):
        if offset.dim() != 0 or offset.dtype.is_floating_point or offset.dtype == torch.bool or offset.is_complex():
            raise TypeError(f"offset must be an int or a 0-dim integer tensor, got {offset.dtype} of shape "
                            f"{tuple(offset.shape)}")
        return torch.arange(length, device=device) + offset.to(device=device, dtype=torch.int64)
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise TypeError(f"offset must be an int or a 0-dim integer tensor, got {offset!r}")
    return torch.arange(offset, offset + length, device=device)


def _check_no_offset(offset) -> None:
    """ValueError for an offset beside positions: they already say where each token is."""
    if isinstance(offset, torch.Tensor) or isinstance(offset, bool) or offset != 0:
        shown = f"a tensor ({offset.dtype})" if isinstance(offset, torch.Tensor) else repr(offset)
        raise ValueError(
            f"give positions or offset, not both: positions already say where each token is, "
            f"so offset must stay 0 with them, got offset={shown} (add it to the positions instead)"
        )


def _check_positions(positions) -> None:
    check_integer_tensor("positions", positions, expected="a torch tensor or None")
    if positions.dim() not in (1, 2):
        raise ValueError(f"positions must be shaped (T,) or (B, T), got shape {tuple(positions.shape)}")
