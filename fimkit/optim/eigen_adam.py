"""Eigen-Adam, one-sided SOAP ([P] Alg 7): ``EigenvalueCorrected(Kronecker(Full, Identity))``.

Adam in the eigenbasis of ``E[GG^T]`` of the short side (tall weights run on their transpose).
With an identity basis it is Adam. The paper gives no defaults of its own: SOAP's.
"""

from ..derive import derive
from ..structures import EigenvalueCorrected, Full, Identity, Kronecker
from .soap import SOAP

EigenAdam = derive(
    EigenvalueCorrected(Kronecker(Full(), Identity())), name="EigenAdam", doc=__doc__,
    transpose_to_short_side=True, **SOAP.hyperparameters,
)
