"""RACS, Row and Column Scaled SGD ([P] Alg 1, Prop 3): the ``RowColumn`` structure's step.

``F~ = diag(vec(q s^T))`` (``Kronecker(DiagonalFactor(), DiagonalFactor())``) fitted to each
gradient alone (``estimator="per_sample"``), with the paper's Table 9 defaults (lr 0.02, beta
0.9, alpha 0.05, gamma 1.01). Per matrix and step: ``(q1, s1)`` from ``fixed_point_iters`` steps
of [P] Eq 16 on ``G*G`` from ``q = 1``; ``q, s <- EMA_beta`` (no bias correction);
``X = G / sqrt(q s^T)``; ``eta, phi`` from Fira's norm-growth limiter (``eta = 1`` on the first
step, detected as ``phi == 0``); ``W <- W - lr * eta * alpha * X``. State: ``q`` (m), ``s`` (n),
``phi`` (1).

Options: ``ema=False`` (Fig 5e ablation: use ``q1, s1``), ``bias_correction=True``,
``eps`` (relative to ``mean(q s^T)``, so the update is exactly invariant to the gradient's
scale), ``fixed_point_iters``, ``transpose_to_short_side`` (default True: the paper's
``m <= n`` convention, ``q`` on the short side starts the fixed point). The limiter, alpha and
lr fold into one pass: ``W.addcmul_(X, -lr * alpha * eta)``.
"""

from ..derive import derive
from ..structures import RowColumn
from .blocks import NormGrowthLimiter, Scale

RACS = derive(
    RowColumn(estimator="per_sample", fixed_point_iters=5), name="RACS", doc=__doc__,
    paper_hparams={"1.3B": {"alpha": 0.02}},
    momentum=False, post=(NormGrowthLimiter(), Scale("alpha")),
    lr=0.02, beta=0.9, alpha=0.05, gamma=1.01, transpose_to_short_side=True,
)
RACS.threaded_step = True  # the fixed points of two matrices side by side (fimkit.optim.threaded_steps)
