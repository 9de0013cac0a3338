"""Shampoo ([P] Alg 5): ``Kronecker(Full, Full)`` fitted by the upper bound of Thm 3.1.

``L = eps I + sum G G^T``, ``R = eps I + sum G^T G``, ``W -= lr L^{-1/4} G R^{-1/4}``: the bound's
factors are ``L^{1/2}`` and ``R^{1/2}``, and without the paper's dropped constants the -1/2 step
is ``L^{-1/4} G R^{-1/4}``. ``stat_init`` is eps; ``accumulate=False`` with ``betas=(b1, b3)``
gives the EMA variant; ``precondition_frequency=K`` recomputes the roots at the refresh steps.
"""

from ..derive import derive
from ..structures import Full, Kronecker

Shampoo = derive(
    Kronecker(Full(), Full(), estimator="bound", keep_constants=False), name="Shampoo", doc=__doc__,
    lr=1e-3, betas=(0.0, 1.0), accumulate=True, stat_init=1e-6, eps=0.0, bias_correction=False,
)
