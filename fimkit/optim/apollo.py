"""APOLLO and APOLLO-Mini (arXiv 2412.05270, facts from the paper and its official code).

Adam's element-wise scaling coarsened to channels, estimated in a random subspace:

    P: m x r with N(0, 1/r) entries, redrawn at t == 1 and every K = 200 steps
    R = P^T G;  Adam moments of R;  R~ = m / (sqrt(v) + eps)
    s_j = ||R~_j|| / (||R_j|| + 1e-8)          (channel-wise; APOLLO-Mini: one tensor-wise s, r = 1)
    W -= lr * sqrt(1 - b2^t) / (1 - b1^t) * alpha * limiter(G diag(s))

with the norm-growth limiter (gamma 1.01) of Fira. The official code's ``scale`` enters as
``sqrt(scale)``, so ``alpha = sqrt(scale)``: 1 for APOLLO, ``sqrt(128)`` for APOLLO-Mini
(``sqrt(192)`` in its 130M script). Official scripts: lr 0.01, rank 128 / 192 / 256 / 256 for
60M / 130M / 350M / 1B, betas (0.9, 0.999), eps 1e-6, bias correction on, weight decay 0.
The projection is redrawn at ``t == 1`` and ``t % K == 0`` like Alice's and GaLore's switches
(the official code redraws at ``t - 1 ≡ 0 mod K``, one step later).
"""

import math

from ..lowrank import BiasCorrection, ChannelScaling, ProjectedAdam, SubspaceProjection
from .blocks import LearningRate, NormGrowthLimiter, Scale
from .chain import ChainOptimizer


class APOLLO(ChainOptimizer):
    """APOLLO: channel-wise scaling of the raw gradient from a random-projection Adam."""

    blocks = (SubspaceProjection(), ProjectedAdam(), ChannelScaling(), NormGrowthLimiter(),
              Scale("alpha", 1.0), BiasCorrection(), LearningRate())
    hyperparameters = dict(
        lr=0.01, rank=128, update_interval=200, betas=(0.9, 0.999), eps=1e-6, bias_correction=True,
        tracking_beta=0.0, switching=False, projection="random", scale_type="channel", alpha=1.0,
        gamma=1.01, transpose_to_short_side=True,
    )
    paper_hparams = {"60M": {"rank": 128}, "130M": {"rank": 192}, "350M": {"rank": 256}, "1.3B": {"rank": 256}}


class APOLLOMini(APOLLO):
    """APOLLO-Mini: rank-1 random projection, one tensor-wise scale, ``alpha = sqrt(128)``."""

    hyperparameters = {**APOLLO.hyperparameters, "rank": 1, "scale_type": "tensor", "alpha": math.sqrt(128)}
    paper_hparams = {"130M": {"alpha": math.sqrt(192)}}
