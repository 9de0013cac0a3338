"""Fira (arXiv 2410.01623; [P] uses it as a baseline): GaLore plus the residual ``R = G - U U^T G``
scaled column-wise by the low-rank optimizer's norm ratio and passed through the norm-growth
limiter (gamma 1.01):

    S = limiter(R diag(||omega_j|| / ||sigma_j||))
    W -= lr * sqrt(1 - b2^t) / (1 - b1^t) * (alpha U omega + S)

As in the official code, ``S`` is not multiplied by ``alpha`` (the structure declares
``compensation="fira"``) and the bias correction applies to the sum. The residual is
``(I - U U^T) G`` (the paper's); the official code subtracts ``alpha U U^T G`` instead
[DECISION]. Defaults: GaLore's ([P] Table 7).
"""

from dataclasses import replace

from ..derive import derive
from .galore import GaLore

Fira = derive(
    replace(GaLore.structure, compensation="fira"), name="Fira", doc=__doc__,
    paper_hparams=GaLore.paper_hparams, **GaLore.declaration.recipe(), alpha_c=1.0, gamma=1.01,
)
