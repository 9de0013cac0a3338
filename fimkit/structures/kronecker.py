"""Kronecker structures ``F~ = kron(A, B)``, ``A`` on rows, ``B`` on columns ([P] §3, App D).

One class covers every composition of factor families: Shampoo (Full, Full), RACS and
Adafactor (DiagonalFactor, DiagonalFactor), the whitening and normalisation one-sided variants
(Full or DiagonalFactor against Identity), and ``kron_diag_spd`` (Full, DiagonalFactor).

Exact solution (all compositions): rearrange ``F`` so that ``kron(A, B)`` becomes the rank-1
matrix ``vec(A) vec(B)^T`` (Van Loan and Pitsianis); keep the entries each family can represent
(the "Kronecker moment"); its top singular pair is the Frobenius optimum. For RowColumn the
moment is ``P = E[G*G]`` and the power iteration on it is the paper's fixed point (Eq 16).

Estimators (how an optimizer tracks the member online; ``solve`` always returns the exact
optimum):

- ``"exact"``: EMA of the Kronecker moment, then the rank-1 solve. State = moment size, small
  when a side is Identity or both sides are diagonal; huge for Full x Full (that is F).
- ``"marginal"``: EMA of each side's marginal (``E[GG^T]``, ``E[G^TG]`` projected on the family),
  ``F~ = kron(A, B) / E||G||^2``. Exact for one-sided structures; Adafactor for RowColumn.
- ``"bound"``: [P] Thm 3.1's minimiser of an upper bound, ``A = (E[GG^T]/n)^{1/2}``,
  ``B = (E[G^TG]/m)^{1/2}``: Shampoo. ``keep_constants=False`` drops the 1/n and 1/m as the
  paper's Shampoo update does.
- ``"per_sample"``: the rank-1 solve on each single gradient (``fixed_point_iters`` steps of the
  fixed point from ones), then EMA of the factors: RACS ([P] Alg 1).
- ``"one_sample"``: the member fitted to the current direction alone, no state: for
  ``Kronecker(Full(), Identity())`` (or its transpose) the whitening ``(X X^T)^{-1/2} X`` of
  [P] Prop 2 with one sample (SWAN, Muon; ``keep_constants=False`` drops its ``sqrt(n)``).
- ``"sinkhorn"``: for ``RowColumn``, the member that balances the current direction (rows to
  norm sqrt(n), columns to sqrt(m), SinkGD); a matrix-balancing fit, not a Frobenius one.
- ``"auto"``: ``"exact"`` when its state is small (a side is Identity, or both are diagonal),
  else ``"bound"``.

The one-gradient estimators (``one_sample``, ``sinkhorn``) keep no statistics; optimizers fit
them to each direction (``fimkit.optim.preconditioners``).

``precondition`` adds ``eps`` to the eigenvalues of the *product* ``kron(A, B)`` (for RACS:
``G / sqrt(q s^T + eps)``, as [P] Alg 1 prescribes), never to each factor separately.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ..linalg import fixed_point_rank1, inverse_power
from ..reductions import COLS, LOCAL, ROWS, Reduction
from .base import Params, ParamSpec, Structure
from .factors import DiagonalFactor, FactorFamily, Full, Identity

ESTIMATORS = ("auto", "exact", "marginal", "bound", "per_sample", "one_sample", "sinkhorn")
#: estimators fitted to one direction at a time, with no averaged statistics
ONE_GRADIENT_ESTIMATORS = ("one_sample", "sinkhorn")


def _subscripts(rows: FactorFamily, cols: FactorFamily) -> tuple[str, str, str]:
    r1, r2, r_kept = rows.subscripts("i", "k")
    c1, c2, c_kept = cols.subscripts("j", "l")
    return r1 + c1, r2 + c2, r_kept + c_kept


def kronecker_moment(rows: FactorFamily, cols: FactorFamily, grads: Tensor) -> Tensor:
    """Kept entries of ``G (x) G`` for a gradient (..., m, n): one sample of the moment.

    E.g. ``G*G`` for (Diagonal, Diagonal), ``G G^T`` for (Full, Identity), ``||G||^2`` for
    (Identity, Identity).
    """
    a, b, kept = _subscripts(rows, cols)
    if a == b:  # no Full side: the kept entries are sums of G*G (einsum's reduction over the
        # rows of an elementwise product is ~50x slower than this on CPU)
        summed = tuple(-2 + i for i, index in enumerate(a) if index not in kept)
        square = grads * grads
        return square.sum(summed) if summed else square
    return torch.einsum(f"...{a},...{b}->...{kept}", grads, grads)


def kronecker_moment_of_fim(rows: FactorFamily, cols: FactorFamily, fim: Tensor, m: int, n: int) -> Tensor:
    """The same kept entries read off a dense Fisher ``F[(i,j),(k,l)] = E[G_ij G_kl]``."""
    a, b, kept = _subscripts(rows, cols)
    return torch.einsum(f"{a}{b}->{kept}", fim.reshape(m, n, m, n))


def _moment_matrix(rows, cols, moment: Tensor, m: int, n: int) -> Tensor:
    """The moment as the matrix whose best rank-1 approximation is the optimum, in an
    orthonormal basis of each family (hence the ``coordinate_scale`` division)."""
    r_dim = max(1, torch.Size(rows.moment_shape(m)).numel())
    c_dim = max(1, torch.Size(cols.moment_shape(n)).numel())
    scale = rows.coordinate_scale(m) * cols.coordinate_scale(n)
    return moment.reshape(r_dim, c_dim) / scale


def rank1_factors(
    rows: FactorFamily, cols: FactorFamily, moment: Tensor, m: int, n: int, iters: int | None = None
) -> tuple[Tensor, Tensor]:
    """Best ``kron(A, B)`` (compact factors) from a Kronecker moment.

    ``iters=None`` uses the SVD (closed form); an integer runs that many steps of the fixed
    point ``fixed_point_rank1`` from ones (the paper's Eq 16 / Eq 42 iteration).
    """
    mat = _moment_matrix(rows, cols, moment, m, n)
    if iters is None:
        u, sigma, vh = torch.linalg.svd(mat, full_matrices=False)
        row_coord, col_coord = u[:, 0] * sigma[0], vh[0]
    else:
        col_coord, row_coord = fixed_point_rank1(mat, iters)
    a = rows.from_moment(row_coord / rows.coordinate_scale(m), m)
    b = cols.from_moment(col_coord / cols.coordinate_scale(n), n)
    return a, b


def normalise_split(rows, cols, a: Tensor, b: Tensor, m: int, n: int) -> tuple[Tensor, Tensor]:
    """Fix the arbitrary sign and scale split of ``kron(A, B) = kron(cA, B/c)``: positive traces,
    an Identity side equal to exactly I, otherwise equal Frobenius norms."""
    sign = torch.where(rows.trace(a, m) < 0, -1.0, 1.0).to(a.dtype)
    a, b = a * sign, b * sign
    if isinstance(cols, Identity):
        return a * b, torch.ones_like(b)
    if isinstance(rows, Identity):
        return torch.ones_like(a), b * a
    na = rows.matrix(a, m).norm().clamp_min(torch.finfo(a.dtype).tiny)
    nb = cols.matrix(b, n).norm().clamp_min(torch.finfo(b.dtype).tiny)
    c = (nb / na).sqrt()
    return a * c, b / c


@dataclass(frozen=True, repr=False)
class Kronecker(Structure):
    """``F~ = kron(A, B)`` with ``A`` from the ``rows`` family and ``B`` from the ``cols`` family."""

    rows: FactorFamily = Full()
    cols: FactorFamily = Full()
    estimator: str = "auto"
    fixed_point_iters: int = 5
    keep_constants: bool = True
    positional_fields: ClassVar[tuple[str, ...]] = ("rows", "cols")

    def __repr__(self) -> str:
        if type(self.rows) is DiagonalFactor and type(self.cols) is DiagonalFactor:
            return self.compact_repr("RowColumn", omit=("rows", "cols"))
        return self.compact_repr()

    def __post_init__(self):
        for side in ("rows", "cols"):
            if not isinstance(getattr(self, side), FactorFamily):
                raise TypeError(
                    f"Kronecker.{side} must be a factor family (Full(), DiagonalFactor(), "
                    f"Identity()), got {getattr(self, side)!r}"
                )
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        sides = {type(self.rows), type(self.cols)}
        if self.estimator == "one_sample" and sides != {Full, Identity}:
            raise ValueError("estimator='one_sample' is the one-gradient whitening: it needs one Full and one "
                             f"Identity side, got {self!r}")
        if self.estimator == "sinkhorn" and sides != {DiagonalFactor}:
            raise ValueError(f"estimator='sinkhorn' balances rows and columns: it needs two DiagonalFactor sides, "
                             f"got {self!r}")

    @property
    def solver(self) -> str:  # type: ignore[override]
        return "fixed point" if self._is_row_column else "closed form"

    @property
    def _is_row_column(self) -> bool:
        return isinstance(self.rows, DiagonalFactor) and isinstance(self.cols, DiagonalFactor)

    @property
    def resolved_estimator(self) -> str:
        if self.estimator != "auto":
            return self.estimator
        small = self._is_row_column or isinstance(self.rows, Identity) or isinstance(self.cols, Identity)
        return "exact" if small else "bound"

    # ------------------------------------------------------------------------ the family
    def parameter_spec(self, m: int, n: int) -> dict[str, ParamSpec]:
        return {"rows": self.rows.spec(m), "cols": self.cols.spec(n)}

    def factor_matrices(self, params: Params, m: int, n: int) -> tuple[Tensor, Tensor]:
        return self.rows.matrix(params["rows"], m), self.cols.matrix(params["cols"], n)

    def dense(self, params: Params, m: int, n: int) -> Tensor:
        a, b = self.factor_matrices(params, m, n)
        return torch.kron(a.contiguous(), b.contiguous())  # torch.kron rejects some strides

    def quadratic_form(self, params: Params, grads: Tensor) -> Tensor:
        a, b = self.factor_matrices(params, *grads.shape[-2:])
        return ((a @ grads @ b.mT) * grads).sum((-2, -1))

    def frobenius_sq(self, params: Params, m: int, n: int) -> Tensor:
        a, b = self.factor_matrices(params, m, n)
        return a.square().sum() * b.square().sum()

    def parameters_view(self, params: Params, m: int, n: int) -> dict[str, Tensor]:
        a, b = self.factor_matrices(params, m, n)
        return {"rows_matrix": a, "cols_matrix": b}

    # ------------------------------------------------------------------ exact solution
    def fit_fim(self, fim: Tensor, m: int, n: int, iters: int | None = None) -> Params:
        moment = kronecker_moment_of_fim(self.rows, self.cols, fim, m, n)
        if iters is None and self._is_row_column:
            return self.fit_moment_by_fixed_point(moment, m, n)
        a, b = rank1_factors(self.rows, self.cols, moment, m, n, iters)
        a, b = normalise_split(self.rows, self.cols, a, b, m, n)
        return {"rows": a, "cols": b}

    def fit_moment_by_fixed_point(self, moment: Tensor, m: int, n: int, tol: float = 1e-15,
                                  max_iters: int = 100_000) -> Params:
        """Iterate Eq 16 to convergence of the product (the paper's solver for RowColumn): 50
        steps at a time, each batch continuing from the last (so the cost is ``max_iters`` steps at
        most), until the product changes by at most ``tol`` (at least ``8 eps`` of the dtype)
        relative; ``SolverError`` when it has not after ``max_iters`` steps (a top singular value of
        the moment that is, or nearly is, degenerate)."""
        from ..solve import SolverError  # solve depends on structures

        if not bool(torch.isfinite(moment).all()):
            raise SolverError(f"{self!r}: the Kronecker moment is not finite; the fixed point cannot converge")
        tol = max(tol, 8 * torch.finfo(moment.dtype).eps)
        mat = _moment_matrix(self.rows, self.cols, moment, m, n)
        prev, done, q, change = None, 0, None, float("nan")
        while done < max_iters:
            done += 50
            s, q = fixed_point_rank1(mat, 50, q0=q)
            product = torch.outer(q, s)
            if prev is not None:
                change = float((product - prev).norm() / product.norm().clamp_min(torch.finfo(mat.dtype).tiny))
                if change <= tol:
                    break
            prev = product
        else:
            raise SolverError(f"{self!r}: the fixed point (Eq 16) did not converge in {max_iters} steps (last "
                              f"relative change {change:.2g}); the top singular value of the moment is (nearly) "
                              f"degenerate. Call fit_fim(..., iters=k) for k steps, or solve(..., method='generic')")
        a = self.rows.from_moment(q / self.rows.coordinate_scale(m), m)
        b = self.cols.from_moment(s / self.cols.coordinate_scale(n), n)
        a, b = normalise_split(self.rows, self.cols, a, b, m, n)
        return {"rows": a, "cols": b}

    # -------------------------------------------------------------- online estimation
    def statistic_shapes(self, m: int, n: int) -> dict[str, tuple[int, ...]]:
        estimator = self.resolved_estimator
        if estimator in ONE_GRADIENT_ESTIMATORS:
            return {}
        if estimator == "exact":
            return {"moment": self.rows.moment_shape(m) + self.cols.moment_shape(n)}
        if estimator == "per_sample":
            return {"rows": self.rows.spec(m).shape, "cols": self.cols.spec(n).shape}
        return {"rows": self.rows.moment_shape(m), "cols": self.cols.moment_shape(n)}

    def statistic_degree(self, name: str) -> float:
        if self.resolved_estimator == "per_sample":  # the fixed point's q is scale-free
            return 0.0 if name == "rows" else 2.0
        return 2.0

    def parameter_degree(self, name: str) -> float:
        """The split of ``kron(A, B)``'s degree 2 between the factors that each estimator's fit
        makes (``normalise_split`` for ``exact``; the marginal's trace normalisation; the bound's
        square roots)."""
        estimator = self.resolved_estimator
        if estimator == "per_sample":
            rows = 0.0
        elif estimator == "marginal":
            rows = 2.0
        elif estimator == "exact" and (isinstance(self.rows, Identity) or isinstance(self.cols, Identity)):
            rows = 2.0 if isinstance(self.cols, Identity) else 0.0
        else:
            rows = 1.0
        return rows if name == "rows" else 2.0 - rows

    def statistics_prior(self, m: int, n: int, dtype=torch.float32) -> dict[str, Tensor]:
        if self.resolved_estimator in ONE_GRADIENT_ESTIMATORS:
            return {}
        a, b = self.rows.identity(m, dtype), self.cols.identity(n, dtype)
        if self.resolved_estimator == "exact":
            return {"moment": torch.tensordot(a, b, dims=0)}
        return {"rows": a, "cols": b}

    def reduces_by_partial_sums(self) -> bool:
        # Adafactor's marginals: row and column sums of G*G, and their trace
        return self.resolved_estimator == "marginal" and self.rows == self.cols == DiagonalFactor()

    def statistics(self, grad: Tensor, reduce: Reduction = LOCAL) -> dict[str, Tensor]:
        m, n = grad.shape[-2:]
        estimator = self.resolved_estimator
        if estimator in ONE_GRADIENT_ESTIMATORS:
            return {}
        if self.reduces_by_partial_sums():  # the sums kronecker_moment takes, on one G*G
            square = grad * grad
            return {"rows": reduce.sum(square, (-1,), over=COLS), "cols": reduce.sum(square, (-2,), over=ROWS)}
        if estimator == "exact":
            return {"moment": kronecker_moment(self.rows, self.cols, grad)}
        if estimator == "per_sample":
            moment = kronecker_moment(self.rows, self.cols, grad)
            a, b = rank1_factors(self.rows, self.cols, moment, m, n, iters=self.fixed_point_iters)
            return {"rows": a, "cols": b}
        return {
            "rows": kronecker_moment(self.rows, Identity(), grad),
            "cols": kronecker_moment(Identity(), self.cols, grad),
        }

    def fit(self, stats: dict[str, Tensor], m: int, n: int, reduce: Reduction = LOCAL) -> Params:
        estimator = self.resolved_estimator
        if estimator in ONE_GRADIENT_ESTIMATORS:
            raise ValueError(f"estimator={estimator!r} keeps no statistics: the member is fitted to each direction "
                             f"(fimkit.optim.preconditioners), or use fimkit.solve for a batch of gradients")
        if estimator == "exact":
            a, b = rank1_factors(self.rows, self.cols, stats["moment"], m, n)
            a, b = normalise_split(self.rows, self.cols, a, b, m, n)
            return {"rows": a, "cols": b}
        if estimator == "per_sample":
            return {"rows": stats["rows"], "cols": stats["cols"]}
        # Marginals are sums over the other side; an Identity side's projection is tr/k.
        a = stats["rows"] / (m if isinstance(self.rows, Identity) else 1)
        b = stats["cols"] / (n if isinstance(self.cols, Identity) else 1)
        if estimator == "marginal":
            total = reduce.sum(a, -1, over=ROWS) if self.reduces_by_partial_sums() else self.rows.trace(a, m)
            total = total.clamp_min(torch.finfo(a.dtype).tiny)
            return {"rows": a, "cols": b / total}
        if self.keep_constants:
            a, b = a / n, b / m
        return {"rows": self.rows.power(a, 0.5), "cols": self.cols.power(b, 0.5)}

    def precondition(self, params: Params, grad: Tensor, power: float = 0.5, eps: float = 0.0) -> Tensor:
        basis_a, eig_a = self.rows.eig(params["rows"])
        basis_b, eig_b = self.cols.eig(params["cols"])
        x = grad
        if basis_a is not None:
            x = basis_a.mT @ x
        if basis_b is not None:
            x = x @ basis_b
        if eig_a.ndim == eig_b.ndim == 1:
            eigs = torch.outer(eig_a, eig_b)  # the same products as the broadcast, 3x faster on CPU
        else:
            eigs = (eig_a.unsqueeze(-1) if eig_a.ndim else eig_a) * (eig_b.unsqueeze(-2) if eig_b.ndim else eig_b)
        # eigs is a temporary of this function's: the root and the product are written into it,
        # unless autograd records the computation (it needs the root to differentiate)
        in_place = not (torch.is_grad_enabled() and (eigs.requires_grad or x.requires_grad))
        inverse = inverse_power(eigs, power, eps, overwrite=in_place)
        fits = in_place and inverse.shape == x.shape and inverse.dtype == x.dtype
        x = inverse.mul_(x) if fits else x * inverse
        if basis_a is not None:
            x = basis_a @ x
        if basis_b is not None:
            x = x @ basis_b.mT
        return x


def RowColumn(**options) -> Kronecker:  # noqa: N802 - an alias, spelled like the class it builds
    """RACS's structure: ``Kronecker(DiagonalFactor(), DiagonalFactor())``, ``F~ = diag(vec(q s^T))``."""
    return Kronecker(DiagonalFactor(), DiagonalFactor(), **options)
