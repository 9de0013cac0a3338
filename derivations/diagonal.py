"""Element-wise diagonal ``F~ = diag(vec(D))``: Adam's second moment ([P] Prop 1).

    ||F - diag(d)||_F^2 = sum_{a != b} F_ab^2 + sum_a (F_aa - d_a)^2

separates per coordinate, so ``d_a = F_aa``: ``D = E[G*G]`` (the off-diagonal of F is out of
reach). The -1/2 step is ``G / sqrt(E[G*G])``; with an EMA for the expectation, a momentum and
``eps`` outside the root it is Adam (``fimkit.optim.Adam``).
"""

from __future__ import annotations

from functools import lru_cache

import sympy as sp
import torch

from fimkit.structures import Diagonal

from . import checks
from . import symbolic as S
from .kronecker import same_family
from .report import Derivation, Formula, Memory, Step, main


def general_proof() -> list[Step]:
    size = sp.Symbol("N", integer=True, positive=True)  # N = mn coordinates
    f, d = sp.IndexedBase("F"), sp.IndexedBase("d")
    a, b, t = sp.symbols("a b t", integer=True)
    objective = sp.Sum((f[a, b] - d[a] * sp.KroneckerDelta(a, b)) ** 2, (a, 0, size - 1), (b, 0, size - 1))
    solution = S.solve_indexed_stationarity(objective, d[t])
    S.assert_equal(solution, f[t, t], "diagonal stationarity")
    return [Step("d/dd_t ||F - diag(d)||^2 = 0  =>  d_t = F_tt, i.e. D_ij = F[(i,j),(i,j)] = E[G_ij^2]", solution),
            Step("diag(d)^{-1/2} vec(G) = vec(G / sqrt(D)) (element-wise)")]


@lru_cache(maxsize=None)
def fixed_size_solution(m_: int, n_: int) -> tuple[sp.Matrix, sp.Matrix]:
    f = S.symbolic_fim(m_, n_)
    d = S.diagonal_symbols("d", m_ * n_, positive=False)
    solution = S.solve_least_squares(f - sp.diag(*d), d)
    return f, sp.diag(*[solution[x] for x in d])


def fixed_size_proof() -> list[Step]:
    for m_, n_ in S.FIXED_SIZES:
        f, ftilde = fixed_size_solution(m_, n_)
        S.assert_equal(sp.Matrix(m_, n_, list(ftilde.diagonal())), S.elementwise_moment(f, m_, n_),
                       f"{m_}x{n_} diagonal optimum")
    return [Step("solved from a fully symbolic F at 2x2, 2x3, 3x2: D = E[G*G]", scope="fixed sizes")]


def check(structure=Diagonal()) -> list[checks.CheckResult]:
    def derived(fim, m, n, samples):
        return torch.diag(torch.diagonal(fim))  # D = E[G*G]

    def update(fim, m, n, samples, grad):
        return grad / checks.moments(fim, m, n)["elementwise"].sqrt()

    return (checks.check_closed_form(structure, derived, "Diagonal", update_fn=update)
            + checks.check_fixed_size_solutions(structure, fixed_size_solution, "Diagonal"))


DERIVATIONS = (Derivation(
    key="diagonal",
    module=__name__,
    title="Element-wise diagonal (Adam)",
    source="[P] Prop 1",
    family=Formula("F~ = diag(vec(D)), D > 0 (m x n)", r"\tilde F = \operatorname{diag}(\operatorname{vec} D),\ D > 0"),
    problem=Formula("min_D ||F - diag(vec(D))||_F^2", r"\min_{D} \|F - \operatorname{diag}(\operatorname{vec} D)\|_F^2"),
    solution=(Formula("D = E[G*G]  (= the diagonal of F)", r"D = \mathbb{E}[G \odot G]"),),
    update=Formula("Delta = G / sqrt(E[G*G])  (EMA + momentum + eps outside the root: Adam)",
                   r"\Delta = G \oslash \sqrt{\mathbb{E}[G\odot G]}"),
    solver="closed form",
    applies=lambda s: same_family(s, Diagonal),
    memory=lambda s: Memory(S.m * S.n, "EMA of G*G (m x n)"),
    example="Diagonal()",
),)
PROOFS = (general_proof, fixed_size_proof)

if __name__ == "__main__":
    raise SystemExit(main(DERIVATIONS, PROOFS, check))
