"""Eigenvalue-corrected structures ``F~ = Q diag(vec(D)) Q^T`` ([P] Thm 3.2, 3.3) -> Eigen-Adam, SOAP.

``Q = kron(U_rows, U_cols)`` is the eigenbasis of a Kronecker structure (``basis``): a ``Full``
side contributes the eigenvectors of its Gram matrix (``E[GG^T]`` for rows, ``E[G^TG]`` for
columns), an ``Identity`` or ``DiagonalFactor`` side the standard basis. Given the basis, the
optimal eigenvalues are exact: ``D = E[(U_rows^T G U_cols)^2]`` (= ``diag(Q^T F Q)``). The basis
itself is the paper's one alternating round (eigenvectors of the Gram matrices); the generic
solver can optimise it too, which measures what that round leaves on the table.

- ``EigenvalueCorrected(Kronecker(Full(), Identity()))``: Eigen-Adam / one-sided SOAP.
- ``EigenvalueCorrected(Kronecker(Full(), Full()))``: SOAP.
- ``EigenvalueCorrected(Kronecker(Identity(), Identity()))``: ``Diagonal`` (Adam).

Online, the eigenbases are the structure's carried state (the carried-state hook of
``Structure``): the Gram matrices are averaged every step, the bases refreshed from them every
``K`` steps, and ``D`` is the average of the squared gradient in the current bases.
Preconditioning adds ``eps`` outside the root, as Adam and SOAP do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ..linalg import eigh_descending
from .base import Params, ParamSpec, Structure
from .factors import Full, Identity
from .kronecker import Kronecker, kronecker_moment, kronecker_moment_of_fim

SIDES = ("rows", "cols")


@dataclass(frozen=True, repr=False)
class EigenvalueCorrected(Structure):
    """Diagonal in the (Kronecker) eigenbasis of ``basis``."""

    basis: Kronecker = Kronecker(Full(), Full())
    solver: ClassVar[str] = "closed form (eigenvalues, given the basis)"
    positional_fields: ClassVar[tuple[str, ...]] = ("basis",)
    __repr__ = Structure.compact_repr

    def __post_init__(self):
        if not isinstance(self.basis, Kronecker):
            raise TypeError(f"EigenvalueCorrected.basis must be a Kronecker structure, got {self.basis!r}")

    def rotated_sides(self) -> tuple[str, ...]:
        """Sides whose basis is learned (``Full``); the others keep the standard basis."""
        return tuple(side for side in SIDES if isinstance(getattr(self.basis, side), Full))

    def statistics(self, grad: Tensor) -> dict[str, Tensor]:
        """``G G^T`` and/or ``G^T G`` for the rotated sides: what a refresh of the bases reads."""
        stats = {}
        if "rows" in self.rotated_sides():
            stats["rows_gram"] = kronecker_moment(Full(), Identity(), grad)
        if "cols" in self.rotated_sides():
            stats["cols_gram"] = kronecker_moment(Identity(), Full(), grad)
        return stats

    @staticmethod
    def bases_from_grams(grams: dict[str, Tensor]) -> dict[str, Tensor]:
        """Eigenvectors (descending eigenvalues) of each Gram matrix."""
        return {f"{side}_basis": eigh_descending(grams[f"{side}_gram"])[1]
                for side in SIDES if f"{side}_gram" in grams}

    @staticmethod
    def rotate(x: Tensor, bases: dict[str, Tensor]) -> Tensor:
        """``U_rows^T X U_cols`` (sides without a basis are left alone)."""
        if "rows_basis" in bases:
            x = bases["rows_basis"].mT @ x
        if "cols_basis" in bases:
            x = x @ bases["cols_basis"]
        return x

    @staticmethod
    def unrotate(x: Tensor, bases: dict[str, Tensor]) -> Tensor:
        """``U_rows X U_cols^T``: back from the eigenbasis."""
        if "rows_basis" in bases:
            x = bases["rows_basis"] @ x
        if "cols_basis" in bases:
            x = x @ bases["cols_basis"].mT
        return x

    # ------------------------------------------------------------------------ the family
    def parameter_spec(self, m: int, n: int) -> dict[str, ParamSpec]:
        spec = {"d": ParamSpec((m, n), "positive")}
        sizes = {"rows": m, "cols": n}
        for side in self.rotated_sides():
            spec[f"{side}_basis"] = ParamSpec((sizes[side], sizes[side]), "orthogonal")
        return spec

    def dense(self, params: Params, m: int, n: int) -> Tensor:
        u_rows = params.get("rows_basis", torch.eye(m, dtype=params["d"].dtype, device=params["d"].device))
        u_cols = params.get("cols_basis", torch.eye(n, dtype=params["d"].dtype, device=params["d"].device))
        q = torch.kron(u_rows.contiguous(), u_cols.contiguous())  # torch.kron rejects some strides
        return (q * params["d"].reshape(1, -1)) @ q.mT

    def quadratic_form(self, params: Params, grads: Tensor) -> Tensor:
        return (self.rotate(grads, params).square() * params["d"]).sum((-2, -1))

    def frobenius_sq(self, params: Params, m: int, n: int) -> Tensor:
        return params["d"].square().sum()

    # ------------------------------------------------------------------ the solution
    def fit_fim(self, fim: Tensor, m: int, n: int, bases: dict[str, Tensor] | None = None) -> Params:
        """One alternating round ([P] Thm 3.2/3.3): bases from the Gram matrices, then the exact
        eigenvalues ``D = diag(Q^T F Q)`` (``bases`` may be given to hold them fixed)."""
        if bases is None:
            grams = {}
            if "rows" in self.rotated_sides():
                grams["rows_gram"] = kronecker_moment_of_fim(Full(), Identity(), fim, m, n)
            if "cols" in self.rotated_sides():
                grams["cols_gram"] = kronecker_moment_of_fim(Identity(), Full(), fim, m, n)
            bases = self.bases_from_grams(grams)
        u_rows = bases.get("rows_basis", torch.eye(m, dtype=fim.dtype, device=fim.device))
        u_cols = bases.get("cols_basis", torch.eye(n, dtype=fim.dtype, device=fim.device))
        d = torch.einsum("ijkl,ia,jb,ka,lb->ab", fim.reshape(m, n, m, n), u_rows, u_cols, u_rows, u_cols)
        return {"d": d, **bases}

    # --------------------------------------------------------------- online estimation
    def statistic_shapes(self, m: int, n: int) -> dict[str, tuple[int, ...]]:
        sizes = {"rows": m, "cols": n}
        shapes = {"d": (m, n)}
        for side in self.rotated_sides():
            k = sizes[side]
            shapes[f"{side}_gram"] = (k, k)
            shapes[f"{side}_basis"] = (k, k)
        return shapes

    def carried_shapes(self, m: int, n: int) -> dict[str, tuple[int, ...]]:
        sizes = {"rows": m, "cols": n}
        return {f"{side}_basis": (sizes[side], sizes[side]) for side in self.rotated_sides()}

    def initial_carried(self, m: int, n: int, like: Tensor) -> Params:
        return {name: torch.eye(shape[0], dtype=like.dtype, device=like.device)
                for name, shape in self.carried_shapes(m, n).items()}

    def refresh(self, stats: dict[str, Tensor], carried: Params, grad: Tensor, step: int) -> Params:
        """The eigenbases of the averaged Gram matrices ([P] Alg 6/7)."""
        return self.bases_from_grams(stats)

    def coordinates(self, grad: Tensor, carried: Params) -> Tensor:
        return self.rotate(grad, carried)

    def fit(self, stats: dict[str, Tensor], m: int, n: int) -> Params:
        """Given the bases, the eigenvalues are the averaged squared coordinates ``d``."""
        return {"d": stats["d"], **{name: stats[name] for name in self.carried_shapes(m, n)}}

    def precondition(self, params: Params, grad: Tensor, power: float = 0.5, eps: float = 0.0) -> Tensor:
        d = params["d"]
        root = d.sqrt() if power == 0.5 else d.clamp_min(0).pow(power)
        return self.unrotate(self.rotate(grad, params) / (root + eps), params)
