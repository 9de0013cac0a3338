"""Row-column scaling ``F~ = kron(diag(q), diag(s)) = diag(vec(q s^T))``: RACS ([P] Prop 3, Eq 16).

By the Kronecker lemma with both sides diagonal, with ``P = E[G*G]`` (m x n):

    ||F - F~||^2 = ||F||^2 - 2 q^T P s + ||q||^2 ||s||^2
    d/ds = 0  =>  s = P^T q / ||q||^2          d/dq = 0  =>  q = P s / ||s||^2      (Eq 16)

Substituting one into the other: ``P P^T q = lambda q`` with ``lambda = ||P^T q||^2 / ||q||^2``,
and at such a point the objective is ``||F||^2 - lambda``. The minimum is the largest
``lambda = sigma_1^2``: ``q s^T = sigma_1 u_1 v_1^T``, the best rank-1 approximation of P
(positive by Perron-Frobenius when P > 0). The iteration of Eq 16 is power iteration on P P^T.
The step is ``G / sqrt(q s^T)``; RACS runs 5 iterations per gradient and EMAs q and s ([P] Alg 1).
"""

from __future__ import annotations

import sympy as sp
import torch

import fimkit
from fimkit.structures import DiagonalFactor, Kronecker, RowColumn

from . import checks
from . import symbolic as S
from .kronecker import check_kronecker, composition, fixed_size_objective, kronecker_memory
from .report import Derivation, Formula, Step, main

Q = sp.MatrixSymbol("q", S.m, 1)
SV = sp.MatrixSymbol("s", S.n, 1)
P = sp.MatrixSymbol("P", S.m, S.n)  # P = E[G*G]


def stationarity() -> tuple[sp.MatrixExpr, sp.MatrixExpr]:
    """(s as a function of q, q as a function of s) from the reduced objective."""
    objective = -2 * sp.Trace(Q.T * P * SV) + sp.Trace(Q.T * Q) * sp.Trace(SV.T * SV)
    s_of_q = S.solve_linear_matrix_equation(S.matrix_derivative(objective, SV), SV)
    q_of_s = S.solve_linear_matrix_equation(S.matrix_derivative(objective, Q), Q)
    return s_of_q, q_of_s


def general_proof() -> list[Step]:
    g = sp.MatrixSymbol("G", S.m, S.n)
    q, s = sp.IndexedBase("q"), sp.IndexedBase("s")
    (i, j, k, l), lim = S.ranges(("i", S.m), ("j", S.n), ("k", S.m), ("l", S.n))
    delta = sp.KroneckerDelta
    # <vec(G)vec(G)^T, kron(diag q, diag s)> = sum_ij q_i s_j G_ij^2, so E[.] keeps P = E[G*G]
    kept = S.in_range(sp.Sum(g[i, j] * g[k, l] * q[i] * delta(i, k) * s[j] * delta(j, l), *lim).doit())
    if not S.index_sums_equal(kept, sp.Sum(q[i] * s[j] * g[i, j] ** 2, lim[0], lim[1])):
        raise S.DerivationMismatch("the diag x diag Kronecker moment is not E[G*G]")
    s_of_q, q_of_s = stationarity()
    S.assert_zero(s_of_q - P.T * Q / sp.Trace(Q * Q.T), "s stationarity")
    # Fixed point: with q2 = ||q||^2, p2 = ||P^T q||^2, s(q) = P^T q / q2 has ||s||^2 = p2 / q2^2 and
    # q(s(q)) = (q2 / p2) P P^T q: a fixed point iff P P^T q = lambda q with lambda = p2 / q2.
    q2, p2, lam = sp.symbols("q2 p2 lambda", positive=True)
    norm_s = p2 / q2**2
    S.assert_equal((1 / q2) / norm_s, q2 / p2, "q(s(q)) = (q2/p2) P P^T q")
    (fixed_lambda,) = sp.solve(lam * q2 / p2 - 1, lam)
    S.assert_equal(fixed_lambda, p2 / q2, "fixed point eigenvalue")
    # There q^T P s = p2 / q2 and ||q||^2 ||s||^2 = p2 / q2: J - ||F||^2 = -lambda.
    S.assert_equal(-2 * (p2 / q2) + q2 * norm_s, -fixed_lambda, "objective at a stationary point")
    c = sp.Symbol("c", positive=True)
    S.assert_equal(sp.sqrt(c**2 * lam) / sp.sqrt(lam), c, "scale invariance")
    return [
        Step("Kronecker lemma with diag(q), diag(s): the kept moment is P = E[G*G], "
             "J = ||F||^2 - 2 q^T P s + ||q||^2 ||s||^2", kept),
        Step("dJ/ds = 0  =>  s = P^T q / ||q||^2", s_of_q),
        Step("dJ/dq = 0  =>  q = P s / ||s||^2", q_of_s),
        Step("q(s(q)) = (||q||^2/||P^T q||^2) P P^T q: a fixed point iff P P^T q = lambda q", fixed_lambda),
        Step("at a stationary point J = ||F||^2 - lambda, so the optimum is the top singular pair: "
             "q s^T = sigma_1 u_1 v_1^T"),
        Step("one sample: G -> cG scales q s^T by c^2, so G / sqrt(q s^T) is scale invariant"),
    ]


def fixed_size_proof() -> list[Step]:
    s_of_q, q_of_s = stationarity()
    for m_, n_ in S.FIXED_SIZES:
        f, a, b, objective = fixed_size_objective(DiagonalFactor(), DiagonalFactor(), m_, n_)
        q, s = list(a.diagonal()), list(b.diagonal())
        p = S.elementwise_moment(f, m_, n_)
        grad_s = sp.Matrix([sp.diff(objective, x) for x in s])
        S.assert_equal(grad_s, 2 * (sum(x**2 for x in q) * sp.Matrix(s) - p.T * sp.Matrix(q)),
                       f"{m_}x{n_} RowColumn gradient in s")
    return [Step("at 2x2, 2x3, 3x2 with a fully symbolic F: the explicit objective's gradient is "
                 "2(||q||^2 s - P^T q), P = E[G*G]", scope="fixed sizes")]


def derived(fim, m, n, samples):
    u, sigma, vh = torch.linalg.svd(checks.moments(fim, m, n)["elementwise"])
    return torch.diag((sigma[0] * torch.outer(u[:, 0], vh[0])).reshape(-1))


def iterate(p: torch.Tensor, iters: int) -> torch.Tensor:
    """``iters`` steps of the derived maps from q = 1, evaluated from the symbolic solution."""
    s_of_q, q_of_s = stationarity()
    m, n = p.shape
    q = torch.ones(m, dtype=torch.float64)
    for _ in range(iters):
        s = checks.evaluate(s_of_q, {"P": p, "q": q}, {"m": m, "n": n}).reshape(n)
        q = checks.evaluate(q_of_s, {"P": p, "s": s}, {"m": m, "n": n}).reshape(m)
    return torch.outer(q, s)


def check(structure=RowColumn()) -> list[checks.CheckResult]:
    def update(fim, m, n, samples, grad):
        return grad / derived(fim, m, n, samples).diagonal().reshape(m, n).sqrt()

    results = check_kronecker(structure, derived, "RowColumn", update_fn=update)
    racs = Kronecker(structure.rows, structure.cols, estimator="per_sample", fixed_point_iters=5)
    for m, n, samples, fim in checks.instances():
        grad = samples[0]
        stats = racs.statistics(grad)  # the per-sample fixed point RACS runs (5 iterations)
        checks.expect_close(f"RACS per-sample fixed point at {m}x{n}", torch.outer(stats["rows"], stats["cols"]),
                            iterate(grad * grad, 5))
        params = fimkit.solve(structure, fim, (m, n)).params
        q, s, p = params["rows"], params["cols"], checks.moments(fim, m, n)["elementwise"]
        checks.expect_close("stationarity s = P^T q / ||q||^2", s, p.T @ q / (q @ q), 1e-9)
        checks.expect_close("stationarity q = P s / ||s||^2", q, p @ s / (s @ s), 1e-9)
        if not (bool((q > 0).all()) and bool((s > 0).all())):
            raise S.DerivationMismatch("RowColumn factors are not positive although P > 0 (Perron-Frobenius)")
    return results + [
        checks.ok("RACS's 5-iteration per-sample factors equal 5 steps of the derived Eq 16 maps", "fimkit"),
        checks.ok("fimkit's q, s satisfy both stationarity equations and are positive", "fimkit"),
    ]


DERIVATIONS = (Derivation(
    key="row_column", module=__name__, title="Row-column scaling (RACS)", source="[P] Prop 3, Eq 16, Alg 1",
    family=Formula("F~ = kron(diag(q), diag(s)) = diag(vec(q s^T)), q > 0 (m), s > 0 (n)",
                   r"\tilde F = \operatorname{diag}(q)\otimes\operatorname{diag}(s) = \operatorname{diag}(\operatorname{vec}(q s^\top))"),
    problem=Formula("min_{q,s>0} ||F - F~||_F^2 = ||F||^2 - 2 q^T P s + ||q||^2 ||s||^2,  P = E[G*G]",
                    r"\min_{q,s>0} \|F\|_F^2 - 2 q^\top P s + \|q\|^2\|s\|^2,\quad P = \mathbb{E}[G\odot G]"),
    solution=(Formula("s = P^T q / ||q||^2,  q = P s / ||s||^2  ([P] Eq 16, stationarity)",
                      r"s = P^\top q/\|q\|^2,\quad q = P s/\|s\|^2"),
              Formula("fixed point: q s^T = sigma_1 u_1 v_1^T, the top singular triple of P = E[G*G]",
                      r"q s^\top = \sigma_1 u_1 v_1^\top \ (\text{top singular triple of } P)")),
    update=Formula("Delta = G / sqrt(q s^T)  (eps added to q_i s_j; RACS: 5 iterations per sample, EMA of "
                   "q and s, norm-growth limiter, [P] Alg 1)",
                   r"\Delta = G \oslash \sqrt{q s^\top}"),
    solver="fixed point (Eq 16 iterated to convergence)",
    applies=composition((DiagonalFactor,), (DiagonalFactor,)), memory=kronecker_memory,
    example="RowColumn()",
),)
PROOFS = (general_proof, fixed_size_proof)

if __name__ == "__main__":
    raise SystemExit(main(DERIVATIONS, PROOFS, check))
