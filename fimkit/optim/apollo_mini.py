"""APOLLO-Mini (arXiv 2412.05270): APOLLO's recipe (not a structure) with a rank-1 random
projection, one tensor-wise scale ``s = ||R~|| / ||R||`` and ``alpha = sqrt(128)`` (the official
code's ``scale`` 128 enters as ``sqrt(scale)``; ``sqrt(192)`` in its 130M script)."""

import math

from ..derive import recipe
from .apollo import APOLLO

APOLLOMini = recipe(
    *APOLLO.declaration.chain, name="APOLLOMini", doc=__doc__, paper_hparams={"130M": {"alpha": math.sqrt(192)}},
    **{**APOLLO.hyperparameters, "rank": 1, "scale_type": "tensor", "alpha": math.sqrt(128)},
)
