"""One-sided Kronecker structures: whitening and normalisation of one side ([P] Prop 2, 5, Eq 7-8).

With the other side the identity (its scale absorbed), the Kronecker lemma's objective is
quadratic in the remaining factor, so the optimum is a projected second moment:

    Kronecker(Full(), Identity())            M = E[G G^T] / n     Delta = sqrt(n) E[GG^T]^{-1/2} G
    Kronecker(Identity(), Full())            R = E[G^T G] / m     Delta = sqrt(m) G E[G^TG]^{-1/2}
    Kronecker(DiagonalFactor(), Identity())  q = E[rowsum(G*G)]/n Delta = G / sqrt(q)  (rows)
    Kronecker(Identity(), DiagonalFactor())  s = E[colsum(G*G)]/m Delta = G / sqrt(s)  (columns)
    Kronecker(Identity(), Identity())        c = E||G||^2/(mn)    Delta = G / sqrt(c)

``whiten_left`` is Muon/SWAN's whitening (of the Fisher, with the sqrt(n) factor [P] App E.5
notes); ``norm_row``/``norm_col`` normalise rows/columns (SinkGD's half-steps, see
``normalisation``). All are proven for any m, n.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import sympy as sp
import torch

from fimkit.structures import DiagonalFactor, Full, Identity, Kronecker

from . import checks
from . import symbolic as S
from .kronecker import check_kronecker, composition, kronecker_memory, symbolic_factor
from .report import Derivation, Formula, Step, main


def whitening_proof() -> list[Step]:
    g = sp.MatrixSymbol("G", S.m, S.n)
    mat = sp.MatrixSymbol("M", S.m, S.m)  # any m x m matrix: the lemma holds for all of them
    (i, j, k), lim = S.ranges(("i", S.m), ("j", S.n), ("k", S.m))
    jj = sp.Symbol("jj", integer=True)
    lemma_term = sp.Sum((g.T * mat * g)[jj, jj], (jj, 0, S.n - 1))  # tr(G^T M G I_n)
    if not S.index_sums_equal(lemma_term, sp.Sum(mat[i, k] * g[k, j] * g[i, j], *lim)):
        raise S.DerivationMismatch("tr(G^T M G) != tr(M G G^T)")
    steps = [Step("Kronecker lemma with B = I_n: E[tr(G^T M G)] = tr(M E[G G^T]), ||I_n||^2 = n")]
    for side, other, gram in (("rows", S.n, "E[G G^T]"), ("cols", S.m, "E[G^T G]")):
        size = S.m if side == "rows" else S.n
        x, moment = sp.MatrixSymbol("X", size, size), sp.MatrixSymbol("P", size, size)
        objective = -2 * sp.Trace(x * moment) + other * sp.Trace(x * x)
        solution = S.solve_linear_matrix_equation(S.matrix_derivative(objective, x, (x, moment)), x)
        S.assert_zero(solution - moment / other, f"{side} whitening optimum")
        steps.append(Step(f"{side}: d/dX [-2 tr(X P) + {other} tr(X^2)] = 0  =>  X = P/{other}, P = {gram}", solution))
    lam = sp.Symbol("lambda", positive=True)
    S.assert_equal((lam / S.n) ** sp.Rational(-1, 2), sp.sqrt(S.n) * lam ** sp.Rational(-1, 2), "-1/2 power")
    steps.append(Step("kron(M, I)^{-1/2} = kron(M^{-1/2}, I) and (P/n)^{-1/2} = sqrt(n) P^{-1/2} "
                      "(eigenvalue by eigenvalue)"))
    return steps


def normalisation_proof() -> list[Step]:
    q, p = sp.IndexedBase("q"), sp.IndexedBase("P")
    i, t = sp.symbols("i t", integer=True)
    objective = -2 * sp.Sum(q[i] * p[i, i], (i, 0, S.m - 1)) + S.n * sp.Sum(q[i] ** 2, (i, 0, S.m - 1))
    q_t = S.solve_indexed_stationarity(objective, q[t])
    S.assert_equal(q_t, p[t, t] / S.n, "norm_row optimum")
    c = sp.Symbol("c")
    total = sp.Symbol("T", positive=True)  # T = tr E[G G^T] = E||G||^2
    c_star = S.solve_stationary(-2 * c * total + S.m * S.n * c**2, [c])[c]
    S.assert_equal(c_star, total / (S.m * S.n), "scalar optimum")
    return [Step("diagonal rows: q_t = E[G G^T]_tt / n = E[sum_j G_tj^2] / n (columns: transpose)", q_t),
            Step("scalar: c = E||G||_F^2 / (m n)", c_star)]


@dataclass(frozen=True)
class Case:
    key: str
    structure: Kronecker
    title: str
    family: Formula
    solution: Formula
    update: Formula

    def derived(self, fim, m, n, samples):
        mom = checks.moments(fim, m, n)
        eye_m, eye_n = torch.eye(m, dtype=fim.dtype), torch.eye(n, dtype=fim.dtype)
        rows, cols = self.structure.rows, self.structure.cols
        if isinstance(cols, Identity) and not isinstance(rows, Identity):
            a = mom["row_gram"] / n
            return torch.kron(a if isinstance(rows, Full) else torch.diag(torch.diagonal(a)), eye_n)
        if isinstance(rows, Identity) and not isinstance(cols, Identity):
            b = mom["col_gram"] / m
            return torch.kron(eye_m, b if isinstance(cols, Full) else torch.diag(torch.diagonal(b)))
        return torch.trace(mom["row_gram"]) / (m * n) * torch.eye(m * n, dtype=fim.dtype)

    def update_rule(self, fim, m, n, samples, grad):
        mom = checks.moments(fim, m, n)
        rows, cols = self.structure.rows, self.structure.cols
        if isinstance(rows, Full):
            return math.sqrt(n) * checks.psd_power(mom["row_gram"], -0.5) @ grad
        if isinstance(cols, Full):
            return math.sqrt(m) * grad @ checks.psd_power(mom["col_gram"], -0.5)
        if isinstance(rows, DiagonalFactor):
            return grad / (torch.diagonal(mom["row_gram"]) / n).sqrt()[:, None]
        if isinstance(cols, DiagonalFactor):
            return grad / (torch.diagonal(mom["col_gram"]) / m).sqrt()[None, :]
        return grad / (torch.trace(mom["row_gram"]) / (m * n)).sqrt()


CASES = (
    Case("whiten_left", Kronecker(Full(), Identity()), "Whitening of the rows (whiten_left)",
         Formula("F~ = kron(M, I_n), M SPD (m x m)", r"\tilde F = M \otimes I_n"),
         Formula("M = E[G G^T] / n", r"M = \mathbb{E}[G G^\top]/n"),
         Formula("Delta = sqrt(n) E[G G^T]^{-1/2} G", r"\Delta = \sqrt{n}\,\mathbb{E}[G G^\top]^{-1/2} G")),
    Case("whiten_right", Kronecker(Identity(), Full()), "Whitening of the columns (whiten_right)",
         Formula("F~ = kron(I_m, R), R SPD (n x n)", r"\tilde F = I_m \otimes R"),
         Formula("R = E[G^T G] / m", r"R = \mathbb{E}[G^\top G]/m"),
         Formula("Delta = sqrt(m) G E[G^T G]^{-1/2}", r"\Delta = \sqrt{m}\, G\, \mathbb{E}[G^\top G]^{-1/2}")),
    Case("norm_row", Kronecker(DiagonalFactor(), Identity()), "Row normalisation (norm_row)",
         Formula("F~ = kron(diag(q), I_n), q > 0 (m)", r"\tilde F = \operatorname{diag}(q) \otimes I_n"),
         Formula("q = E[rowsum(G*G)] / n", r"q = \mathbb{E}[(G\odot G)\mathbf 1]/n"),
         Formula("Delta = diag(q)^{-1/2} G  (one sample: every row has RMS 1)",
                 r"\Delta = \operatorname{diag}(q)^{-1/2} G")),
    Case("norm_col", Kronecker(Identity(), DiagonalFactor()), "Column normalisation (norm_col)",
         Formula("F~ = kron(I_m, diag(s)), s > 0 (n)", r"\tilde F = I_m \otimes \operatorname{diag}(s)"),
         Formula("s = E[colsum(G*G)] / m", r"s = \mathbb{E}[\mathbf 1^\top (G\odot G)]/m"),
         Formula("Delta = G diag(s)^{-1/2}  (one sample: every column has RMS 1)",
                 r"\Delta = G \operatorname{diag}(s)^{-1/2}")),
    Case("scalar", Kronecker(Identity(), Identity()), "Scalar (normalised SGD)",
         Formula("F~ = c I_{mn}, c > 0", r"\tilde F = c\, I_{mn}"),
         Formula("c = E||G||_F^2 / (m n)", r"c = \mathbb{E}\|G\|_F^2/(mn)"),
         Formula("Delta = G / sqrt(c)", r"\Delta = G/\sqrt{c}")),
)


@lru_cache(maxsize=None)
def fixed_size_solution(key: str, m_: int, n_: int) -> tuple[sp.Matrix, sp.Matrix]:
    """Solve the explicit fixed-size objective (the identity side is I: its scale is absorbed)."""
    (case,) = [c for c in CASES if c.key == key]
    rows, cols = case.structure.rows, case.structure.cols
    f = S.symbolic_fim(m_, n_)
    rows_fixed = isinstance(rows, Identity) and not isinstance(cols, Identity)
    a = sp.eye(m_) if rows_fixed else symbolic_factor(rows, "a", m_)
    b = sp.eye(n_) if isinstance(cols, Identity) else symbolic_factor(cols, "b", n_)
    ftilde = S.kron(a, b)
    unknowns = S.free_entries(ftilde)
    solution = S.solve_least_squares(f - ftilde, unknowns)
    return f, ftilde.xreplace(solution)


def fixed_size_proof() -> list[Step]:
    for case in CASES:
        for m_, n_ in S.FIXED_SIZES:
            f, ftilde = fixed_size_solution(case.key, m_, n_)
            row_gram, col_gram = S.contract_cols(f, sp.eye(n_), m_, n_), S.contract_rows(f, sp.eye(m_), m_, n_)
            expected = {
                "whiten_left": S.kron(row_gram / n_, sp.eye(n_)),
                "whiten_right": S.kron(sp.eye(m_), col_gram / m_),
                "norm_row": S.kron(sp.diag(*row_gram.diagonal()) / n_, sp.eye(n_)),
                "norm_col": S.kron(sp.eye(m_), sp.diag(*col_gram.diagonal()) / m_),
                "scalar": row_gram.trace() / (m_ * n_) * sp.eye(m_ * n_),
            }[case.key]
            S.assert_equal(ftilde, expected, f"{case.key} at {m_}x{n_}")
    return [Step("each one-sided optimum solved from a fully symbolic F at 2x2, 2x3, 3x2 equals the "
                 "formula", scope="fixed sizes")]


def check(structure=None) -> list[checks.CheckResult]:
    cases = CASES if structure is None else [
        c for c in CASES if type(c.structure.rows) is type(structure.rows) and type(c.structure.cols) is type(structure.cols)]
    if not cases:
        raise ValueError(f"one_sided.check: {structure!r} is not a one-sided Kronecker structure")
    results = []
    for case in cases:
        s = case.structure if structure is None else structure
        results += check_kronecker(s, case.derived, case.key, update_fn=case.update_rule)
        results += checks.check_fixed_size_solutions(
            s, lambda m_, n_, key=case.key: fixed_size_solution(key, m_, n_), case.key)
        marginal = Kronecker(s.rows, s.cols, estimator="marginal")
        for m, n, samples, fim in checks.instances(((3, 4),)):
            checks.expect_close(f"{case.key}: marginal estimator", marginal.dense(
                checks.online_params(marginal, samples), m, n), case.derived(fim, m, n, samples))
        results.append(checks.ok(f"{case.key}: the marginal estimator is exact for a one-sided structure", "fimkit"))
    return results


DERIVATIONS = tuple(Derivation(
    key=case.key, module=__name__, title=case.title, source="[P] Prop 2, Prop 5, Eq 7-8, 35-39",
    family=case.family,
    problem=Formula("min ||F - F~||_F^2  (Kronecker lemma with the identity side fixed)",
                    r"\min \|F - \tilde F\|_F^2"),
    solution=(case.solution,), update=case.update, solver="closed form",
    applies=composition((type(case.structure.rows),), (type(case.structure.cols),)),
    memory=kronecker_memory,
    example=f"Kronecker({type(case.structure.rows).__name__}(), {type(case.structure.cols).__name__}())",
) for case in CASES)
PROOFS = (whitening_proof, normalisation_proof, fixed_size_proof)

if __name__ == "__main__":
    raise SystemExit(main(DERIVATIONS, PROOFS, check))
