"""GaLore ([P] Alg 8; official GaLore semantics): Adam on ``sigma = U^T G`` with ``U`` the top-``r``
left singular vectors of ``G``, refreshed at ``t == 1`` and every ``K`` steps.

    W -= lr * sqrt(1 - b2^t) / (1 - b1^t) * alpha * U (m / (sqrt(v) + eps))

It is Alice's structure with tracking, switching and compensation off and the SVD basis ([P] §5).
Defaults: [P] Table 7 (lr 0.02, alpha 0.3, r 128/256/256/512, K 200; lr 0.01 and alpha 0.25 at
1.3B); betas and eps as official GaLore's AdamW (0.9, 0.999), 1e-6.
"""

from ..derive import derive
from ..lowrank import BiasCorrection
from ..structures import LowRankPlusDiagonal

GaLore = derive(
    LowRankPlusDiagonal(rank=128, estimator="subspace", tracking_beta=0.0, switching=False, projection="svd",
                        compensation="none"),
    name="GaLore", doc=__doc__,
    paper_hparams={"60M": {"rank": 128}, "130M": {"rank": 256}, "350M": {"rank": 256},
                   "1.3B": {"rank": 512, "lr": 0.01, "alpha": 0.25}},
    momentum=False, post=(BiasCorrection(),),
    lr=0.02, alpha=0.3, update_interval=200, betas=(0.9, 0.999), eps=1e-6, bias_correction=True,
    transpose_to_short_side=True,
)
