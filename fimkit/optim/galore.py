"""GaLore ([P] Alg 8; official GaLore semantics): Adam on ``sigma = U^T G`` with ``U`` the top-``r``
left singular vectors of ``G``, refreshed at ``t == 1`` and every ``K`` steps.

    W -= lr * sqrt(1 - b2^t) / (1 - b1^t) * alpha * U (m / (sqrt(v) + eps))

It is Alice's chain with tracking, switching and compensation off and the SVD basis ([P] §5).
Defaults: [P] Table 7 (lr 0.02, alpha 0.3, r 128/256/256/512, K 200; lr 0.01 and alpha 0.25 at
1.3B); betas and eps as official GaLore's AdamW (0.9, 0.999), 1e-6.
"""

from ..lowrank import low_rank_adam_chain
from .chain import ChainOptimizer

GALORE_DEFAULTS = dict(
    lr=0.02, alpha=0.3, rank=128, update_interval=200, betas=(0.9, 0.999), eps=1e-6,
    bias_correction=True, tracking_beta=0.0, switching=False, projection="svd",
    transpose_to_short_side=True,
)
GALORE_PAPER_HPARAMS = {
    "60M": {"rank": 128},
    "130M": {"rank": 256},
    "350M": {"rank": 256},
    "1.3B": {"rank": 512, "lr": 0.01, "alpha": 0.25},
}


class GaLore(ChainOptimizer):
    """GaLore: Adam in the top-``rank`` left singular subspace of the gradient."""

    blocks = low_rank_adam_chain()
    hyperparameters = dict(GALORE_DEFAULTS, compensation="none")
    paper_hparams = GALORE_PAPER_HPARAMS
