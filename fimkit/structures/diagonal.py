"""Element-wise diagonal structure: ``F~ = diag(vec(D))`` ([P] Prop 1) -> Adam."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ..fim import vec
from .base import Params, ParamSpec, Structure


@dataclass(frozen=True)
class Diagonal(Structure):
    """``F~ = diag(vec(D))``, ``D > 0`` of the weight's shape.

    The Frobenius optimum keeps the diagonal of ``F``: ``D = E[G*G]`` (off-diagonal entries of
    ``F`` are unreachable). The -1/2 step ``G / sqrt(D)`` with a momentum is Adam. ``eps`` is
    added *outside* the root, as in Adam: ``X / (D**power + eps)``.
    """

    solver: ClassVar[str] = "closed form"
    matrix_only: ClassVar[bool] = False

    def parameter_spec(self, m: int, n: int) -> dict[str, ParamSpec]:
        return {"d": ParamSpec((m, n), "positive")}

    def dense(self, params: Params, m: int, n: int) -> Tensor:
        return torch.diag(vec(params["d"]))

    def quadratic_form(self, params: Params, grads: Tensor) -> Tensor:
        return (grads.square() * params["d"]).sum((-2, -1))

    def frobenius_sq(self, params: Params, m: int, n: int) -> Tensor:
        return params["d"].square().sum()

    def fit_fim(self, fim: Tensor, m: int, n: int) -> Params:
        return {"d": torch.diagonal(fim).reshape(m, n).clone()}

    def parameter_degree(self, name: str) -> float:
        return 2.0

    def statistic_shapes(self, m: int, n: int) -> dict[str, tuple[int, ...]]:
        return {"d": (m, n)}

    def statistics(self, grad: Tensor) -> dict[str, Tensor]:
        return {"d": grad * grad}

    def statistics_prior(self, m: int, n: int, dtype=torch.float32) -> dict[str, Tensor]:
        return {"d": torch.ones(m, n, dtype=dtype)}

    def fit(self, stats: dict[str, Tensor], m: int, n: int) -> Params:
        return {"d": stats["d"]}

    def precondition(self, params: Params, grad: Tensor, power: float = 0.5, eps: float = 0.0) -> Tensor:
        d = params["d"]
        root = d.sqrt() if power == 0.5 else d.pow(power)
        return grad / (root + eps)
