"""A new structure derived end to end: block whitening (see derivations/README.md for the walk-through).

``BlockWhitening(block)`` whitens the rows with one SPD matrix per block of ``block`` consecutive
columns (think: one whitening per attention head of an output projection):

    F~ = sum_b kron(M_b, P_b),   P_b = diag(1[column j in block b]) (n x n),  M_b SPD (m x m)

``block = n`` is ``Kronecker(Full(), Identity())`` (whitening, SWAN/Muon-like); ``block = 1`` is one
full ``m x m`` block per column ([P] Prop 6). It is not a fimkit built-in.

**Derivation.** ``P_b`` are orthogonal projections with ``P_b P_c = 0`` (b != c) and
``tr(P_b) = |b|``, so by the Kronecker lemma

    ||F - F~||^2 = ||F||^2 - sum_b 2 tr(M_b E[G P_b G^T]) + sum_b |b| ||M_b||^2

which separates over blocks: ``M_b = E[G_b G_b^T] / |b|`` (``G_b`` = the block's columns), and the
step is ``Delta_b = M_b^{-1/2} G_b = sqrt(|b|) E[G_b G_b^T]^{-1/2} G_b``. State: ``ceil(n/block) m^2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import sympy as sp
import torch
from torch import Tensor

import fimkit
from fimkit.linalg import eigh_descending, inverse_power
from fimkit.structures import Full, Identity, Kronecker, ParamSpec, Structure

from . import checks
from . import symbolic as S
from .kronecker import same_family
from .report import Derivation, Formula, Memory, Step, main


@dataclass(frozen=True)
class BlockWhitening(Structure):
    """``F~ = sum_b kron(M_b, P_b)``: a row whitening shared by each block of ``block`` columns."""

    block: int = 2
    solver: ClassVar[str] = "closed form"

    def __post_init__(self):
        if isinstance(self.block, bool) or not isinstance(self.block, int) or self.block < 1:
            raise ValueError(f"BlockWhitening.block must be a positive integer, got {self.block!r}")

    def column_blocks(self, n: int) -> list[slice]:
        return [slice(start, min(start + self.block, n)) for start in range(0, n, self.block)]

    # ------------------------------------------------------------------ the family (required)
    def parameter_spec(self, m: int, n: int) -> dict[str, ParamSpec]:
        return {f"block_{b}": ParamSpec((m, m), "symmetric") for b in range(len(self.column_blocks(n)))}

    def dense(self, params, m: int, n: int) -> Tensor:
        first = next(iter(params.values()))
        total = torch.zeros(m * n, m * n, dtype=first.dtype)
        for b, cols in enumerate(self.column_blocks(n)):
            projection = torch.zeros(n, n, dtype=first.dtype)
            projection[cols, cols] = torch.eye(cols.stop - cols.start, dtype=first.dtype)
            total = total + torch.kron(params[f"block_{b}"], projection)
        return total

    # ------------------------------------------------------------------------- fast paths
    def fit_fim(self, fim: Tensor, m: int, n: int):
        f4 = fim.reshape(m, n, m, n)
        return {f"block_{b}": torch.einsum("ajbj->ab", f4[:, cols, :, cols]) / (cols.stop - cols.start)
                for b, cols in enumerate(self.column_blocks(n))}

    def statistic_shapes(self, m: int, n: int) -> dict[str, tuple[int, ...]]:
        return {"grams": (len(self.column_blocks(n)), m, m)}

    def statistics(self, grad: Tensor) -> dict[str, Tensor]:
        return {"grams": torch.stack([grad[:, cols] @ grad[:, cols].mT for cols in self.column_blocks(grad.shape[-1])])}

    def statistics_prior(self, m: int, n: int, dtype=torch.float32) -> dict[str, Tensor]:
        return {"grams": torch.eye(m, dtype=dtype).expand(len(self.column_blocks(n)), m, m).clone()}

    def fit(self, stats: dict[str, Tensor], m: int, n: int):
        return {f"block_{b}": stats["grams"][b] / (cols.stop - cols.start)
                for b, cols in enumerate(self.column_blocks(n))}

    def precondition(self, params, grad: Tensor, power: float = 0.5, eps: float = 0.0) -> Tensor:
        out = torch.empty_like(grad)
        for b, cols in enumerate(self.column_blocks(grad.shape[-1])):
            evals, evecs = eigh_descending(params[f"block_{b}"].to(grad.dtype))
            scaled = inverse_power(evals.clamp_min(0), power, eps).unsqueeze(-1) * (evecs.mT @ grad[:, cols])
            out[:, cols] = evecs @ scaled
        return out


# ----------------------------------------------------------------------------- the proofs
def general_proof() -> list[Step]:
    g = sp.MatrixSymbol("G", S.m, S.n)
    mat, proj = sp.MatrixSymbol("M", S.m, S.m), sp.MatrixSymbol("P", S.n, S.n)
    size = sp.Symbol("w", positive=True)  # |b| = tr(P_b) = tr(P_b^2)
    # Kronecker lemma with B = P_b (symmetric, idempotent): -2 tr(M G P G^T) + ||M||^2 tr(P^2)
    objective = -2 * sp.Trace(g.T * mat * g * proj) + sp.Trace(mat * mat) * size
    solution = S.solve_linear_matrix_equation(S.matrix_derivative(objective, mat, (mat, proj)), mat)
    S.assert_zero(solution - g * proj * g.T / size, "block stationarity")
    lam = sp.Symbol("lambda", positive=True)
    S.assert_equal((lam / size) ** sp.Rational(-1, 2), sp.sqrt(size) / sp.sqrt(lam), "-1/2 power")
    return [Step("cross terms: <kron(M_b, P_b), kron(M_c, P_c)> = tr(M_b M_c) tr(P_b P_c) = 0 for b != c, "
                 "so the objective separates over blocks"),
            Step("d/dM_b [-2 tr(M_b E[G P_b G^T]) + |b| ||M_b||^2] = 0  =>  M_b = E[G_b G_b^T] / |b| "
                 "(G P_b G^T = G_b G_b^T)", solution),
            Step("F~^{-1/2} = sum_b kron(M_b^{-1/2}, P_b): Delta_b = sqrt(|b|) E[G_b G_b^T]^{-1/2} G_b")]


@lru_cache(maxsize=None)
def fixed_size_solution(m_: int, n_: int, block: int = 2):
    f = S.symbolic_fim(m_, n_)
    structure = BlockWhitening(block)
    ftilde, mats = sp.zeros(m_ * n_), []
    for b, cols in enumerate(structure.column_blocks(n_)):
        mats.append(S.symmetric_matrix(f"m{b}", m_))
        projection = sp.diag(*[1 if cols.start <= j < cols.stop else 0 for j in range(n_)])
        ftilde += S.kron(mats[-1], projection)
    solution = S.solve_least_squares(f - ftilde, S.free_entries(ftilde))
    return f, ftilde.xreplace(solution)


def fixed_size_proof() -> list[Step]:
    for m_, n_ in S.FIXED_SIZES:
        f, ftilde = fixed_size_solution(m_, n_)
        for b, cols in enumerate(BlockWhitening(2).column_blocks(n_)):
            projection = sp.diag(*[1 if cols.start <= j < cols.stop else 0 for j in range(n_)])
            expected = S.contract_cols(f, projection, m_, n_) / (cols.stop - cols.start)
            got = sp.Matrix(m_, m_, lambda a, c: ftilde[a * n_ + cols.start, c * n_ + cols.start])
            S.assert_equal(got, expected, f"{m_}x{n_} block {b}")
    return [Step("blocks of 2 columns, fully symbolic F at 2x2, 2x3, 3x2: M_b = E[G_b G_b^T]/|b| exactly",
                 scope="fixed sizes")]


def check(structure=BlockWhitening(2)) -> list[checks.CheckResult]:
    def derived(fim, m, n, samples):
        mats = {f"block_{b}": torch.einsum("kaj,kbj->ab", samples[:, :, cols], samples[:, :, cols])
                / (samples.shape[0] * (cols.stop - cols.start)) for b, cols in enumerate(structure.column_blocks(n))}
        return BlockWhitening.dense(structure, mats, m, n)

    def update(fim, m, n, samples, grad):
        out = torch.empty_like(grad)
        for cols in structure.column_blocks(n):
            gram = torch.einsum("kaj,kbj->ab", samples[:, :, cols], samples[:, :, cols]) / samples.shape[0]
            out[:, cols] = math.sqrt(cols.stop - cols.start) * checks.psd_power(gram, -0.5) @ grad[:, cols]
        return out

    results = checks.check_closed_form(structure, derived, repr(structure), update_fn=update)
    results += checks.check_fixed_size_solutions(structure, fixed_size_solution, repr(structure))
    for m, n, _, fim in checks.instances():
        checks.check_solve(BlockWhitening(n), fim, m, n, fimkit.solve(Kronecker(Full(), Identity()), fim, (m, n)).matrix,
                           "BlockWhitening(n) = whiten_left")
    return results + [checks.ok("BlockWhitening(block=n) equals Kronecker(Full(), Identity())", "fimkit")]


def train_tiny_model(steps: int = 60, seed: int = 0, structure: Structure = BlockWhitening(4), lr: float = 0.02):
    """Train a bias-free 2-layer MLP on a random teacher with ``fimkit.derive(structure)``; returns losses."""
    torch.manual_seed(seed)
    inputs = torch.randn(256, 12)
    teacher = torch.nn.Sequential(torch.nn.Linear(12, 16, bias=False), torch.nn.Tanh(), torch.nn.Linear(16, 8, bias=False))
    with torch.no_grad():
        targets = teacher(inputs)
    model = torch.nn.Sequential(torch.nn.Linear(12, 16, bias=False), torch.nn.Tanh(), torch.nn.Linear(16, 8, bias=False))
    optimizer_class = fimkit.derive(structure, name=type(structure).__name__, lr=lr, betas=(0.9, 0.99), eps=1e-8,
                                    stat_init=1e-4)
    optimizer = optimizer_class(model.parameters())
    losses = []
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


DERIVATIONS = (Derivation(
    key="block_whitening", module=__name__, title="Block whitening (a new structure, derived here)",
    source="derivations/README.md; generalises whiten_left and [P] Prop 6",
    family=Formula("F~ = sum_b kron(M_b, P_b), P_b = diag(1[j in block b]), M_b SPD (m x m)",
                   r"\tilde F = \textstyle\sum_b M_b \otimes P_b"),
    problem=Formula("min_{M_b} ||F - F~||_F^2 = ||F||^2 - 2 sum_b tr(M_b E[G_b G_b^T]) + sum_b |b| ||M_b||^2",
                    r"\min_{M_b}\|F\|^2 - 2\sum_b \operatorname{tr}(M_b\mathbb{E}[G_bG_b^\top]) + \sum_b |b|\,\|M_b\|^2"),
    solution=(Formula("M_b = E[G_b G_b^T] / |b|", r"M_b = \mathbb{E}[G_b G_b^\top]/|b|"),),
    update=Formula("Delta_b = sqrt(|b|) E[G_b G_b^T]^{-1/2} G_b", r"\Delta_b = \sqrt{|b|}\,\mathbb{E}[G_bG_b^\top]^{-1/2}G_b"),
    solver="closed form", applies=lambda s: same_family(s, BlockWhitening),
    memory=lambda s: Memory(sp.ceiling(S.n / s.block) * S.m**2, "one m x m Gram per block of columns"),
    example="derivations.block_whitening:BlockWhitening",
),)
PROOFS = (general_proof, fixed_size_proof)

if __name__ == "__main__":
    status = main(DERIVATIONS, PROOFS, check)
    from fimkit.structures import Diagonal

    ours, adam_like = train_tiny_model(), train_tiny_model(structure=Diagonal())
    print("\ntraining a 12-16-8 MLP (MSE to a random teacher, lr 0.02, betas (0.9, 0.99)):")
    print("  step   fimkit.derive(BlockWhitening(4))   fimkit.derive(Diagonal()) (Adam)")
    for step in (0, 9, 19, 29, 39, 49, 59):
        print(f"  {step + 1:>4}   {ours[step]:>12.5f}                      {adam_like[step]:>10.5f}")
    raise SystemExit(status)
