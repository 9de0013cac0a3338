"""APOLLO (arXiv 2412.05270, facts from the paper and its official code): a recipe over the
low-rank pieces, not a structure. Adam's element-wise scaling is coarsened to channels and
estimated in a random subspace, which is not the Frobenius fit of any family:

    P: m x r with N(0, 1/r) entries, redrawn at t == 1 and every K = 200 steps
    R = P^T G;  Adam moments of R;  R~ = m / (sqrt(v) + eps)
    s_j = ||R~_j|| / (||R_j|| + 1e-8)          (channel-wise)
    W -= lr * sqrt(1 - b2^t) / (1 - b1^t) * alpha * limiter(G diag(s))

with the norm-growth limiter (gamma 1.01) of Fira. The official code's ``scale`` enters as
``sqrt(scale)``, so ``alpha = sqrt(scale)``: 1 for APOLLO. Official scripts: lr 0.01, rank 128 /
192 / 256 / 256 for 60M / 130M / 350M / 1B, betas (0.9, 0.999), eps 1e-6, bias correction on,
weight decay 0. The projection is redrawn at ``t == 1`` and ``t % K == 0`` like Alice's and
GaLore's switches (the official code redraws at ``t - 1 ≡ 0 mod K``, one step later: a
``SubspaceProjection(refresh_offset=1)`` recipe).
"""

from ..derive import recipe
from ..lowrank import BiasCorrection, ChannelScaling, ProjectedAdam, SubspaceProjection
from .blocks import LearningRate, NormGrowthLimiter, Scale

APOLLO = recipe(
    SubspaceProjection(), ProjectedAdam(), ChannelScaling(), NormGrowthLimiter(), Scale("alpha", 1.0),
    BiasCorrection(), LearningRate(),
    name="APOLLO", doc=__doc__,
    paper_hparams={"60M": {"rank": 128}, "130M": {"rank": 192}, "350M": {"rank": 256}, "1.3B": {"rank": 256}},
    lr=0.01, rank=128, update_interval=200, betas=(0.9, 0.999), eps=1e-6, bias_correction=True,
    tracking_beta=0.0, switching=False, projection="random", scale_type="channel", alpha=1.0, gamma=1.01,
    transpose_to_short_side=True,
)
