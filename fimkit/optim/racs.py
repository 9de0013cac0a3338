"""RACS, Row and Column Scaled SGD ([P] Alg 1, Prop 3): the ``RowColumn`` structure's step.

``F~ = diag(vec(q s^T))`` (``Kronecker(DiagonalFactor(), DiagonalFactor())``) fitted to each
gradient alone by 5 steps of the fixed point Eq 16 from ``q = 1`` (a power iteration for the
top singular pair of ``G*G``), EMA of ``s`` and ``q``, the step ``G / sqrt(q s^T)``, Fira's
norm-growth limiter and a scale ``alpha``. State: ``q`` (m), ``s`` (n), ``phi`` (1).
"""

from ..structures import RowColumn
from .blocks import LearningRate, NormGrowthLimiter, Scale
from .chain import ChainOptimizer
from .normalizers import RowColumnScaling


class RACS(ChainOptimizer):
    """RACS ([P] Alg 1) with the paper's Table 9 defaults (lr 0.02, beta 0.9, alpha 0.05, gamma 1.01).

    Per matrix and step: ``(q1, s1)`` from ``fixed_point_iters`` steps of [P] Eq 16 on ``G*G``
    from ``q = 1``; ``q, s <- EMA_beta`` (no bias correction); ``X = G / sqrt(q s^T)``;
    ``eta, phi`` from the limiter (``eta = 1`` on the first step, detected as ``phi == 0``);
    ``W <- W - lr * eta * alpha * X``.

    Options: ``ema=False`` (Fig 5e ablation: use ``q1, s1``), ``bias_correction=True``,
    ``eps`` (relative to ``mean(q s^T)``, so the update is exactly invariant to the gradient's
    scale), ``fixed_point_iters``, ``transpose_to_short_side`` (default True: the paper's
    ``m <= n`` convention, ``q`` on the short side starts the fixed point).
    """

    structure = RowColumn(estimator="per_sample", fixed_point_iters=5)
    # the limiter, alpha and lr fold into one pass: W.addcmul_(X, -lr * alpha * eta)
    blocks = (RowColumnScaling(structure), NormGrowthLimiter(), Scale("alpha"), LearningRate())
    hyperparameters = dict(lr=0.02, beta=0.9, alpha=0.05, gamma=1.01, transpose_to_short_side=True)
    paper_hparams = {"1.3B": {"alpha": 0.02}}
