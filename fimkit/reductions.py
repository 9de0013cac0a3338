"""Where a reduction over a matrix's rows or columns completes: the one hook that lets RACS's and
Adafactor's row and column statistics run on a block of rows (or columns) of a sharded matrix.

The math that reduces (:func:`fimkit.linalg.fixed_point_rank1`,
:func:`fimkit.normalisation.row_column_inverse_sqrt`, the row-column ``Kronecker`` statistics and
the blocks that take a norm or an RMS) takes a :class:`Reduction` and asks it for every sum, mean,
maximum or norm that runs over the matrix's row index (``ROWS``), column index (``COLS``) or both
(``BOTH``). :data:`LOCAL`, the default, computes each of them with the very torch operation the
code used before the hook existed, so one process's results are unchanged bit for bit. A sharded
reduction (``fimkit.optim.sharded``) computes this rank's partial result of the same operation and
completes it across the ranks that hold the other blocks, when the index it runs over is the
sharded one; a reduction over the other index is already complete and costs nothing.

Everything is in the layout of the matrix the optimizer works on: ``(..., rows, cols)``; a vector
indexed by rows (RACS's ``q``, Adafactor's row statistic) reduces ``over=ROWS``.
"""

from __future__ import annotations

import torch
from torch import Tensor

ROWS, COLS, BOTH = "rows", "cols", "both"


class Reduction:
    """Reductions of a whole matrix held by this process: each method is the plain torch
    operation (and ``complete`` returns its arguments)."""

    #: whether every reduction is complete locally (no rank holds another block)
    local = True

    def complete(self, *partials: Tensor, over: str) -> tuple[Tensor, ...]:
        """``partials``, sums over ``over`` of this process's block, as sums over the whole matrix
        (several at once: one collective for all of them)."""
        return partials

    def amax(self, x: Tensor, over: str) -> Tensor:
        """``x.amax()`` (a 0-d maximum over every entry of ``x``)."""
        return x.amax()

    def sum(self, x: Tensor, dim: int | tuple[int, ...], over: str) -> Tensor:
        """``x.sum(dim)``."""
        return x.sum(dim)

    def mean(self, x: Tensor, over: str, dim: tuple[int, ...] | None = None, keepdim: bool = False) -> Tensor:
        """``x.mean(dim, keepdim)`` (every entry when ``dim`` is None)."""
        return x.mean() if dim is None else x.mean(dim=dim, keepdim=keepdim)

    def norm(self, x: Tensor) -> Tensor:
        """The Frobenius norm of the matrices ``x`` (``..., m, n``): ``vector_norm(x, dim=(-2, -1))``."""
        return torch.linalg.vector_norm(x, dim=(-2, -1))


#: the reductions of one process (the default everywhere)
LOCAL = Reduction()
