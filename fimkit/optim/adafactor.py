"""Adafactor (Shazeer and Stern) as a structured Fisher approximation: ``RowColumn`` with the
marginal estimator, as ``torch.optim.Adafactor`` runs it.

``F~ = diag(vec(r c^T / sum(r)))`` with ``r``, ``c`` EMAs of the row and column sums of ``G*G``
is ``RowColumn(estimator="marginal")``: the trace-normalised product of the two marginals, the
Kullback-Leibler (not Frobenius) rank-1 fit. The EMA weight is ``t**-0.8``, updates are clipped
to RMS ``d`` and scaled by ``max(eps2, RMS(W)) * min(lr, 1/sqrt(t))``. Matches
``torch.optim.Adafactor`` for vectors and matrices (a vector is the 1 x n matrix, for which the
structure is exactly diagonal). N-d tensors are viewed as ``(shape[0], prod(rest))``, whereas
torch factors their last two dimensions.
"""

import torch

from ..derive import derive
from ..structures import RowColumn
from .blocks import ClipUpdateRMS, RelativeStepSize

Adafactor = derive(
    RowColumn(estimator="marginal"), name="Adafactor", doc=__doc__,
    momentum=False, post=(ClipUpdateRMS(),), step=RelativeStepSize(), matrix_only=False,
    lr=1e-2, betas=(0.0, 0.0), beta2_decay=-0.8, bias_correction=False,
    eps=torch.finfo(torch.float32).eps ** 2,  # torch's eps1, squared because it sits under the root
)
