"""Normalisation and whitening as structures of a *single* gradient: the SWAN / SinkGD connection.

With one sample, ``F = vec(G) vec(G)^T`` and the one-sided optima of ``one_sided`` become
stateless gradient transforms ([P] §4, App B.7-B.8, E.5):

- ``Kronecker(Full(), Identity())``: ``M = G G^T / n``, step ``sqrt(n) (G G^T)^{-1/2} G =
  sqrt(n) U V^T`` (``G = U S V^T``): the polar factor, SWAN's GradWhitening and Muon's
  orthogonalisation, up to the ``sqrt(n)`` factor the FIM view adds.
- ``Kronecker(DiagonalFactor(), Identity())``: ``q_i = ||G_i||^2 / n``, step ``sqrt(n) G_i / ||G_i||``
  (every row RMS 1): SinkGD's row half-step; on the row-centred gradient it is SWAN's GradNorm
  (row standardisation), since ``sd_i = ||G_i - mu_i|| / sqrt(n)``.
- Sinkhorn (SinkGD): alternating row and column normalisation multiplies G by positive diagonal
  matrices, so every iterate is ``D_r G D_c = G / sqrt(q s^T)``: the step of a ``RowColumn``-type
  member ``F~ = diag(vec(q s^T))``. Its limit balances the scaled gradient (row norms sqrt(n),
  column norms sqrt(m)); that member is fitted by matrix balancing, not by Frobenius distance,
  and differs from ``fimkit.solve(RowColumn(), G)`` (the rank-1 fit of ``G*G``).
"""

from __future__ import annotations

import math

import sympy as sp
import torch

import fimkit
from fimkit.structures import DiagonalFactor, Full, Identity, Kronecker, RowColumn

from . import checks
from . import symbolic as S
from .report import Derivation, Formula, Memory, Step, main


def general_proof() -> list[Step]:
    sigma, c = sp.symbols("sigma c", positive=True)
    S.assert_equal(sp.sqrt(S.n) * (sigma**2) ** sp.Rational(-1, 2) * sigma, sp.sqrt(S.n),
                   "whitening per singular value")
    row_sq = sp.Symbol("N_i", positive=True)  # ||G_i||^2 = sum_j G_ij^2
    S.assert_equal(S.n * row_sq / row_sq, S.n, "row RMS after norm_row")
    centred_sq = sp.Symbol("C_i", positive=True)  # ||G_i - mu_i||^2
    sd = sp.sqrt(centred_sq / S.n)  # population standard deviation of row i
    S.assert_equal(1 / sd, sp.sqrt(S.n) / sp.sqrt(centred_sq), "GradNorm = norm_row of the centred gradient")
    d1, d2, e1, e2 = (sp.MatrixSymbol(x, k, k) for x, k in (("Dr1", S.m), ("Dr2", S.m), ("Dc1", S.n), ("Dc2", S.n)))
    g = sp.MatrixSymbol("G", S.m, S.n)
    two_rounds = d2 * (d1 * g * e1) * e2
    S.assert_zero(two_rounds - (d2 * d1) * g * (e1 * e2), "Sinkhorn rounds compose")
    S.assert_equal(sp.sqrt(c**2 * sigma) / sp.sqrt(sigma), c, "scale invariance")
    return [
        Step("one sample, whiten_left: sqrt(n) (GG^T)^{-1/2} G = sqrt(n) U V^T (sigma^{-1} sigma = 1 per "
             "singular value)"),
        Step("one sample, norm_row: q_i = ||G_i||^2/n, so every row of diag(q)^{-1/2} G has squared norm n"),
        Step("SWAN GradNorm: (G_i - mu_i)/sd_i = sqrt(n) (G_i - mu_i)/||G_i - mu_i|| = norm_row step of the "
             "centred gradient"),
        Step("Sinkhorn rounds compose diagonal scalings: D_r2 (D_r1 G D_c1) D_c2 = (D_r2 D_r1) G (D_c1 D_c2), "
             "so every iterate is G / sqrt(q s^T), a RowColumn-type step", two_rounds),
        Step("all of these are invariant to G -> cG (c > 0)"),
    ]


def sinkhorn(grad: torch.Tensor, iters: int) -> torch.Tensor:
    """SinkGD's iteration written from its definition (rows to norm sqrt(n), columns to sqrt(m))."""
    m, n = grad.shape
    x = grad
    for _ in range(iters):
        x = math.sqrt(n) * x / x.norm(dim=1, keepdim=True)
        x = math.sqrt(m) * x / x.norm(dim=0, keepdim=True)
    return x


def single_sample_step(structure, grad: torch.Tensor) -> torch.Tensor:
    approx = fimkit.solve(structure, grad[None], grad.shape)
    return structure.precondition(approx.params, grad, 0.5, 0.0)


def check(structure=None) -> list[checks.CheckResult]:
    gaps = {"whitening": 0.0, "norm_row": 0.0, "norm_col": 0.0, "gradnorm": 0.0, "sinkhorn": 0.0}
    frobenius_vs_balanced = math.inf
    for m, n, samples, _ in checks.instances(((2, 3), (3, 5), (4, 6))):
        grad = samples[0]
        u, _, vh = torch.linalg.svd(grad, full_matrices=False)
        gaps["whitening"] = max(gaps["whitening"], checks.expect_close(
            "one-sample whiten_left step", single_sample_step(Kronecker(Full(), Identity()), grad),
            math.sqrt(n) * u @ vh, 1e-6))
        gaps["norm_row"] = max(gaps["norm_row"], checks.expect_close(
            "one-sample norm_row step = SinkGD row half-step",
            single_sample_step(Kronecker(DiagonalFactor(), Identity()), grad),
            math.sqrt(n) * grad / grad.norm(dim=1, keepdim=True)))
        gaps["norm_col"] = max(gaps["norm_col"], checks.expect_close(
            "one-sample norm_col step = SinkGD column half-step",
            single_sample_step(Kronecker(Identity(), DiagonalFactor()), grad),
            math.sqrt(m) * grad / grad.norm(dim=0, keepdim=True)))
        centred = grad - grad.mean(dim=1, keepdim=True)
        standardised = centred / centred.pow(2).mean(dim=1, keepdim=True).sqrt()
        gaps["gradnorm"] = max(gaps["gradnorm"], checks.expect_close(
            "SWAN GradNorm = norm_row step of the centred gradient",
            single_sample_step(Kronecker(DiagonalFactor(), Identity()), centred), standardised))
        balanced = sinkhorn(grad, 2000)
        product = (grad / balanced) ** 2  # q s^T of the member whose step is the Sinkhorn limit
        q, s = product[:, 0], product[0] / product[0, 0]
        member = {"rows": q, "cols": s}
        gaps["sinkhorn"] = max(gaps["sinkhorn"], checks.expect_close(
            "Sinkhorn limit = RowColumn step G / sqrt(q s^T)", RowColumn().precondition(member, grad), balanced, 1e-9))
        checks.expect_close("balanced rows have norm sqrt(n)", balanced.norm(dim=1), torch.full((m,), math.sqrt(n),
                            dtype=grad.dtype), 1e-9)
        frobenius_step = single_sample_step(RowColumn(), grad)
        frobenius_vs_balanced = min(frobenius_vs_balanced, checks.relative_gap(
            frobenius_step / frobenius_step.norm(), balanced / balanced.norm()))
    if not frobenius_vs_balanced > 1e-3:
        raise S.DerivationMismatch("the Sinkhorn member coincided with the Frobenius RowColumn fit")
    results = [
        checks.ok("one-sample Kronecker(Full, Identity) step = sqrt(n) U V^T (whitening / polar factor)", "fimkit",
                  f"gap {gaps['whitening']:.1e}"),
        checks.ok("one-sample norm_row / norm_col steps = SinkGD's row / column half-steps", "fimkit"),
        checks.ok("SWAN's GradNorm = one-sample norm_row step of the row-centred gradient", "fimkit"),
        checks.ok("SinkGD's limit is the step of a RowColumn member diag(vec(q s^T)) (matrix balancing)", "fimkit",
                  f"gap {gaps['sinkhorn']:.1e}"),
        checks.ok("that member is not the Frobenius RowColumn fit of the same gradient", "numeric",
                  f"relative difference of the step directions >= {frobenius_vs_balanced:.3f}"),
    ]
    return results + library_checks()


def library_checks() -> list[checks.CheckResult]:
    """fimkit's own SWAN/SinkGD maths (``fimkit.normalisation``) against the derivation."""
    from fimkit import normalisation

    for m, n, samples, _ in checks.instances(((3, 5), (4, 6))):
        grad = samples[0]
        checks.expect_close("fimkit.normalisation.sinkhorn_normalise", normalisation.sinkhorn_normalise(grad, 7),
                            sinkhorn(grad, 7))
        checks.expect_close("fimkit.normalisation.whiten = (GG^T)^{-1/2} G",
                            math.sqrt(n) * normalisation.whiten(grad),
                            single_sample_step(Kronecker(Full(), Identity()), grad), 1e-6)
        centred = grad - grad.mean(dim=1, keepdim=True)
        checks.expect_close("fimkit.normalisation.standardize_rows", normalisation.standardize_rows(grad),
                            single_sample_step(Kronecker(DiagonalFactor(), Identity()), centred), 1e-6)
    return [checks.ok("fimkit.normalisation's sinkhorn_normalise, whiten, standardize_rows match the one-sample "
                      "structures", "fimkit")]


DERIVATIONS = (Derivation(
    key="normalisation", module=__name__, title="Normalisation and whitening of one gradient (SWAN, SinkGD, Muon)",
    source="[P] §4, App B.7-B.8, E.5; SWAN arXiv 2412.13148; SinkGD arXiv 2502.06742",
    family=Formula("one-sided Kronecker / RowColumn structures fitted to a single gradient, F = vec(G) vec(G)^T",
                   r"F = \operatorname{vec}(G)\operatorname{vec}(G)^\top"),
    problem=Formula("min ||vec(G) vec(G)^T - F~||_F^2 over the structure", r"\min\|gg^\top - \tilde F\|_F^2"),
    solution=(Formula("whitening: M = G G^T / n;  row normalisation: q_i = ||G_i||^2 / n;  Sinkhorn: q s^T with "
                      "balanced rows and columns", r"M = GG^\top/n,\ q_i = \|G_{i\cdot}\|^2/n"),),
    update=Formula("sqrt(n) U V^T (SWAN/Muon whitening);  sqrt(n) G_i/||G_i|| (SinkGD half-step, SWAN GradNorm "
                   "when centred);  G / sqrt(q s^T) (SinkGD)", r"\sqrt{n}\,UV^\top,\quad \sqrt{n}\,G_{i\cdot}/\|G_{i\cdot}\|"),
    solver="closed form (stateless)", applies=lambda s: False,
    memory=lambda s: Memory(sp.Integer(0), "stateless (one gradient)"), example="Kronecker(Full(), Identity())",
),)
PROOFS = (general_proof,)

if __name__ == "__main__":
    raise SystemExit(main(DERIVATIONS, PROOFS, check))
