"""Alice and Alice-0 ([P] Alg 2, 3, 4, 10): Eigen-Adam in a switched low-rank subspace plus the
optimal compensation of its complement (``LowRankPlusDiagonal``, Thm 5.1).

Per matrix (short side ``m`` after ``transpose_to_short_side``), each step:

    if t == 1 or t % K == 0:  U = switch(b3 U Qt U^T + (1 - b3) G G^T)      # tracking + switching
    sigma = U^T G;  Qt = b3 Qt + (1 - b3) sigma sigma^T
    mom = b1 mom + (1 - b1) sigma;  v = b2 v + (1 - b2) sigma^2;  omega = mom / (sqrt(v) + eps)
    C = limiter(sqrt(m - r) (G - U sigma) / sqrt(p + eps)),  p = EMA_b1 of the complement energy
    W -= lr * alpha * (U omega + alpha_c * C)

Faithful defaults: no bias correction, moments neither rotated nor reset at a switch, ``Qt``
not re-projected, the first basis from ``eigh`` (the paper's ``U_0 = 0`` is degenerate). Every
ablation of Table 5 / Fig 5 is a hyperparameter: ``tracking_beta`` (0 = no tracking, Alice-0),
``switching`` (False: plain top-``r`` eigenvectors of Qfull), ``switch_mode``, ``compensation``
(optimal / none / fira / fira_plus), ``rotate_moments_on_switch``, ``reproject_Q_on_switch``.
"""

from ..lowrank import low_rank_adam_chain
from ..structures import LowRankPlusDiagonal
from .chain import ChainOptimizer


class Alice(ChainOptimizer):
    """Alice ([P] Alg 4) with the paper's 60M defaults (Table 11); ``paper_hparams`` per size."""

    structure = LowRankPlusDiagonal(rank=128)
    blocks = low_rank_adam_chain()
    hyperparameters = dict(
        lr=0.02, betas=(0.9, 0.9), tracking_beta=0.999, alpha=0.3, alpha_c=0.4, gamma=1.01, eps=1e-8,
        compensation_eps=1e-8, rank=128, leading=40, update_interval=200, switching=True,
        switch_mode="complement", projection="eigen", compensation="optimal", bias_correction=False,
        transpose_to_short_side=True,
    )
    paper_hparams = {
        "60M": {"rank": 128, "leading": 40},
        "130M": {"rank": 256, "leading": 40},
        "350M": {"rank": 256, "leading": 40},
        "1.3B": {"rank": 512, "leading": 160, "alpha": 0.25, "alpha_c": 0.2},
    }


class AliceZero(Alice):
    """Alice-0: Alice without tracking (b3 = 0), so no ``r x r`` statistic is stored
    (state ``2nr + mr + n`` per matrix)."""

    hyperparameters = {**Alice.hyperparameters, "tracking_beta": 0.0}
