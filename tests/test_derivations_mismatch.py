"""A wrong closed form, in the library or in the derivation, makes the checks fail.

Each test feeds a deliberately perturbed ``fit_fim`` (a subclass of a built-in structure) or a
wrong symbolic formula and expects ``DerivationMismatch``.
"""

from dataclasses import dataclass

import pytest
import sympy as sp

from derivations import block_whitening, diagonal, eigenvalue_corrected, low_rank, one_sided, row_column
from derivations import checks
from derivations import symbolic as S
from derivations.symbolic import DerivationMismatch
from fimkit.structures import Diagonal, EigenvalueCorrected, Full, Identity, Kronecker


@dataclass(frozen=True)
class SkewedDiagonal(Diagonal):
    def fit_fim(self, fim, m, n):
        return {"d": super().fit_fim(fim, m, n)["d"] * 1.01}


@dataclass(frozen=True)
class WhiteningOverM(Kronecker):
    """E[GG^T]/m instead of E[GG^T]/n: the classic transposition slip."""

    def fit_fim(self, fim, m, n, iters=None):
        params = super().fit_fim(fim, m, n, iters)
        return {"rows": params["rows"] * n / m, "cols": params["cols"]}


@dataclass(frozen=True)
class OneStepRowColumn(Kronecker):
    """One iteration of Eq 16 instead of the fixed point."""

    def fit_fim(self, fim, m, n, iters=None):
        return super().fit_fim(fim, m, n, iters=1)


@dataclass(frozen=True)
class UnrotatedEigenvalues(EigenvalueCorrected):
    """Adam's diagonal used as eigenvalues without rotating into the basis."""

    def fit_fim(self, fim, m, n, bases=None):
        params = super().fit_fim(fim, m, n, bases)
        return {**params, "d": Diagonal().fit_fim(fim, m, n)["d"]}


@dataclass(frozen=True)
class BlocksOverN(block_whitening.BlockWhitening):
    def fit_fim(self, fim, m, n):
        return {k: v * self.block / n for k, v in super().fit_fim(fim, m, n).items()}


def test_perturbed_diagonal_closed_form_is_rejected():
    with pytest.raises(DerivationMismatch, match="Diagonal"):
        diagonal.check(structure=SkewedDiagonal())


def test_whitening_divided_by_the_wrong_side_is_rejected():
    with pytest.raises(DerivationMismatch, match="whiten_left"):
        one_sided.check(structure=WhiteningOverM(Full(), Identity()))


def test_row_column_stopped_before_the_fixed_point_is_rejected():
    from fimkit.structures import DiagonalFactor

    with pytest.raises(DerivationMismatch, match="RowColumn"):
        row_column.check(structure=OneStepRowColumn(DiagonalFactor(), DiagonalFactor()))


def test_unrotated_eigenvalues_are_rejected():
    with pytest.raises(DerivationMismatch, match="EigenvalueCorrected"):
        eigenvalue_corrected.check(structure=UnrotatedEigenvalues(Kronecker(Full(), Full())))


def test_wrong_block_whitening_normalisation_is_rejected():
    with pytest.raises(DerivationMismatch, match="BlockWhitening|BlocksOverN"):
        block_whitening.check(structure=BlocksOverN(2))


def test_wrong_compensation_denominator_is_rejected():
    structure_class = low_rank.library_structure(1)

    @dataclass(frozen=True)
    class CompensationOverM(type(structure_class)):
        def fit_fim(self, fim, m, n, basis=None):
            params = super().fit_fim(fim, m, n, basis)
            r = params["basis"].shape[1]
            return {**params, "compensation": params["compensation"] * (m - r) / m}

    with pytest.raises(DerivationMismatch, match="LowRankPlusDiagonal"):
        low_rank.library_check(structure=CompensationOverM(1))


def test_wrong_symbolic_formula_is_rejected_at_fixed_sizes():
    def wrong_whitening(m_, n_):
        f = S.symbolic_fim(m_, n_)
        return f, S.kron(S.contract_cols(f, sp.eye(n_), m_, n_) / m_, sp.eye(n_))  # /m instead of /n

    with pytest.raises(DerivationMismatch):
        checks.check_fixed_size_solutions(Kronecker(Full(), Identity()), wrong_whitening, "wrong formula",
                                          shapes=((2, 3),))


def test_wrong_general_formula_is_rejected_symbolically():
    p, x = sp.MatrixSymbol("P", S.m, S.m), sp.MatrixSymbol("X", S.m, S.m)
    solution = S.solve_linear_matrix_equation(
        S.matrix_derivative(-2 * sp.Trace(x * p) + S.n * sp.Trace(x * x), x, (x, p)), x)
    with pytest.raises(DerivationMismatch):
        S.assert_zero(solution - p / S.m, "whitening with the wrong side")
