"""SWAN, SGD with Whitening And Normalization (Ma et al., arXiv 2412.13148; [P] App B.7).

Stateless for matrices: GradNorm (each row standardised), GradWhitening (``(G G^T)^{-1/2} G``, the
whitening structure ``Kronecker(Full(), Identity())`` fitted to that one direction, [P] Prop 2),
an optional rescale to unit RMS, and ``W <- W - lr * alpha * rescale(whiten(standardize_rows(G)))``.
The composition of the two operators is SWAN's own ([P] App E.5).

Defaults: ``lr`` 0.02 and ``alpha`` 0.05 (a per-entry step of 1e-3 after the rescale, the scale
of Adam's; the SWAN learning-rate constants are not confirmed against the SWAN paper, see
DECISIONS.md), ``rescale=True``, and an *exact* whitening (``whitening="eigh"``, float64
eigendecomposition). ``whitening="newton_schulz"`` with ``ns_steps``/``ns_step_size`` is the
paper's Newton-Schulz iteration: cheaper on GPUs, but with step 0.5 it needs about 20 steps to
be accurate on ill-conditioned gradients (5 steps leave a large error).
"""

from ..derive import derive
from ..structures import Full, Identity, Kronecker
from .blocks import RescaleToRMS, Scale, StandardizeRows

SWAN = derive(
    Kronecker(Full(), Identity(), estimator="one_sample", keep_constants=False), name="SWAN", doc=__doc__,
    pre=(StandardizeRows(),), post=(RescaleToRMS(), Scale("alpha", 0.05)),
    lr=0.02, whitening="eigh", ns_steps=20, ns_step_size=0.5,
)
