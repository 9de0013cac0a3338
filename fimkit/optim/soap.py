"""SOAP ([P] Alg 6) and Eigen-Adam / one-sided SOAP ([P] Alg 7): ``EigenvalueCorrected``."""

from ..derive import derive
from ..structures import EigenvalueCorrected, Full, Identity, Kronecker

_SOAP_DEFAULTS = dict(lr=3e-3, betas=(0.95, 0.95), shampoo_beta=0.95, precondition_frequency=10,
                      eps=1e-8, bias_correction=True)

SOAP = derive(
    EigenvalueCorrected(Kronecker(Full(), Full())), name="SOAP", **_SOAP_DEFAULTS,
    doc="SOAP: Adam in the eigenbasis of the Kronecker factors E[GG^T], E[G^TG] (EMA with "
        "shampoo_beta), refreshed at step 1 and every precondition_frequency steps.",
)

EigenAdam = derive(
    EigenvalueCorrected(Kronecker(Full(), Identity())), name="EigenAdam",
    transpose_to_short_side=True, **_SOAP_DEFAULTS,
    doc="Eigen-Adam (one-sided SOAP): Adam in the eigenbasis of E[GG^T] of the short side. "
        "With an identity basis it is Adam.",
)
