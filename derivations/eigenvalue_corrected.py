"""Eigenvalue-corrected structures ``F~ = Q diag(vec(D)) Q^T``, ``Q = kron(U_rows, U_cols)``:
SOAP and Eigen-Adam ([P] Thm 3.2, 3.3, Eq 10-12).

Given the (orthogonal) basis, the eigenvalues are exact:

    ||F - Q diag(d) Q^T||^2 = ||F||^2 - 2 sum_a d_a (Q^T F Q)_aa + sum_a d_a^2
    =>  d_a = (Q^T F Q)_aa,  i.e.  D = E[(U_rows^T G U_cols)^2]

(the Diagonal result in the rotated coordinates). The step is ``U_r ((U_r^T G U_c) / sqrt(D)) U_c^T``:
Adam in the eigenbasis. fimkit takes the basis from the eigenvectors of ``E[GG^T]`` (and
``E[G^TG]``), the paper's one alternating round; the basis itself has no closed-form optimum.
``Kronecker(Full, Identity)`` is Eigen-Adam (one-sided SOAP), ``(Full, Full)`` SOAP, and the
identity basis gives ``Diagonal`` (Adam).
"""

from __future__ import annotations

from functools import lru_cache

import sympy as sp
import torch

import fimkit
from fimkit.structures import Diagonal, EigenvalueCorrected, Full, Identity, Kronecker

from . import checks
from . import symbolic as S
from .kronecker import same_family
from .report import Derivation, Formula, Memory, Step, main


def general_proof() -> list[Step]:
    size = sp.Symbol("N", integer=True, positive=True)
    q, f, d = sp.MatrixSymbol("Q", size, size), sp.MatrixSymbol("F", size, size), sp.IndexedBase("d")
    (a, a2, b, c), lim = S.ranges(("a", size), ("a2", size), ("b", size), ("c", size))
    delta = sp.KroneckerDelta
    # <F, Q diag(d) Q^T> = sum_a d_a (Q^T F Q)_aa
    inner = sp.Sum(f[b, c] * q[b, a] * d[a] * q[c, a], lim[2], lim[3], lim[0])
    rotated = sp.Sum(d[a] * (q.T * f * q)[a, a], lim[0])
    if not S.index_sums_equal(inner, rotated):
        raise S.DerivationMismatch("<F, Q D Q^T> != sum_a d_a (Q^T F Q)_aa")
    # ||Q diag(d) Q^T||^2 = sum_{a,a2} d_a d_a2 (sum_b Q_ba Q_ba2)(sum_c Q_ca Q_ca2); Q^T Q = I
    orthogonal = sp.Sum(d[a] * d[a2] * delta(a, a2) * delta(a, a2), lim[1], lim[0])
    norm_sq = S.in_range(orthogonal.doit())
    if not S.index_sums_equal(norm_sq, sp.Sum(d[a] ** 2, lim[0])):
        raise S.DerivationMismatch("||Q D Q^T|| != ||D|| for orthogonal Q")
    t, x = sp.Symbol("t", integer=True), sp.IndexedBase("x")
    d_t = S.solve_indexed_stationarity(-2 * sp.Sum(d[a] * x[a], lim[0]) + sp.Sum(d[a] ** 2, lim[0]), d[t])
    S.assert_equal(d_t, x[t], "eigenvalue stationarity")
    return [Step("<F, Q diag(d) Q^T> = sum_a d_a (Q^T F Q)_aa (index sums)", rotated),
            Step("||Q diag(d) Q^T||^2 = ||d||^2 (orthogonality: sum_b Q_ba Q_ba' = delta_aa')", norm_sq),
            Step("d_t = (Q^T F Q)_tt; with Q = kron(U_r, U_c): D = E[(U_r^T G U_c)^2]", d_t),
            Step("F~^{-1/2} = Q diag(d)^{-1/2} Q^T: Delta = U_r ((U_r^T G U_c) / sqrt(D)) U_c^T")]


def kron_rotation_proof() -> list[Step]:
    g = sp.MatrixSymbol("G", S.m, S.n)
    ur, uc = sp.MatrixSymbol("U", S.m, S.m), sp.MatrixSymbol("V", S.n, S.n)
    (i, j, k, l), lim = S.ranges(("i", S.m), ("j", S.n), ("k", S.m), ("l", S.n))
    a, b = sp.symbols("a b", integer=True)
    lemma = sp.Sum(g[i, j] * g[k, l] * ur[i, a] * uc[j, b] * ur[k, a] * uc[l, b], *lim)
    square = (sp.Sum(ur[i, a] * g[i, j] * uc[j, b], lim[0], lim[1])
              * sp.Sum(ur[k, a] * g[k, l] * uc[l, b], lim[2], lim[3]))
    if not S.index_sums_equal(lemma, square):
        raise S.DerivationMismatch("(Q^T F Q)_(ab),(ab) != E[(U^T G V)_ab^2]")
    return [Step("Q = kron(U, V): (Q^T vec(G))_(a,b) = (U^T G V)_ab, so (Q^T F Q)_(ab),(ab) = "
                 "E[(U^T G V)_ab^2] (index sums)")]


def _rotation(k: int) -> sp.Matrix:
    """A rational orthogonal k x k matrix with no zero entry: plane rotations by Pythagorean angles."""
    def plane(i, j, c, s):
        rot = sp.eye(k)
        rot[i, i], rot[i, j], rot[j, i], rot[j, j] = c, -s, s, c
        return rot
    rot = plane(0, 1, sp.Rational(3, 5), sp.Rational(4, 5))
    if k == 3:
        rot = rot * plane(1, 2, sp.Rational(5, 13), sp.Rational(12, 13)) * plane(0, 2, sp.Rational(8, 17), sp.Rational(15, 17))
    return rot


@lru_cache(maxsize=None)
def fixed_size_solution(m_: int, n_: int):
    f = S.symbolic_fim(m_, n_)
    u, v = _rotation(m_), _rotation(n_)
    q = S.kron(u, v)
    d = S.diagonal_symbols("d", m_ * n_, positive=False)
    ftilde = q * sp.diag(*d) * q.T
    solution = S.solve_least_squares(f - ftilde, d)
    return f, u, v, [solution[x] for x in d]


def fixed_size_proof() -> list[Step]:
    for m_, n_ in S.FIXED_SIZES:
        f, u, v, d = fixed_size_solution(m_, n_)
        expected = [sum(f[i * n_ + j, k * n_ + l] * u[i, a] * v[j, b] * u[k, a] * v[l, b]
                        for i in range(m_) for j in range(n_) for k in range(m_) for l in range(n_))
                    for a in range(m_) for b in range(n_)]
        S.assert_equal(sp.Matrix(d), sp.Matrix(expected), f"{m_}x{n_} eigenvalues")
    return [Step("solved from a fully symbolic F in fixed rational orthogonal bases at 2x2, 2x3, 3x2: "
                 "D = E[(U^T G V)^2]", scope="fixed sizes")]


def random_orthogonal(k: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(k, k, generator=gen, dtype=torch.float64))[0].contiguous()


def derived(fim, m, n, bases):
    """F~ with D = E[(U^T G V)^2] read off F, for the given bases (identity where missing)."""
    u = bases.get("rows_basis", torch.eye(m, dtype=fim.dtype))
    v = bases.get("cols_basis", torch.eye(n, dtype=fim.dtype))
    q = torch.kron(u.contiguous(), v.contiguous())
    return q @ torch.diag(torch.diagonal(q.T @ fim @ q)) @ q.T


def check(structure=None) -> list[checks.CheckResult]:
    structures = [structure] if structure is not None else [
        EigenvalueCorrected(Kronecker(Full(), Identity())), EigenvalueCorrected(Kronecker(Full(), Full()))]
    results = []
    for s in structures:
        name = f"EigenvalueCorrected({type(s.basis.rows).__name__}, {type(s.basis.cols).__name__})"
        for index, (m, n, samples, fim) in enumerate(checks.instances()):
            sizes = {"rows": m, "cols": n}
            bases = {f"{side}_basis": random_orthogonal(sizes[side], index) for side in s.rotated_sides()}
            params = s.fit_fim(fim, m, n, bases=bases)
            checks.expect_close(f"{name}: fit_fim given a basis at {m}x{n}", s.dense(params, m, n),
                                derived(fim, m, n, bases))
            if index == 0:
                checks.check_beats_generic(s, fim, m, n, derived(fim, m, n, bases), name, fixed=bases)
            mom = checks.moments(fim, m, n)
            grams = {"rows_basis": mom["row_gram"], "cols_basis": mom["col_gram"]}
            own = {k: torch.linalg.eigh(grams[k])[1] for k in bases}  # one alternating round
            checks.check_solve(s, fim, m, n, derived(fim, m, n, own), name)
            grad, u = samples[0], bases.get("rows_basis", torch.eye(m, dtype=fim.dtype))
            v = bases.get("cols_basis", torch.eye(n, dtype=fim.dtype))
            d = torch.diagonal(torch.kron(u, v).T @ fim @ torch.kron(u, v)).reshape(m, n)
            checks.check_precondition(s, params, grad, u @ ((u.T @ grad @ v) / d.sqrt()) @ v.T, name)
        results += [checks.ok(f"{name}: fit_fim given any basis returns D = E[(U^T G V)^2]", "fimkit"),
                    checks.ok(f"{name}: with the basis fixed, the generic solver finds nothing better", "numeric"),
                    checks.ok(f"{name}: fimkit.solve = Gram eigenbases + exact eigenvalues", "fimkit"),
                    checks.ok(f"{name}: precondition = U ((U^T G V) / sqrt(D)) V^T", "fimkit")]
    if structure is None:
        for m, n, _, fim in checks.instances():
            checks.check_solve(EigenvalueCorrected(Kronecker(Identity(), Identity())), fim, m, n,
                               fimkit.solve(Diagonal(), fim, (m, n)).matrix, "identity basis")
        results.append(checks.ok("identity basis: EigenvalueCorrected equals Diagonal (Adam)", "fimkit"))
    return results


def memory(structure) -> Memory:
    sizes = {"rows": S.m, "cols": S.n}
    extra = sum((2 * sizes[side] ** 2 for side in structure.rotated_sides()), sp.Integer(0))
    return Memory(S.m * S.n + extra, "E[(U^T G V)^2] (m x n), plus a Gram matrix and its eigenbasis per rotated side")


DERIVATIONS = (Derivation(
    key="eigenvalue_corrected", module=__name__, title="Eigenvalue-corrected (SOAP / Eigen-Adam)",
    source="[P] Thm 3.2, 3.3, Eq 10-12",
    family=Formula("F~ = Q diag(vec(D)) Q^T, Q = kron(U_rows, U_cols) orthogonal, D > 0 (m x n)",
                   r"\tilde F = Q \operatorname{diag}(\operatorname{vec} D) Q^\top,\ Q = U_r \otimes U_c"),
    problem=Formula("min_D ||F - Q diag(vec(D)) Q^T||_F^2 given the basis (= ||Q^T F Q - diag(vec D)||^2)",
                    r"\min_D \|Q^\top F Q - \operatorname{diag}(\operatorname{vec} D)\|_F^2"),
    solution=(Formula("D = E[(U_rows^T G U_cols)^2] (exact given the basis); basis: eigenvectors of E[GG^T] "
                      "(and E[G^TG]), the paper's one alternating round",
                      r"D = \mathbb{E}[(U_r^\top G U_c)^{\odot 2}]"),),
    update=Formula("Delta = U_r ((U_r^T G U_c) / sqrt(D)) U_c^T  (Adam in the eigenbasis)",
                   r"\Delta = U_r\big((U_r^\top G U_c)\oslash\sqrt{D}\big)U_c^\top"),
    solver="closed form (eigenvalues, given the basis)",
    applies=lambda s: same_family(s, EigenvalueCorrected), memory=memory,
    example="EigenvalueCorrected(Kronecker(Full(), Full()))",
),)
PROOFS = (general_proof, kron_rotation_proof, fixed_size_proof)

if __name__ == "__main__":
    raise SystemExit(main(DERIVATIONS, PROOFS, check))
