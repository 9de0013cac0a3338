"""The structures' optimizer-facing side: matrix-free preconditioning, online estimators, state."""

from __future__ import annotations

import pytest
import torch
from conftest import gradient_samples

from fimkit import empirical_fim, solve
from fimkit.structures import (
    Diagonal, DiagonalFactor, EigenvalueCorrected, Full, Identity, Kronecker, RowColumn,
)
from fimkit.structures.base import DENSE_FALLBACK_LIMIT, ParamSpec, Structure

FAMILIES = [Full(), DiagonalFactor(), Identity()]
STRUCTURES = [Diagonal(), EigenvalueCorrected(), EigenvalueCorrected(Kronecker(Full(), Identity()))] + [
    Kronecker(r, c) for r in FAMILIES for c in FAMILIES
]


def _dense_inverse_power_step(matrix, grad, power, eps):
    """Oracle: Mat((F~ + eps I)^{-power} vec(G)) by a dense eigendecomposition (pseudo-inverse)."""
    evals, evecs = torch.linalg.eigh(matrix)
    shifted = evals.clamp_min(0) + eps
    inv = torch.where(shifted > 1e-12 * shifted.max(), shifted.clamp_min(1e-300) ** -power, 0.0)
    return (evecs @ (inv * (evecs.mT @ grad.reshape(-1)))).reshape(grad.shape)


@pytest.mark.parametrize("power", [0.5, 0.25, 1.0])
@pytest.mark.parametrize("structure", STRUCTURES, ids=repr)
def test_matrix_free_precondition_equals_dense_inverse_power(structure, power):
    m, n = 3, 4
    grads = gradient_samples(m, n)
    approx = solve(structure, grads)
    g = grads[0]
    expected = _dense_inverse_power_step(approx.matrix, g, power, eps=0.0)
    torch.testing.assert_close(structure.precondition(approx.params, g, power, 0.0), expected,
                               rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("structure", [Kronecker(r, c) for r in FAMILIES for c in FAMILIES], ids=repr)
def test_kronecker_eps_is_added_to_the_eigenvalues_of_the_product(structure):
    grads = gradient_samples(3, 4)
    approx = solve(structure, grads)
    expected = _dense_inverse_power_step(approx.matrix, grads[0], 0.5, eps=0.3)
    torch.testing.assert_close(structure.precondition(approx.params, grads[0], 0.5, 0.3), expected)


@pytest.mark.parametrize("structure", STRUCTURES, ids=repr)
def test_matrix_free_quadratic_form_and_norm_equal_the_dense_ones(structure):
    m, n = 3, 4
    grads = gradient_samples(m, n)
    approx = solve(structure, grads)
    vecs = grads.reshape(len(grads), -1)
    torch.testing.assert_close(structure.quadratic_form(approx.params, grads),
                               ((vecs @ approx.matrix) * vecs).sum(-1))
    torch.testing.assert_close(structure.frobenius_sq(approx.params, m, n), approx.matrix.square().sum())


@pytest.mark.parametrize("structure", [Diagonal()] + [Kronecker(r, c, estimator="exact")
                                                      for r in FAMILIES for c in FAMILIES], ids=repr)
def test_exact_estimator_on_averaged_statistics_is_the_frobenius_optimum(structure):
    m, n = 3, 4
    grads = gradient_samples(m, n)
    stats = {k: v.mean(0) for k, v in structure.statistics(grads).items()}
    online = structure.dense(structure.fit(stats, m, n), m, n)
    torch.testing.assert_close(online, solve(structure, grads).matrix)


@pytest.mark.parametrize("family", [Full(), DiagonalFactor()], ids=repr)
def test_marginal_estimator_is_exact_for_one_sided_structures(family):
    m, n = 3, 4
    grads = gradient_samples(m, n)
    for structure in (Kronecker(family, Identity(), estimator="marginal"),
                      Kronecker(Identity(), family, estimator="marginal")):
        stats = {k: v.mean(0) for k, v in structure.statistics(grads).items()}
        torch.testing.assert_close(structure.dense(structure.fit(stats, m, n), m, n),
                                   solve(structure, grads).matrix)


def test_marginal_row_column_estimator_is_adafactors_factored_second_moment():
    grads = gradient_samples(3, 4)
    structure = RowColumn(estimator="marginal")
    stats = {k: v.mean(0) for k, v in structure.statistics(grads).items()}
    params = structure.fit(stats, 3, 4)
    second_moment = grads.square().mean(0)
    rows, cols = second_moment.sum(1), second_moment.sum(0)
    torch.testing.assert_close(torch.outer(params["rows"], params["cols"]), torch.outer(rows, cols) / rows.sum())


def test_per_sample_row_column_estimator_fits_each_gradient_then_averages_the_factors():
    grads = gradient_samples(3, 4, k=2)
    structure = RowColumn(estimator="per_sample", fixed_point_iters=200)
    stats = structure.statistics(grads[0])
    u, sigma, vh = torch.linalg.svd(grads[0].square())
    torch.testing.assert_close(torch.outer(stats["rows"], stats["cols"]), sigma[0] * torch.outer(u[:, 0], vh[0]))


STATE_FORMULAS = [
    (Diagonal(), lambda m, n: m * n),
    (RowColumn(), lambda m, n: m * n),
    (RowColumn(estimator="per_sample"), lambda m, n: m + n),
    (RowColumn(estimator="marginal"), lambda m, n: m + n),
    (Kronecker(Full(), Full()), lambda m, n: m * m + n * n),
    (Kronecker(Full(), Identity()), lambda m, n: m * m),
    (Kronecker(Identity(), DiagonalFactor()), lambda m, n: n),
    (Kronecker(Full(), DiagonalFactor(), estimator="exact"), lambda m, n: m * m * n),
    (EigenvalueCorrected(), lambda m, n: m * n + 2 * m * m + 2 * n * n),
    (EigenvalueCorrected(Kronecker(Full(), Identity())), lambda m, n: m * n + 2 * m * m),
]


@pytest.mark.parametrize("structure, expected", STATE_FORMULAS, ids=[repr(s) for s, _ in STATE_FORMULAS])
def test_state_numel_matches_the_formula(structure, expected):
    for m, n in [(3, 5), (16, 8)]:
        assert structure.state_numel(m, n) == expected(m, n)


def test_structures_are_hashable_frozen_and_compare_by_value():
    assert RowColumn() == Kronecker(DiagonalFactor(), DiagonalFactor())
    assert len({Diagonal(), Diagonal(), RowColumn()}) == 2
    with pytest.raises(AttributeError):
        RowColumn().rows = Full()


def test_kronecker_rejects_a_side_that_is_not_a_factor_family():
    with pytest.raises(TypeError, match="factor family"):
        Kronecker(Full(), Diagonal())


def test_kronecker_rejects_an_unknown_estimator():
    with pytest.raises(ValueError, match="estimator"):
        Kronecker(Full(), Full(), estimator="magic")


# ------------------------------------------------------------------ a user's new structure
class RowScaling(Structure):
    """Written as a user would, family only: F~ = kron(diag(a), I). Equals the built-in
    Kronecker(DiagonalFactor(), Identity()), which gives us an oracle."""

    def parameter_spec(self, m, n):
        return {"a": ParamSpec((m,), "positive")}

    def dense(self, params, m, n):
        return torch.kron(torch.diag(params["a"]), torch.eye(n, dtype=params["a"].dtype))


def test_a_users_structure_is_solved_by_the_generic_solver():
    grads = gradient_samples(3, 4)
    approx = solve(RowScaling(), grads)
    assert approx.solver == "generic"
    torch.testing.assert_close(approx.matrix, solve(Kronecker(DiagonalFactor(), Identity()), grads).matrix,
                               rtol=1e-6, atol=1e-9)


def test_a_users_structure_preconditions_through_its_dense_matrix():
    grads = gradient_samples(3, 4)
    approx = solve(RowScaling(), grads)
    builtin = Kronecker(DiagonalFactor(), Identity())
    torch.testing.assert_close(RowScaling().precondition(approx.params, grads[0], 0.5),
                               builtin.precondition(solve(builtin, grads).params, grads[0], 0.5),
                               rtol=1e-5, atol=1e-8)


def test_dense_fallback_refuses_large_weights_and_says_what_to_do():
    big = int(DENSE_FALLBACK_LIMIT**0.5) + 1
    with pytest.raises(ValueError, match="Override statistics"):
        RowScaling().statistics(torch.zeros(big, big))


def test_empirical_fim_is_the_mean_outer_product_of_row_major_vecs():
    grads = gradient_samples(2, 3, k=5)
    fim = empirical_fim(grads)
    assert fim[1 * 3 + 2, 0] == pytest.approx(float((grads[:, 1, 2] * grads[:, 0, 0]).mean()))


@pytest.mark.parametrize("rows", [DiagonalFactor(), Identity()], ids=lambda f: type(f).__name__)
@pytest.mark.parametrize("cols", [DiagonalFactor(), Identity()], ids=lambda f: type(f).__name__)
def test_moment_of_sides_without_a_full_factor_equals_its_einsum_definition(rows, cols):
    from fimkit.structures.kronecker import _subscripts, kronecker_moment

    grads = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a, b, kept = _subscripts(rows, cols)
    expected = torch.einsum(f"...{a},...{b}->...{kept}", grads, grads)
    assert torch.allclose(kronecker_moment(rows, cols, grads), expected, rtol=1e-14)


def test_row_column_preconditioning_is_differentiable_in_its_factors():
    from fimkit.structures import RowColumn

    q = torch.rand(4, dtype=torch.float64, requires_grad=True)
    s = torch.rand(5, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(4, 5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: RowColumn().precondition({"rows": a, "cols": b}, grad, 0.5, 1e-8),
                                    (q, s))
