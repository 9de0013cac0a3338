"""Low rank plus diagonal compensation: Alice's Fisher structure ([P] §5, Thm 5.1, Eq 19-21).

Row-major convention (``fimkit.fim``): column ``i`` of ``G`` is ``g_i`` (length ``m``) and ``F~`` is
block-diagonal over the ``n`` columns, one ``m x m`` block per column:

    M_i = U diag(D[:, i]) U^T + o_i (I_m - U U^T)

with ``basis`` ``U`` (``m x r``, orthonormal columns), eigenvalues ``d`` = ``D`` (``r x n``, > 0)
and ``compensation`` ``o`` (``n``, > 0). Inside ``span(U)`` it is Eigen-Adam's
eigenvalue-corrected block ([P] Thm 3.2); on the complement every direction of column ``i`` gets
the same eigenvalue ``o_i``, which is what makes the complement cheap (no ``m x (m - r)`` basis).

Frobenius optimum given ``U`` ([P] Thm 5.1, Eq 20-21), with ``S_i = E[g_i g_i^T]``:

    D = E[(U^T G)^2]                                        (= diag(U^T S_i U) per column)
    o_i = E[||g_i||^2 - ||U^T g_i||^2] / (m - r)            (= tr(U_c^T S_i U_c) / (m - r))

The basis is the paper's one alternating round: the top-``r`` eigenvectors of ``E[G G^T]``
(``sum_i S_i``). ``fit_fim(..., basis=U)`` holds a given basis fixed. With ``r >= m`` the rank is
clipped to ``m``, the complement is empty, there is no ``compensation`` parameter, and the
structure is ``EigenvalueCorrected(Kronecker(Full(), Identity()))``.

``precondition`` is matrix-free: ``U (U^T X / D^p) + (X - U U^T X) / o^p`` (``p = 1/2`` is the
paper's step, Eq 21), with ``eps`` added outside each root as ``EigenvalueCorrected`` does.
Optimizers track this structure online with the low-rank pieces of ``fimkit.lowrank``
(``fimkit.derive(LowRankPlusDiagonal(r))`` works; ``fimkit.optim.Alice`` is the paper's recipe).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ..linalg import eigh_descending
from .base import Params, ParamSpec, Structure


@dataclass(frozen=True)
class LowRankPlusDiagonal(Structure):
    """``blockdiag_i(U diag(D[:, i]) U^T + o_i (I - U U^T))``: a rank-``r`` eigenbasis plus the
    optimal diagonal compensation of its complement ([P] Thm 5.1)."""

    rank: int = 1
    solver: ClassVar[str] = "closed form (given the basis)"

    def __post_init__(self):
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"LowRankPlusDiagonal.rank must be a positive integer, got {self.rank!r}")

    def effective_rank(self, m: int) -> int:
        """The rank actually used for an ``m``-row weight: ``min(rank, m)``."""
        return min(self.rank, m)

    # ------------------------------------------------------------------------ the family
    def parameter_spec(self, m: int, n: int) -> dict[str, ParamSpec]:
        r = self.effective_rank(m)
        spec = {"basis": ParamSpec((m, r), "stiefel"), "d": ParamSpec((r, n), "positive")}
        if r < m:
            spec["compensation"] = ParamSpec((n,), "positive")
        return spec

    def column_blocks(self, params: Params, m: int) -> Tensor:
        """The ``n`` diagonal blocks ``M_i`` (shape ``(n, m, m)``)."""
        u, d = params["basis"], params["d"]
        blocks = (u.unsqueeze(0) * d.mT.unsqueeze(1)) @ u.mT
        if "compensation" in params:
            complement = torch.eye(m, dtype=u.dtype, device=u.device) - u @ u.mT
            blocks = blocks + params["compensation"][:, None, None] * complement
        return blocks

    def dense(self, params: Params, m: int, n: int) -> Tensor:
        blocks = self.column_blocks(params, m)
        eye_n = torch.eye(n, dtype=blocks.dtype, device=blocks.device)
        # F[(a, i), (b, j)] = delta_ij M_i[a, b] in the row-major vec order (a * n + i).
        return torch.einsum("iab,ij->aibj", blocks, eye_n).reshape(m * n, m * n)

    def quadratic_form(self, params: Params, grads: Tensor) -> Tensor:
        sigma = params["basis"].mT @ grads
        value = (sigma.square() * params["d"]).sum((-2, -1))
        if "compensation" in params:
            complement_energy = grads.square().sum(-2) - sigma.square().sum(-2)
            value = value + (complement_energy * params["compensation"]).sum(-1)
        return value

    def frobenius_sq(self, params: Params, m: int, n: int) -> Tensor:
        # The two parts live on orthogonal subspaces: ||M_i||^2 = sum_k D_ki^2 + (m - r) o_i^2.
        value = params["d"].square().sum()
        if "compensation" in params:
            value = value + (m - params["basis"].shape[-1]) * params["compensation"].square().sum()
        return value

    # ------------------------------------------------------------------ the solution
    def fit_fim(self, fim: Tensor, m: int, n: int, basis: Tensor | None = None) -> Params:
        """Thm 5.1 given ``basis`` (default: top-``r`` eigenvectors of ``E[G G^T]``)."""
        r = self.effective_rank(m)
        column_second_moments = torch.einsum("aibi->iab", fim.reshape(m, n, m, n))  # S_i
        if basis is None:
            basis = eigh_descending(column_second_moments.sum(0))[1][:, :r]
        elif tuple(basis.shape) != (m, r):
            raise ValueError(f"basis must have shape ({m}, {r}) for a {m} x {n} weight at rank "
                             f"{self.rank}, got {tuple(basis.shape)}")
        d = torch.einsum("iab,ak,bk->ki", column_second_moments, basis, basis)
        params = {"basis": basis, "d": d}
        if r < m:
            total = torch.diagonal(column_second_moments, dim1=-2, dim2=-1).sum(-1)
            params["compensation"] = (total - d.sum(0)) / (m - r)
        return params

    # --------------------------------------------------------------- online estimation
    def statistic_shapes(self, m: int, n: int) -> dict[str, tuple[int, ...]]:
        r = self.effective_rank(m)
        shapes = {"basis": (m, r), "projected_gram": (r, r), "d": (r, n)}
        if r < m:
            shapes["compensation"] = (n,)
        return shapes

    def statistics(self, grad: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError(
            "LowRankPlusDiagonal is tracked by a stateful preconditioner (its basis is switched "
            "every K steps, [P] Alg 4); use fimkit.derive or fimkit.optim.Alice"
        )

    def fit(self, stats: dict[str, Tensor], m: int, n: int) -> Params:
        return self.statistics(None)  # same explanation

    def precondition(self, params: Params, grad: Tensor, power: float = 0.5, eps: float = 0.0) -> Tensor:
        basis, d = params["basis"], params["d"]
        sigma = basis.mT @ grad
        root = d.sqrt() if power == 0.5 else d.pow(power)
        step = basis @ (sigma / (root + eps))
        if "compensation" in params:
            o = params["compensation"]
            o_root = o.sqrt() if power == 0.5 else o.pow(power)
            step = step + (grad - basis @ sigma) / (o_root + eps)
        return step
