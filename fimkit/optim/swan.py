"""SWAN, SGD with Whitening And Normalization (Ma et al., arXiv 2412.13148; [P] App B.7).

Stateless for matrices: GradNorm (each row standardised), GradWhitening
(``(G G^T)^{-1/2} G``), an optional rescale to unit RMS, and the step. Both operators are
special cases of [P] Prop 2 (normalisation and whitening structures); their composition is
SWAN's own ([P] App E.5).
"""

from .blocks import LearningRate, Scale
from .chain import ChainOptimizer
from .normalizers import RescaleToRMS, StandardizeRows, Whiten


class SWAN(ChainOptimizer):
    """SWAN: ``W <- W - lr * alpha * rescale(whiten(standardize_rows(G)))``.

    Defaults: ``lr`` 0.02 and ``alpha`` 0.05 (a per-entry step of 1e-3 after the rescale, the
    scale of Adam's; the SWAN learning-rate constants are not confirmed against the SWAN paper,
    see DECISIONS.md), ``rescale=True``, and an *exact* whitening (``whitening="eigh"``, float64
    eigendecomposition). ``whitening="newton_schulz"`` with ``ns_steps``/``ns_step_size`` is the
    paper's Newton-Schulz iteration: cheaper on GPUs, but with step 0.5 it needs about 20 steps
    to be accurate on ill-conditioned gradients (5 steps leave a large error).
    """

    blocks = (StandardizeRows(), Whiten(), RescaleToRMS(), Scale("alpha", 0.05), LearningRate())
    hyperparameters = dict(lr=0.02, whitening="eigh", ns_steps=20, ns_step_size=0.5)
