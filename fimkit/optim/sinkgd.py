"""SinkGD, Sinkhorn gradient descent (Scetbon et al., "Gradient Multi-Normalization",
arXiv 2502.06742): the ``RowColumn`` member that balances each gradient alone.

``W <- W - lr * alpha * SR-Sinkhorn(G, sinkhorn_iters)``: each SR-Sinkhorn round scales every
row to l2 norm ``sqrt(n)`` and then every column to ``sqrt(m)``, so entries have root-mean-square
about 1; every iterate is ``G / sqrt(q s^T)``, a ``RowColumn`` step whose member is fitted by
matrix balancing, not by Frobenius distance. Defaults ``sinkhorn_iters`` 5, ``lr`` 0.02 and
``alpha`` 0.05 (a per-entry step of 1e-3); see DECISIONS.md for where the constants come from.
Stateless: no optimizer state for matrices.
"""

from ..derive import derive
from ..structures import RowColumn
from .blocks import Scale

SinkGD = derive(
    RowColumn(estimator="sinkhorn"), name="SinkGD", doc=__doc__,
    momentum=False, post=(Scale("alpha", 0.05),), lr=0.02,
)
SinkGD.threaded_step = True  # the Sinkhorn iterations of two matrices side by side (fimkit.optim.threaded_steps)
