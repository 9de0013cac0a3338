"""Adafactor: ``RowColumn`` with the marginal estimator, as ``torch.optim.Adafactor`` runs it."""

import torch

from ..structures import RowColumn
from .blocks import ClipUpdateRMS, Precondition, RelativeStepSize
from .chain import ChainOptimizer


class Adafactor(ChainOptimizer):
    """Adafactor (Shazeer and Stern) as a structured Fisher approximation.

    ``F~ = diag(vec(r c^T / sum(r)))`` with ``r``, ``c`` EMAs of the row and column sums of
    ``G*G`` is ``RowColumn(estimator="marginal")``: the trace-normalised product of the two
    marginals, the Kullback-Leibler (not Frobenius) rank-1 fit. The EMA weight is ``t**-0.8``,
    updates are clipped to RMS ``d`` and scaled by ``max(eps2, RMS(W)) * min(lr, 1/sqrt(t))``.
    Matches ``torch.optim.Adafactor`` for vectors and matrices (a vector is the 1 x n matrix,
    for which the structure is exactly diagonal). N-d tensors are viewed as
    ``(shape[0], prod(rest))``, whereas torch factors their last two dimensions.
    """

    matrix_only = False
    structure = RowColumn(estimator="marginal")
    blocks = (Precondition(structure), ClipUpdateRMS(), RelativeStepSize())
    hyperparameters = dict(
        lr=1e-2, betas=(0.0, 0.0), beta2_decay=-0.8, bias_correction=False,
        # torch's eps1 (float32 machine epsilon), squared because it sits under the root
        eps=torch.finfo(torch.float32).eps ** 2,
    )
