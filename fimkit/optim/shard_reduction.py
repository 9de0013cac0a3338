"""The reductions of a block of rows (or columns) of a sharded matrix: partial sums completed with
all-reduces over the device mesh dimensions that shard it (:class:`fimkit.reductions.Reduction`'s
sharded form; ``fimkit.optim.sharded`` sets one up for each parameter it steps on its shard).

Per call, at most one collective, and none for a reduction over the index that is not sharded
(it is complete on every rank). Sums of several partials (the fixed point's product and squared
norm) travel in one all-reduce. Every rank gets the same bits (an all-reduce's result is
identical on every rank), so what is computed from completed reductions (RACS's ``s`` when rows
are sharded) is the same on every rank and may stay a plain tensor. The summation order differs
from one process's (partial sums, then their sum): results agree within rounding (~1e-7 per
reduction in float32), not bit for bit.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor

from ..reductions import BOTH, COLS, ROWS, Reduction


class ShardReduction(Reduction):
    """Reductions of this rank's block of a matrix whose ``axis`` index (``ROWS`` or ``COLS``, in
    the layout the optimizer works on) is sharded over the process groups ``groups`` (one per
    mesh dimension with a ``Shard`` placement; ``Replicate`` dimensions hold copies and are not
    summed over)."""

    local = False

    def __init__(self, groups: list, axis: str, device: str = "cpu"):
        if axis not in (ROWS, COLS):
            raise ValueError(f"the sharded index is ROWS or COLS, got {axis!r}")
        #: ``device``: the mesh's device type (NCCL reduces device tensors only)
        self.groups, self.axis, self.device = groups, axis, device

    def __repr__(self) -> str:
        return f"ShardReduction(axis={self.axis!r}, groups={len(self.groups)})"

    def _crosses(self, over: str) -> bool:
        return over == BOTH or over == self.axis

    def all_reduce(self, tensor: Tensor, op) -> Tensor:
        """``tensor`` reduced in place with ``op`` over every sharding group."""
        for group in self.groups:
            dist.all_reduce(tensor, op=op, group=group)
        return tensor

    def complete(self, *partials: Tensor, over: str) -> tuple[Tensor, ...]:
        if not self._crosses(over):
            return partials
        flat = self.all_reduce(torch.cat([p.reshape(-1) for p in partials]), dist.ReduceOp.SUM)
        return tuple(part.view(p.shape) for part, p in zip(flat.split([p.numel() for p in partials]), partials))

    def amax(self, x: Tensor, over: str) -> Tensor:
        if not self._crosses(over):
            return x.amax()
        # a rank holding no entries contributes the identity of MAX
        partial = x.amax() if x.numel() else x.new_full((), -math.inf)
        return self.all_reduce(partial.clone(), dist.ReduceOp.MAX)

    def sum(self, x: Tensor, dim, over: str) -> Tensor:
        return self.complete(x.sum(dim), over=over)[0]

    def mean(self, x: Tensor, over: str, dim=None, keepdim: bool = False) -> Tensor:
        if not self._crosses(over):
            return super().mean(x, over, dim, keepdim)
        total = x.sum() if dim is None else x.sum(dim=dim, keepdim=keepdim)
        # the count travels with the sum, so no rank needs the global shape
        count = total.new_full((), x.numel() / max(total.numel(), 1))
        total, count = self.complete(total, count, over=over)
        return total / count

    def norm(self, x: Tensor) -> Tensor:
        (square_sum,) = self.complete((x * x).sum(dim=(-2, -1)), over=BOTH)
        return square_sum.sqrt()
