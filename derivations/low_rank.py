"""The low-rank extension's compensation ([P] §5, Thm 5.1, Eq 19-21): Alice's structure.

Column ``i`` of G is ``g_i`` (length m). ``F~`` is block-diagonal over columns with blocks

    M_i = U diag(D[:, i]) U^T + o_i (I_m - U U^T),     U (m x r) orthonormal, given.

``||F - F~||^2 = sum_i ||S_i - M_i||^2 + const`` (``S_i = E[g_i g_i^T]``; the off-column blocks of F
are out of reach). In the basis ``V = [U, U_c]`` the block ``V^T M_i V`` is
``blockdiag(diag(D[:, i]), o_i I_{m-r})``, so by the projection lemma

    D[:, i] = diag(U^T S_i U) = E[(U^T g_i)^2]
    o_i = tr(U_c^T S_i U_c) / (m - r) = E[||g_i||^2 - ||U^T g_i||^2] / (m - r)

(``U U^T + U_c U_c^T = I``: no ``m x (m-r)`` basis is needed). The same ``o_i`` is the Frobenius
fit of ``kron(O, U_c U_c^T)``-type compensation to the complement's eigenvalue-corrected block
``U_c diag(E[(U_c^T g_i)^2]) U_c^T`` (Thm 5.1's statement). The step is
``U ((U^T G) / sqrt(D)) + (G - U U^T G) diag(o)^{-1/2}`` (Eq 21).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import sympy as sp
import torch

from fimkit.structures import ParamSpec, Structure

from . import checks
from . import symbolic as S
from .report import Derivation, Formula, Memory, Step, main


def general_proof() -> list[Step]:
    size = sp.Symbol("K", integer=True, positive=True)  # K = m - r diagonal entries of U_c^T S_i U_c
    x, o = sp.IndexedBase("x"), sp.Symbol("o")
    k = sp.Symbol("k", integer=True)
    objective = sp.Sum((x[k] - o) ** 2, (k, 0, size - 1))
    (o_star,) = sp.solve(sp.diff(objective, o).expand().doit(), o)
    S.assert_equal(o_star, sp.Sum(x[k], (k, 0, size - 1)) / size, "compensation = mean of the complement")
    s_mat, u = sp.MatrixSymbol("S", S.m, S.m), sp.MatrixSymbol("U", S.m, S.r)
    (a, b), lim = S.ranges(("a", S.m), ("b", S.m))
    c = sp.Symbol("c", integer=True)
    # tr(S (I - U U^T)) = tr(S) - tr(U^T S U): the complement's trace without its basis
    complement = sp.Sum(s_mat[a, b] * (sp.KroneckerDelta(a, b) - (u * u.T)[b, a]), *lim)
    split = sp.Sum(s_mat[a, a], lim[0]) - sp.Sum((u.T * s_mat * u)[c, c], (c, 0, S.r - 1))
    lhs = S.in_range(sp.expand(complement).doit())
    if not S.index_expressions_equal(lhs, split):
        raise S.DerivationMismatch("tr(S (I - U U^T)) != tr(S) - tr(U^T S U)")
    return [
        Step("||F - F~||^2 = sum_i ||S_i - M_i||^2 + const; in V = [U, U_c]: blockdiag(diag(D_i), o_i I)"),
        Step("D[:, i] = diag(U^T S_i U) = E[(U^T g_i)^2] (projection lemma, see diagonal)"),
        Step("d/do sum_k (x_k - o)^2 = 0  =>  o = mean of the complement's diagonal (any m - r)", o_star),
        Step("tr(U_c^T S_i U_c) = tr(S_i (I - U U^T)) = E||g_i||^2 - E||U^T g_i||^2 (index sums)", split),
        Step("o_i = E[||g_i||^2 - ||U^T g_i||^2] / (m - r); the same o_i fits the complement's "
             "eigenvalue-corrected block (its diagonal has the same trace)"),
        Step("F~^{-1/2}: Delta = U ((U^T G)/sqrt(D)) + (G - U U^T G) diag(o)^{-1/2} (Eq 21)"),
    ]


@dataclass(frozen=True, eq=False)
class FixedBasisLowRank(Structure):
    """Thm 5.1's family with the basis ``U`` given (written from the definition, independent of
    ``fimkit.structures.LowRankPlusDiagonal``): parameters ``d`` (r x n) and ``compensation`` (n)."""

    basis: torch.Tensor = field(default_factory=lambda: torch.eye(2, 1, dtype=torch.float64))

    def parameter_spec(self, m: int, n: int) -> dict[str, ParamSpec]:
        return {"d": ParamSpec((self.basis.shape[1], n), "positive"), "compensation": ParamSpec((n,), "positive")}

    def dense(self, params, m: int, n: int) -> torch.Tensor:
        u = self.basis.to(params["d"].dtype)
        complement = torch.eye(m, dtype=u.dtype) - u @ u.T
        blocks = torch.einsum("ak,ki,bk->iab", u, params["d"], u) + params["compensation"][:, None, None] * complement
        ftilde = torch.zeros(m, n, m, n, dtype=u.dtype)
        for i in range(n):
            ftilde[:, i, :, i] = blocks[i]
        return ftilde.reshape(m * n, m * n)


def closed_form(fim, m, n, u):
    """D and o of Thm 5.1 from the dense Fisher (column blocks S_i = E[g_i g_i^T])."""
    blocks = torch.stack([fim.reshape(m, n, m, n)[:, i, :, i] for i in range(n)])
    d = torch.einsum("ak,iab,bk->ki", u, blocks, u)
    o = (torch.diagonal(blocks, dim1=1, dim2=2).sum(1) - d.sum(0)) / (m - u.shape[1])
    return {"d": d, "compensation": o}


def unit_basis(m_: int) -> sp.Matrix:
    return sp.Matrix([3, 4]) / 5 if m_ == 2 else sp.Matrix([1, 2, 2]) / 3


@lru_cache(maxsize=None)
def fixed_size_solution(m_: int, n_: int):
    f, u = S.symbolic_fim(m_, n_), unit_basis(m_)
    d, o = S.diagonal_symbols("d", n_, positive=False), S.diagonal_symbols("o", n_, positive=False)
    ftilde = sp.zeros(m_ * n_)
    for i in range(n_):
        block = d[i] * u * u.T + o[i] * (sp.eye(m_) - u * u.T)
        for a in range(m_):
            for b in range(m_):
                ftilde[a * n_ + i, b * n_ + i] = block[a, b]
    solution = S.solve_least_squares(f - ftilde, d + o)
    return f, u, [solution[x] for x in d], [solution[x] for x in o]


def fixed_size_proof() -> list[Step]:
    for m_, n_ in S.FIXED_SIZES:
        f, u, d, o = fixed_size_solution(m_, n_)
        for i in range(n_):
            s_i = sp.Matrix(m_, m_, lambda a, b: f[a * n_ + i, b * n_ + i])
            S.assert_equal(d[i], (u.T * s_i * u)[0, 0], f"{m_}x{n_} D")
            S.assert_equal(o[i], (s_i.trace() - (u.T * s_i * u)[0, 0]) / (m_ - 1), f"{m_}x{n_} compensation")
    return [Step("rank 1 with a rational unit basis, fully symbolic F at 2x2, 2x3, 3x2: D and o solved "
                 "exactly equal the formulas", scope="fixed sizes")]


def random_basis(m: int, r: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(m, r, generator=gen, dtype=torch.float64))[0].contiguous()


def library_structure(rank: int):
    from fimkit.structures import LowRankPlusDiagonal

    return LowRankPlusDiagonal(rank)


def check(structure=None) -> list[checks.CheckResult]:
    ratio = None
    for index, (m, n, samples, fim) in enumerate(checks.instances(((3, 2), (4, 3), (3, 4)))):
        u = random_basis(m, 1 + index % 2 if m > 2 else 1, index)
        reference = FixedBasisLowRank(u)
        params = closed_form(fim, m, n, u)
        if index == 0:
            ratio = checks.check_beats_generic(reference, fim, m, n, reference.dense(params, m, n), "Thm 5.1")
    results = [checks.ok("Thm 5.1's D and o beat a direct numerical minimisation of the family (basis fixed)",
                         "numeric", f"error ratio derived/generic {ratio:.8f}")]
    return results + library_check(structure)


def library_check(structure=None) -> list[checks.CheckResult]:
    name = "fimkit.structures.LowRankPlusDiagonal"
    for index, (m, n, samples, fim) in enumerate(checks.instances(((3, 2), (4, 3), (3, 4)))):
        rank = 1 + index % 2 if m > 2 else 1
        s = structure if structure is not None else library_structure(rank)
        u = random_basis(m, s.effective_rank(m) if hasattr(s, "effective_rank") else rank, index)
        reference = FixedBasisLowRank(u)
        expected = reference.dense(closed_form(fim, m, n, u), m, n)
        params = s.fit_fim(fim, m, n, basis=u)
        checks.expect_close(f"{name}.fit_fim(basis=U) at {m}x{n}", s.dense(params, m, n), expected)
        d, o = closed_form(fim, m, n, u).values()
        grad = samples[0]
        checks.check_precondition(s, params, grad, u @ ((u.T @ grad) / d.sqrt()) + (grad - u @ u.T @ grad) / o.sqrt(),
                                  name)
        if index == 0:
            checks.check_beats_generic(s, fim, m, n, expected, name, fixed={"basis": u})
    return [checks.ok(f"{name}.fit_fim given U returns Thm 5.1's D and o", "fimkit"),
            checks.ok(f"{name}.precondition = U((U^T G)/sqrt(D)) + (G - UU^T G)/sqrt(o) (Eq 21)", "fimkit"),
            checks.ok(f"{name}: with U fixed, the generic solver finds nothing better", "numeric")]


def memory(structure) -> Memory:
    """State of fimkit's LowRankPlusDiagonal statistics (r = min(rank, m))."""
    shared = S.m * S.r + S.r**2 + S.r * S.n
    return Memory(sp.Piecewise((shared + S.n, S.r < S.m), (shared, True)),
                  "basis U (m x r), projected Gram (r x r), D (r x n), compensation o (n, none when r = m)")


DERIVATIONS = (Derivation(
    key="low_rank", module=__name__, title="Low-rank eigenbasis plus compensation (Alice)",
    source="[P] §5, Thm 5.1, Eq 19-21",
    family=Formula("F~ = blockdiag_i(U diag(D[:, i]) U^T + o_i (I_m - U U^T)), U (m x r) orthonormal, D > 0, o > 0",
                   r"\tilde F = \operatorname{blockdiag}_i\big(U\operatorname{diag}(D_{:,i})U^\top + o_i(I_m - UU^\top)\big)"),
    problem=Formula("min_{D, o} ||F - F~||_F^2 given U", r"\min_{D,o}\|F - \tilde F\|_F^2"),
    solution=(Formula("D = E[(U^T G)^2]", r"D = \mathbb{E}[(U^\top G)^{\odot 2}]"),
              Formula("o_i = E[||g_i||^2 - ||U^T g_i||^2] / (m - r)  (Thm 5.1)",
                      r"o_i = \mathbb{E}\big[\|g_i\|^2 - \|U^\top g_i\|^2\big]/(m-r)"),
              Formula("U: top-r eigenvectors of E[GG^T] (one alternating round; Alice tracks it by subspace "
                      "iteration)", r"U = \operatorname{EVD}_r(\mathbb{E}[GG^\top])")),
    update=Formula("Delta = U ((U^T G) / sqrt(D)) + (G - U U^T G) diag(o)^{-1/2}  (Eq 21)",
                   r"\Delta = U\big((U^\top G)\oslash\sqrt{D}\big) + (G - UU^\top G)\operatorname{diag}(o)^{-1/2}"),
    solver="closed form (given the basis)",
    applies=lambda s: type(s).__name__ == "LowRankPlusDiagonal" and type(s).__module__.startswith("fimkit."),
    memory=memory, example="LowRankPlusDiagonal(rank=4)",
),)
PROOFS = (general_proof, fixed_size_proof)

if __name__ == "__main__":
    raise SystemExit(main(DERIVATIONS, PROOFS, check))
