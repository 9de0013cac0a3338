"""``Kronecker(Full(), Full())``: the nearest Kronecker product, and why Shampoo is not it.

**The optimum** (Van Loan and Pitsianis). By the Kronecker lemma ``||F - kron(A,B)||_F`` is
``||R(F) - vec(A) vec(B)^T||_F`` for the rearranged Fisher ``R(F)[(i,k),(j,l)] = F[(i,j),(k,l)]``;
its minimiser is the top singular pair of ``R(F)`` (Eckart-Young), with the stationarity
conditions ``A = E[G B G^T] / ||B||^2``, ``B = E[G^T A G] / ||A||^2`` (alternating least squares =
power iteration). ``fimkit.solve`` returns this.

**Shampoo** ([P] Thm 3.1, App C.1). With ``F~ = kron(L^{1/2}, R^{1/2})`` (L, R SPD) write
``X = kron(L, I_n)``, ``Y = kron(I_m, R)``, ``Z = F~``: they commute and ``Z^2 = XY``. For every
symmetric F,

    ||Z - F||^2 <= ||X - F||^2 + ||Y - F||^2,

because the difference is ``||F - U||^2 + sum_ij 2 sqrt(l_i r_j) (sqrt(l_i) - sqrt(r_j))^2 >= 0``
with ``U = X + Y - Z`` (l, r the eigenvalues of L, R). The two terms of the bound are the one-sided
problems, minimised by ``L = E[G G^T]/n`` and ``R = E[G^T G]/m`` (see ``one_sided``); equivalently
one ALS step from the identity. The step is ``F~^{-1/2} = kron(L^{-1/4}, R^{-1/4})``:
``Delta = L^{-1/4} G R^{-1/4} = (mn)^{1/4} E[GG^T]^{-1/4} G E[G^TG]^{-1/4}``; Shampoo drops
``(mn)^{1/4}``. Shampoo's factors minimise the *bound*, not ``||F - F~||``: the checks show a
strictly larger error than the nearest Kronecker product, even after the best rescaling.
(The paper's exact statement of Eq 4 was not available to us; this is the bound we prove.)
"""

from __future__ import annotations

import math
from functools import lru_cache

import sympy as sp
import torch

import fimkit
from fimkit.structures import Full, Kronecker

from . import checks
from . import symbolic as S
from .kronecker import check_kronecker, composition, fixed_size_proof as lemma_fixed_sizes
from .kronecker import kronecker_memory
from .report import Derivation, Formula, Step, main

A, B = sp.MatrixSymbol("A", S.m, S.m), sp.MatrixSymbol("B", S.n, S.n)
G = sp.MatrixSymbol("G", S.m, S.n)


def optimum_proof() -> list[Step]:
    objective = -2 * sp.Trace(G.T * A * G * B) + sp.Trace(A * A) * sp.Trace(B * B)
    a_of_b = S.solve_linear_matrix_equation(S.matrix_derivative(objective, A, (A, B)), A)
    b_of_a = S.solve_linear_matrix_equation(S.matrix_derivative(objective, B, (A, B)), B)
    first_step = a_of_b.xreplace({B: sp.Identity(S.n)}).doit()
    S.assert_zero(first_step - G * G.T / S.n, "one ALS step from B = I")
    return [Step("A = E[G B G^T] / ||B||^2 (stationarity in A)", a_of_b),
            Step("B = E[G^T A G] / ||A||^2 (stationarity in B); optimum = top singular pair of R(F)", b_of_a),
            Step("one ALS step from B = I_n gives A = E[G G^T]/n: Shampoo's L (and symmetrically R)", first_step)]


def bound_proof() -> list[Step]:
    xx, yy, zz, xy, xz, yz, xf, yf, zf, ff = sp.symbols("xx yy zz xy xz yz xf yf zf ff", real=True)
    # inner products <X,X>, ... ; U = X + Y - Z
    uu = xx + yy + zz + 2 * xy - 2 * xz - 2 * yz
    f_minus_u = ff - 2 * (xf + yf - zf) + uu
    gap = (xx - 2 * xf + ff) + (yy - 2 * yf + ff) - (zz - 2 * zf + ff)
    S.assert_equal(gap, f_minus_u + (xx + yy - zz - uu), "bound gap decomposition")
    a, b = sp.symbols("a b", positive=True)  # sqrt of an eigenvalue of L and of R
    l_, r_ = a**2, b**2
    per_pair = l_**2 + r_**2 - l_ * r_ - (l_ + r_ - a * b) ** 2  # <Z,Z> = <X,Y> since Z^2 = XY
    S.assert_equal(per_pair, 2 * a * b * (a - b) ** 2, "per-eigenpair remainder")
    lam, mu = sp.symbols("lambda mu", positive=True)
    S.assert_equal((sp.sqrt(lam / S.n) * sp.sqrt(mu / S.m)) ** sp.Rational(-1, 2),
                   (S.m * S.n) ** sp.Rational(1, 4) * lam ** sp.Rational(-1, 4) * mu ** sp.Rational(-1, 4),
                   "-1/4 powers")
    return [Step("||X-F||^2 + ||Y-F||^2 - ||Z-F||^2 = ||F-U||^2 + (<X,X> + <Y,Y> - <Z,Z> - <U,U>), "
                 "U = X + Y - Z"),
            Step("per joint eigenpair (l = a^2, r = b^2): l^2 + r^2 - lr - (l + r - ab)^2 = 2ab(a-b)^2 >= 0, "
                 "so the bound holds for every symmetric F", 2 * a * b * (a - b) ** 2),
            Step("minimising each bound term: L = E[GG^T]/n, R = E[G^TG]/m (one_sided)"),
            Step("(sqrt(lambda/n) sqrt(mu/m))^{-1/2} = (mn)^{1/4} lambda^{-1/4} mu^{-1/4}: "
                 "Delta = (mn)^{1/4} E[GG^T]^{-1/4} G E[G^TG]^{-1/4}")]


@lru_cache(maxsize=None)
def counterexample() -> sp.Expr:
    """An exact 2x2 distribution where Shampoo's factors violate the optimum's stationarity."""
    samples = [sp.Matrix([[1, 0], [0, 0]]), sp.Matrix([[0, 0], [0, 2]]), sp.Matrix([[0, 1], [0, 0]])]
    mean = lambda f: sum((f(g) for g in samples), sp.zeros(2)) / len(samples)  # noqa: E731
    sqrt_l = mean(lambda g: g * g.T / 2) ** sp.Rational(1, 2)
    sqrt_r = mean(lambda g: g.T * g / 2) ** sp.Rational(1, 2)
    # stationarity of any rescaling c kron(L^1/2, R^1/2) needs E[G R^1/2 G^T] parallel to L^1/2
    target = mean(lambda g: g * sqrt_r * g.T)
    coefficient = (target.T * sqrt_l).trace() / (sqrt_l.T * sqrt_l).trace()
    return sp.simplify((target - coefficient * sqrt_l).norm())


def fixed_size_proof() -> list[Step]:
    steps = lemma_fixed_sizes(Full(), Full())
    residual = counterexample()
    if not float(residual) > 1e-9:
        raise S.DerivationMismatch("Shampoo's factors were stationary on the counterexample")
    return steps + [Step("exact 2x2 counterexample (3 rational samples): E[G R^1/2 G^T] is not parallel to "
                         "L^1/2, so no rescaling of Shampoo's F~ is stationary; distance", residual,
                         scope="fixed sizes")]


def shampoo_matrix(fim, m, n):
    mom = checks.moments(fim, m, n)
    return torch.kron(checks.psd_power(mom["row_gram"] / n, 0.5), checks.psd_power(mom["col_gram"] / m, 0.5))


def check(structure=Kronecker(Full(), Full())) -> list[checks.CheckResult]:
    results = check_kronecker(structure, what="Kronecker(Full, Full)")
    worst_bound, best_ratio = 0.0, math.inf
    bound_estimator = Kronecker(Full(), Full(), estimator="bound")
    paper_shampoo = Kronecker(Full(), Full(), estimator="bound", keep_constants=False)
    for m, n, samples, fim in checks.instances():
        mom, grad = checks.moments(fim, m, n), samples[0]
        shampoo = shampoo_matrix(fim, m, n)
        params = checks.online_params(bound_estimator, samples)
        checks.expect_close("Shampoo factors (bound estimator)", bound_estimator.dense(params, m, n), shampoo)
        root_l, root_r = checks.psd_power(mom["row_gram"], -0.25), checks.psd_power(mom["col_gram"], -0.25)
        checks.check_precondition(bound_estimator, params, grad, (m * n) ** 0.25 * root_l @ grad @ root_r, "Shampoo")
        checks.check_precondition(paper_shampoo, checks.online_params(paper_shampoo, samples), grad,
                                  root_l @ grad @ root_r, "Shampoo (paper constants)")
        x = torch.kron(mom["row_gram"] / n, torch.eye(n, dtype=fim.dtype))
        y = torch.kron(torch.eye(m, dtype=fim.dtype), mom["col_gram"] / m)
        lhs, rhs = (shampoo - fim).norm() ** 2, (x - fim).norm() ** 2 + (y - fim).norm() ** 2
        if lhs > rhs * (1 + 1e-12):
            raise S.DerivationMismatch(f"the Shampoo bound fails at {m}x{n}: {lhs} > {rhs}")
        worst_bound = max(worst_bound, float(lhs / rhs))
        nkp_error = float(fimkit.solve(structure, fim, (m, n)).error)
        scale = float((fim * shampoo).sum() / (shampoo * shampoo).sum())  # best rescaling of Shampoo's F~
        ratio = checks.frobenius_error(fim, scale * shampoo) / nkp_error
        if not ratio > 1 + 1e-6:
            raise S.DerivationMismatch(f"Shampoo's F~ was as good as the nearest Kronecker product at {m}x{n}")
        best_ratio = min(best_ratio, ratio)
    return results + [
        checks.ok("bound estimator = kron((E[GG^T]/n)^1/2, (E[G^TG]/m)^1/2); step (mn)^1/4 L^-1/4 G R^-1/4, "
                  "paper constants drop (mn)^1/4", "fimkit"),
        checks.ok("||Z-F||^2 <= ||X-F||^2 + ||Y-F||^2 on every instance", "numeric", f"max ratio {worst_bound:.3f}"),
        checks.ok("Shampoo's F~ (best rescaled) is worse than fimkit.solve's nearest Kronecker product",
                  "numeric", f"error ratio >= {best_ratio:.4f}"),
    ]


DERIVATIONS = (Derivation(
    key="kron_full_full", module=__name__, title="Nearest Kronecker product (Kronecker(Full, Full)) and Shampoo",
    source="[P] Thm 3.1, App C.1; Van Loan and Pitsianis",
    family=Formula("F~ = kron(A, B), A SPD (m x m), B SPD (n x n)", r"\tilde F = A \otimes B"),
    problem=Formula("min_{A,B} ||F - kron(A,B)||_F^2 = ||R(F) - vec(A) vec(B)^T||_F^2 (rearrangement)",
                    r"\min_{A,B}\|F - A\otimes B\|_F^2 = \|\mathcal R(F) - \operatorname{vec}A\operatorname{vec}B^\top\|_F^2"),
    solution=(Formula("A = E[G B G^T]/||B||^2, B = E[G^T A G]/||A||^2: top singular pair of R(F) (fimkit.solve)",
                      r"A = \mathbb{E}[G B G^\top]/\|B\|^2,\ B = \mathbb{E}[G^\top A G]/\|A\|^2"),
              Formula("Shampoo minimises the bound ||F~ - F||^2 <= ||kron(L,I) - F||^2 + ||kron(I,R) - F||^2 for "
                      "F~ = kron(L^1/2, R^1/2): L = E[GG^T]/n, R = E[G^TG]/m (not the optimum)",
                      r"\|\tilde F - F\|^2 \le \|L\otimes I - F\|^2 + \|I\otimes R - F\|^2:\ L = \mathbb{E}[GG^\top]/n,\ R = \mathbb{E}[G^\top G]/m")),
    update=Formula("Delta = A^{-1/2} G B^{-1/2};  Shampoo: L^{-1/4} G R^{-1/4} = (mn)^{1/4} E[GG^T]^{-1/4} G "
                   "E[G^TG]^{-1/4} (the paper drops (mn)^{1/4})",
                   r"\Delta = L^{-1/4} G R^{-1/4} = (mn)^{1/4}\,\mathbb{E}[GG^\top]^{-1/4} G\, \mathbb{E}[G^\top G]^{-1/4}"),
    solver="closed form (SVD of the rearranged Fisher); optimizers track the Thm 3.1 bound (Shampoo)",
    applies=composition((Full,), (Full,)), memory=kronecker_memory, example="Kronecker(Full(), Full())",
),)
PROOFS = (optimum_proof, bound_proof, fixed_size_proof)

if __name__ == "__main__":
    raise SystemExit(main(DERIVATIONS, PROOFS, check))
