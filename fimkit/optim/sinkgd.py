"""SinkGD, Sinkhorn gradient descent (Scetbon et al., "Gradient Multi-Normalization",
arXiv 2502.06742): stateless alternating row and column l2 normalisation of the gradient."""

from .blocks import LearningRate, Scale
from .chain import ChainOptimizer
from .normalizers import SinkhornNormalise


class SinkGD(ChainOptimizer):
    """SinkGD: ``W <- W - lr * alpha * SR-Sinkhorn(G, sinkhorn_iters)``.

    Each SR-Sinkhorn round scales every row to l2 norm ``sqrt(n)`` and then every column to
    ``sqrt(m)``, so entries have root-mean-square about 1. Defaults ``sinkhorn_iters`` 5,
    ``lr`` 0.02 and ``alpha`` 0.05 (a per-entry step of 1e-3); see DECISIONS.md for where the
    constants come from. Stateless: no optimizer state for matrices.
    """

    blocks = (SinkhornNormalise(), Scale("alpha", 0.05), LearningRate())
    hyperparameters = dict(lr=0.02)
