"""Muon, MomentUm Orthogonalized by Newton-Schulz (Jordan et al. 2024; [P] App B.9, E.5).

Whitening of the momentum: [P] Prop 2's ``whiten_left`` structure with
``E[G G^T] ~ E[G] E[G]^T`` (Eq 45), the momentum estimating ``E[G]``. The FIM view would add a
``sqrt(n)`` factor, which Muon omits (its aspect-ratio factor plays that role).
"""

from .blocks import LearningRate, Momentum
from .chain import ChainOptimizer
from .normalizers import AspectRatioScale, NesterovLookahead, Whiten


class Muon(ChainOptimizer):
    """Muon: ``M = EMA_b1(G)``; ``X = (1 - b1) G + b1 M`` (Nesterov); ``O = orth(X)``;
    ``W <- W - lr * sqrt(max(1, rows/cols)) * O``.

    Defaults are those of the reference implementation (KellerJordan/Muon): ``lr`` 0.02,
    momentum ``betas[0]`` 0.95 (``betas[1]`` is unused), Nesterov on, no bias correction,
    orthogonalisation by 5 steps of the quintic Newton-Schulz iteration
    (``whitening="newton_schulz5"``, which leaves singular values in about [0.7, 1.2]);
    ``whitening="eigh"`` gives the exact polar factor. The reference runs the iteration in
    bfloat16; fimkit runs it in the compute dtype (float32 or wider).
    """

    blocks = (Momentum(), NesterovLookahead(), Whiten(), AspectRatioScale(), LearningRate())
    hyperparameters = dict(lr=0.02, betas=(0.95, 0.0), bias_correction=False,
                           whitening="newton_schulz5", ns_steps=5)
