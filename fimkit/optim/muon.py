"""Muon, MomentUm Orthogonalized by Newton-Schulz (Jordan et al. 2024; [P] App B.9, E.5).

Whitening of the momentum: [P] Prop 2's whitening structure ``Kronecker(Full(), Identity())``
fitted to one direction, with ``E[G G^T] ~ E[G] E[G]^T`` (Eq 45), the momentum estimating
``E[G]``. ``M = EMA_b1(G)``; ``X = (1 - b1) G + b1 M`` (Nesterov); ``O = orth(X)``;
``W <- W - lr * sqrt(max(1, rows/cols)) * O``. The FIM view would add a ``sqrt(n)`` factor
(``keep_constants=True``), which Muon omits (its aspect-ratio factor plays that role).

Defaults are those of the reference implementation (KellerJordan/Muon): ``lr`` 0.02, momentum
``betas[0]`` 0.95 (``betas[1]`` is unused), Nesterov on, no bias correction, orthogonalisation
by 5 steps of the quintic Newton-Schulz iteration (``whitening="newton_schulz5"``, which leaves
singular values in about [0.7, 1.2]); ``whitening="eigh"`` gives the exact polar factor. The
reference runs the iteration in bfloat16; fimkit runs it in the compute dtype (float32 or wider).
"""

from ..derive import derive
from ..structures import Full, Identity, Kronecker
from .blocks import AspectRatioScale, Momentum, NesterovLookahead

Muon = derive(
    Kronecker(Full(), Identity(), estimator="one_sample", keep_constants=False), name="Muon", doc=__doc__,
    pre=(Momentum(), NesterovLookahead()), post=(AspectRatioScale(),),
    lr=0.02, betas=(0.95, 0.0), bias_correction=False, whitening="newton_schulz5", ns_steps=5,
)
