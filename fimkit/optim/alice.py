"""Alice ([P] Alg 2, 3, 4, 10): Eigen-Adam in a switched low-rank subspace plus the optimal
compensation of its complement (``LowRankPlusDiagonal``, Thm 5.1), with the paper's 60M defaults
(Table 11; ``paper_hparams`` per size).

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

from ..derive import derive
from ..lowrank import BiasCorrection
from ..structures import LowRankPlusDiagonal

Alice = derive(
    LowRankPlusDiagonal(rank=128, estimator="subspace", leading=40, tracking_beta=0.999, switching=True,
                        compensation="optimal"),
    name="Alice", doc=__doc__,
    paper_hparams={
        "60M": {"rank": 128, "leading": 40},
        "130M": {"rank": 256, "leading": 40},
        "350M": {"rank": 256, "leading": 40},
        "1.3B": {"rank": 512, "leading": 160, "alpha": 0.25, "alpha_c": 0.2},
    },
    momentum=False, post=(BiasCorrection(),),
    lr=0.02, betas=(0.9, 0.9), alpha=0.3, alpha_c=0.4, gamma=1.01, eps=1e-8, compensation_eps=1e-8,
    update_interval=200, bias_correction=False, transpose_to_short_side=True,
)
