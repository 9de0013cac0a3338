"""The low-rank extension of [P] §5 as reusable pieces: tracking, switching, compensation.

Math lives in pure functions, one module per idea:

- :mod:`~fimkit.lowrank.tracking`: the ``r x r`` EMA ``Qt`` of ``sigma sigma^T`` and ``U Qt U^T``;
- :mod:`~fimkit.lowrank.switching`: one subspace-iteration step, keep the top-``l`` Ritz vectors,
  sample the rest from the complement (modes), plus the non-switching bases (EVD, SVD, random);
- :mod:`~fimkit.lowrank.compensation`: Thm 5.1's optimal diagonal of the complement, Fira's
  norm ratio, and the two-matmul back-projection;
- :mod:`~fimkit.lowrank.moments`: Adam's moments in the subspace.

:mod:`~fimkit.lowrank.blocks` wraps them as chain blocks and :mod:`~fimkit.lowrank.preconditioner`
registers how ``fimkit.derive`` tracks ``LowRankPlusDiagonal`` with them: its ``"ema"``
estimator as one preconditioner, its ``"subspace"`` estimator (Alice, GaLore, Fira) as the
project / Adam-in-the-subspace / back-project blocks. APOLLO is a recipe over the same blocks.
"""

from ..structures.lowrank import COMPENSATION_MODES, PROJECTIONS, SWITCH_MODES
from . import compensation, moments, switching, tracking
from .blocks import (
    BiasCorrection, ChannelScaling, CompensatedBackProjection, Projected, ProjectedAdam,
    SubspaceProjection, effective_rank, subspace_tracking_blocks,
)
from .preconditioner import LowRankPlusDiagonalPreconditioner

__all__ = [
    "tracking", "switching", "compensation", "moments", "Projected", "SubspaceProjection",
    "ProjectedAdam", "CompensatedBackProjection", "ChannelScaling", "BiasCorrection",
    "subspace_tracking_blocks", "effective_rank", "LowRankPlusDiagonalPreconditioner",
    "SWITCH_MODES", "PROJECTIONS", "COMPENSATION_MODES",
]
