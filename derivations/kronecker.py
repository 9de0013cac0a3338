"""The Kronecker lemma: every ``Kronecker(rows, cols)`` composition reduces to one rank-1 problem.

For ``F~ = kron(A, B)`` (row-major: ``kron(A, B) vec(G) = vec(A G B^T)``) and ``F = E[vec(G) vec(G)^T]``:

    <F, kron(A, B)> = E[tr(G^T A G B^T)]          (index bookkeeping, any m, n)
    ||kron(A, B)||^2 = ||A||^2 ||B||^2
    ||F - kron(A, B)||^2 = ||F||^2 - 2 E[tr(G^T A G B^T)] + ||A||^2 ||B||^2

so the stationarity conditions are ``A = Pi_rows(E[G B G^T]) / ||B||^2`` and
``B = Pi_cols(E[G^T A G]) / ||A||^2`` with ``Pi`` the orthogonal projection on each factor family
(symmetric / diagonal / multiples of I). This is alternating least squares, i.e. power iteration on
the rearranged (projected) Fisher (Van Loan and Pitsianis): the optimum is its top singular pair.
Each composition's own module (one_sided, row_column, nearest_kronecker, kron_diag_spd)
specialises this lemma; this module proves it and holds the shared Kronecker pieces.
"""

from __future__ import annotations

import math

import sympy as sp
import torch

from fimkit.structures import DiagonalFactor, Full, Identity, Kronecker

from . import checks
from . import symbolic as S
from .report import Derivation, Formula, Memory, Step, main

FAMILY_WORDS = {Full: "any SPD matrix", DiagonalFactor: "a positive diagonal matrix", Identity: "c I"}


def same_family(structure, cls) -> bool:
    """``structure`` is a ``cls`` whose family (``parameter_spec``/``dense``) is not overridden."""
    kind = type(structure)
    return (isinstance(structure, cls) and kind.dense is cls.dense
            and kind.parameter_spec is cls.parameter_spec)


def composition(rows: tuple, cols: tuple):
    """Predicate: a Kronecker structure whose sides are of the given factor-family types."""
    def applies(structure) -> bool:
        return (same_family(structure, Kronecker) and isinstance(structure.rows, rows)
                and isinstance(structure.cols, cols))
    return applies


def _side_size(family, k) -> sp.Expr:
    """Entries one side stores (its moment or its factor): k^2, k or 1."""
    if isinstance(family, Full):
        return k**2
    return k if isinstance(family, DiagonalFactor) else sp.Integer(1)


def kronecker_memory(structure) -> Memory:
    """What the optimizer tracks for each estimator, as a formula in m, n (see kronecker.py)."""
    est = structure.resolved_estimator
    rows, cols = _side_size(structure.rows, S.m), _side_size(structure.cols, S.n)
    if est == "exact":  # the joint moment: one entry per pair of kept row and column entries
        return Memory(rows * cols, "EMA of the Kronecker moment (kept entries of E[G (x) G]), then the rank-1 solve")
    if est in ("one_sample", "sinkhorn"):
        return Memory(sp.Integer(0), "nothing: the member is fitted to each direction alone (SWAN/Muon whitening, "
                                     "SinkGD balancing)")
    holds = {"per_sample": "EMA of the per-sample rank-1 factors (RACS, [P] Alg 1)",
             "bound": "E[G G^T] and E[G^T G] projected on each family ([P] Thm 3.1 bound: Shampoo)",
             "marginal": "EMA of each side's marginal: exact for one-sided structures, Adafactor's "
                         "(non-Frobenius) fit for RowColumn"}[est]
    return Memory(rows + cols, holds)


# ----------------------------------------------------------------------------- the proofs
def reduction_proof() -> list[Step]:
    """<F, kron(A,B)> and ||kron(A,B)||^2 as index sums with symbolic m, n (general)."""
    g = sp.MatrixSymbol("G", S.m, S.n)
    a = sp.MatrixSymbol("A", S.m, S.m)
    b = sp.MatrixSymbol("B", S.n, S.n)
    (i, j, k, l), lim = S.ranges(("i", S.m), ("j", S.n), ("k", S.m), ("l", S.n))
    # one sample of F[(i,j),(k,l)] = G_ij G_kl against kron(A,B)[(i,j),(k,l)] = A_ik B_jl
    inner = sp.Sum(g[i, j] * g[k, l] * a[i, k] * b[j, l], *lim)
    jj = sp.Symbol("jj", integer=True)
    trace_form = sp.Sum((g.T * a * g * b.T)[jj, jj], (jj, 0, S.n - 1))
    if not S.index_sums_equal(inner, trace_form):
        raise S.DerivationMismatch("<vec(G)vec(G)^T, kron(A,B)> != tr(G^T A G B^T)")
    norm_sq = sp.Sum(a[i, k] ** 2 * b[j, l] ** 2, *lim)
    product = sp.Sum(a[i, k] ** 2 * b[j, l] ** 2, lim[0], lim[2], lim[1], lim[3])  # (sum A^2)(sum B^2)
    if not S.index_sums_equal(norm_sq, product):
        raise S.DerivationMismatch("||kron(A,B)||^2 != ||A||^2 ||B||^2")
    return [Step("<F, kron(A,B)> = E[tr(G^T A G B^T)] (index sums, E linear)", sp.Trace(g.T * a * g * b.T)),
            Step("||kron(A,B)||_F^2 = ||A||_F^2 ||B||_F^2", sp.Trace(a * a.T) * sp.Trace(b * b.T))]


def stationarity_proof() -> list[Step]:
    """Matrix calculus on the reduced objective (symmetric A, B; general m, n)."""
    g = sp.MatrixSymbol("G", S.m, S.n)
    a, b = sp.MatrixSymbol("A", S.m, S.m), sp.MatrixSymbol("B", S.n, S.n)
    objective = -2 * sp.Trace(g.T * a * g * b) + sp.Trace(a * a) * sp.Trace(b * b)
    a_star = S.solve_linear_matrix_equation(S.matrix_derivative(objective, a, (a, b)), a)
    b_star = S.solve_linear_matrix_equation(S.matrix_derivative(objective, b, (a, b)), b)
    return [Step("dJ/dA = 0  =>  A = E[G B G^T] / ||B||^2 (per sample; E is linear)", a_star),
            Step("dJ/dB = 0  =>  B = E[G^T A G] / ||A||^2", b_star)]


def projection_proof() -> list[Step]:
    """Restricted to a linear family with orthonormal basis {E_t}: a_t = <E_t, X> / c (any size)."""
    size, c = sp.Symbol("K", integer=True, positive=True), sp.Symbol("c", positive=True)
    a, x = sp.IndexedBase("a"), sp.IndexedBase("x")
    i, t = sp.symbols("i t", integer=True)
    objective = -2 * sp.Sum(a[i] * x[i], (i, 0, size - 1)) + c * sp.Sum(a[i] ** 2, (i, 0, size - 1))
    solution = S.solve_indexed_stationarity(objective, a[t])
    S.assert_equal(solution, x[t] / c, "projection lemma")
    return [Step("coordinates of A in an orthonormal basis of its family: a_t = <E_t, X>/c, i.e. "
                 "A = Pi(X)/c with X = E[G B G^T], c = ||B||^2", solution)]


def symbolic_factor(family, name: str, k: int) -> sp.Matrix:
    """A fixed-size symbolic member of a factor family (symmetric / diagonal / c I)."""
    if isinstance(family, Full):
        return S.symmetric_matrix(name, k)
    if isinstance(family, DiagonalFactor):
        return sp.diag(*S.diagonal_symbols(name, k, positive=False))
    return sp.Symbol(name, real=True) * sp.eye(k)


def fixed_size_objective(rows, cols, m_: int, n_: int):
    """At a fixed size, with a fully symbolic F: the explicit objective equals the reduced one.
    Returns (F, A, B, objective) for further use."""
    f = S.symbolic_fim(m_, n_)
    a, b = symbolic_factor(rows, "a", m_), symbolic_factor(cols, "b", n_)
    objective = S.frobenius_sq(f - S.kron(a, b))
    reduced = (S.frobenius_sq(f) - 2 * (S.contract_cols(f, b, m_, n_) * a).trace()
               + S.frobenius_sq(a) * S.frobenius_sq(b))
    S.assert_equal(objective, reduced, f"{m_}x{n_} Kronecker objective reduction")
    return f, a, b, objective


def conventions_proof() -> list[Step]:
    """The moments read off F (row-major) are the sample moments of symbolic gradients."""
    for m_, n_ in S.FIXED_SIZES:
        samples = S.symbolic_samples(m_, n_, 2)
        f = S.fim_of_samples(samples)
        mean = lambda fn: sum((fn(g) for g in samples), sp.zeros(*fn(samples[0]).shape)) / 2  # noqa: E731
        S.assert_equal(S.contract_cols(f, sp.eye(n_), m_, n_), mean(lambda g: g * g.T), "E[G G^T] from F")
        S.assert_equal(S.contract_rows(f, sp.eye(m_), m_, n_), mean(lambda g: g.T * g), "E[G^T G] from F")
        S.assert_equal(S.elementwise_moment(f, m_, n_), mean(lambda g: g.multiply_elementwise(g)), "E[G*G] from F")
        a, b = S.symmetric_matrix("a", m_), S.symmetric_matrix("b", n_)
        S.assert_equal(S.kron(a, b) * S.vec(samples[0]), S.vec(a * samples[0] * b.T), "kron(A,B) vec(G)")
    return [Step("row-major conventions at 2x2, 2x3, 3x2 with symbolic samples: kron(A,B) vec(G) = vec(A G B^T); "
                 "E[GG^T], E[G^TG], E[G*G] read off F are the sample moments", scope="fixed sizes")]


def fixed_size_proof(rows=Full(), cols=Full()) -> list[Step]:
    for m_, n_ in S.FIXED_SIZES:
        fixed_size_objective(rows, cols, m_, n_)
    sizes = ", ".join(f"{a}x{b}" for a, b in S.FIXED_SIZES)
    return [Step(f"||F - kron(A,B)||^2 = ||F||^2 - 2 tr(E[G B G^T] A) + ||A||^2||B||^2 exactly, "
                 f"fully symbolic F, at {sizes}", scope="fixed sizes")]


# --------------------------------------------------------------------- the numeric reference
def family_basis(family, k: int) -> torch.Tensor:
    """An orthonormal basis (d, k, k) of the span of a factor family."""
    eye = torch.eye(k, dtype=torch.float64)
    if isinstance(family, Identity):
        return eye[None] / math.sqrt(k)
    basis = [torch.outer(eye[i], eye[i]) for i in range(k)]
    if isinstance(family, Full):
        basis += [(torch.outer(eye[i], eye[j]) + torch.outer(eye[j], eye[i])) / math.sqrt(2)
                  for i in range(k) for j in range(i + 1, k)]
    return torch.stack(basis)


def nearest_kronecker(fim: torch.Tensor, m: int, n: int, rows, cols) -> torch.Tensor:
    """The Frobenius-nearest member, independently of fimkit: the top singular pair of the
    rearranged Fisher in orthonormal bases of the two families (Eckart-Young)."""
    basis_a, basis_b = family_basis(rows, m), family_basis(cols, n)
    coupling = torch.einsum("ijkl,aik,bjl->ab", fim.reshape(m, n, m, n), basis_a, basis_b)
    u, sigma, vh = torch.linalg.svd(coupling)
    a = torch.einsum("a,aik->ik", u[:, 0] * sigma[0], basis_a)
    b = torch.einsum("b,bjl->jl", vh[0], basis_b)
    return torch.kron(a, b)


def check_kronecker(structure, derived_fn=None, what: str = "Kronecker", shapes=checks.NUMERIC_SHAPES,
                    update_fn=None) -> list[checks.CheckResult]:
    """``checks.check_closed_form`` with the rank-1 reference above as the default derivation;
    the online path is compared only for the exact estimator (the others are not Frobenius)."""
    derived_fn = derived_fn or (lambda f, m, n, _: nearest_kronecker(f, m, n, structure.rows, structure.cols))
    return checks.check_closed_form(structure, derived_fn, what, shapes, update_fn=update_fn,
                                    online=structure.resolved_estimator == "exact")


def check(structure=None) -> list[checks.CheckResult]:
    compositions = [structure] if structure is not None else [
        Kronecker(a, b) for a in (Full(), DiagonalFactor(), Identity()) for b in (Full(), DiagonalFactor(), Identity())]
    gaps = []
    for s in compositions:
        for m, n, samples, fim in checks.instances(((2, 3), (3, 2))):
            gaps.append(checks.check_solve(s, fim, m, n, nearest_kronecker(fim, m, n, s.rows, s.cols), repr(s)))
    return [checks.ok(f"fimkit.solve equals the rank-1 reference for all {len(compositions)} compositions",
                      "fimkit", f"max gap {max(gaps):.1e}")]


DERIVATIONS = (Derivation(
    key="kronecker",
    module=__name__,
    title="Kronecker lemma: any Kronecker(rows, cols) composition",
    source="[P] §3, App D; Van Loan and Pitsianis",
    family=Formula("F~ = kron(A, B), A (m x m) from the rows family, B (n x n) from the cols family",
                   r"\tilde F = A \otimes B"),
    problem=Formula("min_{A, B} ||F - kron(A, B)||_F^2 = ||F||^2 - 2 E[tr(G^T A G B^T)] + ||A||^2 ||B||^2",
                    r"\min_{A,B} \|F - A\otimes B\|_F^2 = \|F\|_F^2 - 2\,\mathbb{E}[\operatorname{tr}(G^\top A G B^\top)] + \|A\|_F^2\|B\|_F^2"),
    solution=(Formula("A = Pi_rows(E[G B G^T]) / ||B||^2,  B = Pi_cols(E[G^T A G]) / ||A||^2",
                      r"A = \Pi_{\mathrm{rows}}(\mathbb{E}[G B G^\top])/\|B\|_F^2,\quad B = \Pi_{\mathrm{cols}}(\mathbb{E}[G^\top A G])/\|A\|_F^2"),
              Formula("optimum: top singular pair of the rearranged Fisher projected on the two families",
                      r"\text{optimum: top singular pair of the projected rearrangement } \mathcal{R}(F)")),
    update=Formula("Delta = A^{-1/2} G B^{-1/2}", r"\Delta = A^{-1/2} G B^{-1/2}"),
    solver="closed form (SVD of the rearranged moment); fixed point for RowColumn",
    applies=composition((Full, DiagonalFactor, Identity), (Full, DiagonalFactor, Identity)),
    memory=kronecker_memory,
    example="Kronecker(Full(), DiagonalFactor())",
),)
PROOFS = (reduction_proof, stationarity_proof, projection_proof, conventions_proof, fixed_size_proof)

if __name__ == "__main__":
    raise SystemExit(main(DERIVATIONS, PROOFS, check))
