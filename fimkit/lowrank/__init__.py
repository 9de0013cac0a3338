"""The low-rank extension of [P] §5 as reusable pieces: tracking, switching, compensation.

Math lives in pure functions, one module per idea:

- :mod:`~fimkit.lowrank.tracking`: the ``r x r`` EMA ``Qt`` of ``sigma sigma^T`` and ``U Qt U^T``;
- :mod:`~fimkit.lowrank.switching`: one subspace-iteration step, keep the top-``l`` Ritz vectors,
  sample the rest from the complement (modes), plus the non-switching bases (EVD, SVD, random);
- :mod:`~fimkit.lowrank.compensation`: Thm 5.1's optimal diagonal of the complement, Fira's
  norm ratio, and the two-matmul back-projection;
- :mod:`~fimkit.lowrank.moments`: Adam's moments in the subspace.

:mod:`~fimkit.lowrank.blocks` wraps them as chain blocks (Alice, GaLore, Fira and APOLLO are
recipes over them) and :mod:`~fimkit.lowrank.preconditioner` lets ``fimkit.derive`` track
``LowRankPlusDiagonal``.
"""

from . import compensation, moments, switching, tracking
from .blocks import (
    BiasCorrection, ChannelScaling, CompensatedBackProjection, Projected, ProjectedAdam,
    SubspaceProjection, effective_rank, low_rank_adam_chain,
)
from .compensation import COMPENSATION_MODES
from .preconditioner import LowRankPlusDiagonalPreconditioner
from .switching import PROJECTIONS, SWITCH_MODES

__all__ = [
    "tracking", "switching", "compensation", "moments", "Projected", "SubspaceProjection",
    "ProjectedAdam", "CompensatedBackProjection", "ChannelScaling", "BiasCorrection",
    "low_rank_adam_chain", "effective_rank", "LowRankPlusDiagonalPreconditioner",
    "SWITCH_MODES", "PROJECTIONS", "COMPENSATION_MODES",
]
