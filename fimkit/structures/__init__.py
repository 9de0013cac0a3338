"""Fisher structures: declarative, frozen, composable families of approximations ``F~``."""

from .base import ParamSpec, Structure
from .diagonal import Diagonal
from .eigen import EigenvalueCorrected
from .factors import DiagonalFactor, FactorFamily, Full, Identity
from .kronecker import Kronecker, RowColumn
from .lowrank import LowRankPlusDiagonal

__all__ = [
    "Structure", "ParamSpec", "Diagonal", "Kronecker", "RowColumn", "FactorFamily", "Full",
    "DiagonalFactor", "Identity", "EigenvalueCorrected", "LowRankPlusDiagonal",
]
