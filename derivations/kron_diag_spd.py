"""``Kronecker(Full(), DiagonalFactor())`` (and its transpose): [P] Thm D.1, Eq 42.

``F~ = kron(M, diag(s))``: a full SPD factor on the rows, a positive diagonal on the columns.
The Kronecker lemma with the diagonal side projected gives the fixed point of Eq 42,

    M = E[G diag(s) G^T] / ||s||^2,        s = Diag(E[G^T M G]) / ||M||^2,

the top singular pair of the rearranged Fisher restricted to (symmetric) x (diagonal). The step
is ``M^{-1/2} G diag(s)^{-1/2}``. ``Kronecker(DiagonalFactor(), Full())`` is the transpose.
"""

from __future__ import annotations

import sympy as sp
import torch

import fimkit
from fimkit.structures import DiagonalFactor, Full, Kronecker

from . import checks
from . import symbolic as S
from .kronecker import check_kronecker, composition, fixed_size_objective, kronecker_memory
from .report import Derivation, Formula, Step, main


def general_proof() -> list[Step]:
    g, mat = sp.MatrixSymbol("G", S.m, S.n), sp.MatrixSymbol("M", S.m, S.m)
    (i, j, k, l), lim = S.ranges(("i", S.m), ("j", S.n), ("k", S.m), ("l", S.n))
    s = sp.IndexedBase("s")
    # <vec(G)vec(G)^T, kron(M, diag s)> keeps only l = j: sum_j s_j (G^T M G)_jj
    kept = S.in_range(sp.Sum(g[i, j] * g[k, l] * mat[i, k] * s[j] * sp.KroneckerDelta(j, l), lim[3], lim[0],
                                    lim[1], lim[2]).doit())
    jj = sp.Symbol("jj", integer=True)
    as_trace = sp.Sum(s[jj] * (g.T * mat * g)[jj, jj], (jj, 0, S.n - 1))
    if not S.index_sums_equal(kept, as_trace):
        raise S.DerivationMismatch("<F, kron(M, diag s)> != sum_j s_j E[G^T M G]_jj")
    t = sp.Symbol("t", integer=True)
    c, x = sp.Symbol("c", positive=True), sp.IndexedBase("x")  # x_j = E[G^T M G]_jj, c = ||M||^2
    objective = -2 * sp.Sum(s[jj] * x[jj], (jj, 0, S.n - 1)) + c * sp.Sum(s[jj] ** 2, (jj, 0, S.n - 1))
    s_t = S.solve_indexed_stationarity(objective, s[t])
    S.assert_equal(s_t, x[t] / c, "diagonal side stationarity")
    return [Step("<F, kron(M, diag s)> = sum_j s_j E[G^T M G]_jj (index sums)", as_trace),
            Step("d/ds_t = 0  =>  s_t = E[G^T M G]_tt / ||M||^2", s_t),
            Step("d/dM = 0  =>  M = E[G diag(s) G^T] / ||s||^2 (Kronecker lemma, B = diag(s))")]


def fixed_size_proof() -> list[Step]:
    for m_, n_ in S.FIXED_SIZES:
        f, a, b, objective = fixed_size_objective(Full(), DiagonalFactor(), m_, n_)
        s = list(b.diagonal())
        target = S.contract_rows(f, a, m_, n_).diagonal()  # Diag(E[G^T M G])
        grad_s = sp.Matrix([sp.diff(objective, x) for x in s])
        S.assert_equal(grad_s, 2 * (S.frobenius_sq(a) * sp.Matrix(s) - sp.Matrix(target).reshape(n_, 1)),
                       f"{m_}x{n_} gradient in s")
    return [Step("at 2x2, 2x3, 3x2 with a fully symbolic F: dJ/ds = 2(||M||^2 s - Diag(E[G^T M G]))",
                 scope="fixed sizes")]


def iterate_eq42(fim, m, n, iters=300):
    """The Eq 42 fixed point from M = I, from the moments of F (an independent loop)."""
    f4 = fim.reshape(m, n, m, n)
    mat, s = torch.eye(m, dtype=fim.dtype), None
    for _ in range(iters):
        s = torch.einsum("ik,ijkj->j", mat, f4) / (mat * mat).sum()
        mat = torch.einsum("ijkj,j->ik", f4, s) / (s * s).sum()
    return torch.kron(mat, torch.diag(s))


def check(structure=None) -> list[checks.CheckResult]:
    structures = [structure] if structure is not None else [Kronecker(Full(), DiagonalFactor()),
                                                            Kronecker(DiagonalFactor(), Full())]
    results = []
    for s in structures:
        name = f"Kronecker({type(s.rows).__name__}, {type(s.cols).__name__})"
        results += check_kronecker(s, what=name)
        if isinstance(s.rows, Full):
            for m, n, _, fim in checks.instances():
                checks.expect_close(f"{name}: Eq 42 iterated from M = I", fimkit.solve(s, fim, (m, n)).matrix,
                                    iterate_eq42(fim, m, n), 1e-6)
            results.append(checks.ok(f"{name}: the Eq 42 fixed point converges to fimkit.solve's member", "numeric"))
    return results


DERIVATIONS = tuple(Derivation(
    key=key, module=__name__, title=title, source="[P] Thm D.1, Eq 42",
    family=family, problem=Formula("min ||F - F~||_F^2 (Kronecker lemma, one side projected on diagonals)",
                                   r"\min \|F - \tilde F\|_F^2"),
    solution=solution, update=update, solver="closed form (SVD of the projected rearrangement)",
    applies=composition(*sides), memory=kronecker_memory, example=example,
) for key, title, sides, example, family, solution, update in (
    ("kron_diag_spd", "Full rows x diagonal columns (kron_diag_spd)", ((Full,), (DiagonalFactor,)),
     "Kronecker(Full(), DiagonalFactor())",
     Formula("F~ = kron(M, diag(s)), M SPD (m x m), s > 0 (n)", r"\tilde F = M \otimes \operatorname{diag}(s)"),
     (Formula("M = E[G diag(s) G^T] / ||s||^2,  s = Diag(E[G^T M G]) / ||M||^2  (Eq 42 fixed point)",
              r"M = \mathbb{E}[G\operatorname{diag}(s)G^\top]/\|s\|^2,\ s = \operatorname{Diag}(\mathbb{E}[G^\top M G])/\|M\|^2"),),
     Formula("Delta = M^{-1/2} G diag(s)^{-1/2}", r"\Delta = M^{-1/2} G \operatorname{diag}(s)^{-1/2}")),
    ("kron_spd_diag", "Diagonal rows x full columns (transpose of kron_diag_spd)", ((DiagonalFactor,), (Full,)),
     "Kronecker(DiagonalFactor(), Full())",
     Formula("F~ = kron(diag(q), R), q > 0 (m), R SPD (n x n)", r"\tilde F = \operatorname{diag}(q) \otimes R"),
     (Formula("q = Diag(E[G R G^T]) / ||R||^2,  R = E[G^T diag(q) G] / ||q||^2",
              r"q = \operatorname{Diag}(\mathbb{E}[G R G^\top])/\|R\|^2,\ R = \mathbb{E}[G^\top\operatorname{diag}(q)G]/\|q\|^2"),),
     Formula("Delta = diag(q)^{-1/2} G R^{-1/2}", r"\Delta = \operatorname{diag}(q)^{-1/2} G R^{-1/2}")),
))
PROOFS = (general_proof, fixed_size_proof)

if __name__ == "__main__":
    raise SystemExit(main(DERIVATIONS, PROOFS, check))
