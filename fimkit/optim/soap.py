"""SOAP ([P] Alg 6): ``EigenvalueCorrected(Kronecker(Full, Full))``.

Adam in the eigenbasis of the Kronecker factors ``E[GG^T]``, ``E[G^TG]`` (EMAs with
``shampoo_beta``), refreshed at step 1 and every ``precondition_frequency`` steps. Defaults are
SOAP's published ones (lr 3e-3, betas (0.95, 0.95), shampoo_beta 0.95, K = 10).
"""

from ..derive import derive
from ..structures import EigenvalueCorrected, Full, Kronecker

SOAP = derive(
    EigenvalueCorrected(Kronecker(Full(), Full())), name="SOAP", doc=__doc__,
    lr=3e-3, betas=(0.95, 0.95), shampoo_beta=0.95, precondition_frequency=10, eps=1e-8, bias_correction=True,
)
