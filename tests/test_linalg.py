"""Numerical building blocks (algorithms.md §3) against direct computations."""

from __future__ import annotations

import pytest
import torch

from fimkit.linalg import (
    eigh_descending, fixed_point_rank1, inverse_power, newton_schulz_inv_sqrt, norm_growth_limiter,
    psd_matrix_power, qr_complement, subspace_iteration,
)


def _spd(k, seed=0, gap=None):
    gen = torch.Generator().manual_seed(seed)
    q = torch.linalg.qr(torch.randn(k, k, generator=gen, dtype=torch.float64))[0]
    evals = torch.logspace(0, -2, k, dtype=torch.float64) if gap is None else gap
    return q @ torch.diag(evals) @ q.mT, q, evals


def test_eigh_descending_orders_eigenvalues_from_largest():
    a, _, evals = _spd(5)
    values, vectors = eigh_descending(a)
    torch.testing.assert_close(values, evals)
    torch.testing.assert_close(vectors @ torch.diag(values) @ vectors.mT, a)


def test_inverse_power_treats_zero_as_outside_the_range():
    x = torch.tensor([4.0, 0.0, -1e-20])
    torch.testing.assert_close(inverse_power(x, 0.5), torch.tensor([0.5, 0.0, 0.0]))


SPECIAL_VALUES = [4.0, 0.0, -0.0, -1.0, float("inf"), -float("inf"), float("nan"), 1e-45, 1e-38, 3e38]


@pytest.mark.parametrize("power", [0.5, 1.0, 0.25])
@pytest.mark.parametrize("eps", [0.0, 1e-30])
def test_inverse_power_matches_the_masked_definition_bit_for_bit(power, eps):
    x = torch.tensor(SPECIAL_VALUES)
    shifted = x + eps
    masked = torch.where(shifted > 0, shifted, torch.inf)
    expected = {0.5: torch.rsqrt, 1.0: torch.reciprocal}.get(power, lambda t: t.pow(-power))(masked)
    assert torch.equal(inverse_power(x, power, eps), expected)


def test_inverse_power_leaves_its_input_alone_unless_told_to_overwrite():
    x = torch.tensor(SPECIAL_VALUES)
    kept = x.clone()
    inverse_power(x, 0.5)
    assert torch.equal(x.nan_to_num(), kept.nan_to_num())
    out = inverse_power(x, 0.5, overwrite=True)
    assert out.data_ptr() == x.data_ptr()


def test_psd_matrix_power_inverts_the_square_root():
    a, _, _ = _spd(4)
    torch.testing.assert_close(psd_matrix_power(a, -0.5) @ psd_matrix_power(a, 0.5), torch.eye(4, dtype=torch.float64))


def test_fixed_point_rank1_converges_to_the_principal_singular_pair():
    p = torch.rand(5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    s, q = fixed_point_rank1(p, iters=200)
    u, sigma, vh = torch.linalg.svd(p)
    torch.testing.assert_close(torch.outer(q, s), sigma[0] * torch.outer(u[:, 0], vh[0]), rtol=1e-12, atol=1e-12)


def test_fixed_point_rank1_is_batched_over_leading_dimensions():
    p = torch.rand(3, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    s, q = fixed_point_rank1(p, iters=5)
    for i in range(3):
        s_i, q_i = fixed_point_rank1(p[i], iters=5)
        torch.testing.assert_close(s[i], s_i)
        torch.testing.assert_close(q[i], q_i)


def test_qr_complement_spans_the_orthogonal_complement():
    u = torch.linalg.qr(torch.randn(6, 2, dtype=torch.float64))[0]
    c = qr_complement(u)
    assert c.shape == (6, 4)
    torch.testing.assert_close(c.mT @ c, torch.eye(4, dtype=torch.float64))
    torch.testing.assert_close(u.mT @ c, torch.zeros(2, 4, dtype=torch.float64))


def test_one_subspace_iteration_from_a_warm_start_recovers_top_eigenvectors_with_a_large_gap():
    gap = torch.tensor([100.0, 50.0, 1.0, 0.5, 0.1, 0.01], dtype=torch.float64)
    a, q, _ = _spd(6, gap=gap)
    warm = torch.linalg.qr(q[:, :2] + 0.05 * torch.randn(6, 2, dtype=torch.float64))[0]
    ritz_vectors, ritz_values = subspace_iteration(a, warm, iters=1)
    projector_error = ritz_vectors @ ritz_vectors.mT - q[:, :2] @ q[:, :2].mT
    assert projector_error.norm() < 1e-2
    assert (ritz_values[:-1] >= ritz_values[1:]).all()


def test_newton_schulz_converges_to_the_inverse_square_root():
    a, _, _ = _spd(5)
    torch.testing.assert_close(newton_schulz_inv_sqrt(a, iters=40), psd_matrix_power(a, -0.5), rtol=1e-8, atol=1e-8)


def test_newton_schulz_step_half_is_the_classical_iteration():
    a, _, _ = _spd(4)
    norm = a.norm()
    y, z, eye = a / norm, torch.eye(4, dtype=torch.float64), torch.eye(4, dtype=torch.float64)
    for _ in range(3):
        t = 3 * eye - z @ y
        y, z = 0.5 * y @ t, 0.5 * t @ z
    torch.testing.assert_close(newton_schulz_inv_sqrt(a, iters=3, step=0.5), z / norm.sqrt())


def test_limiter_caps_growth_at_gamma_and_is_inactive_when_the_norm_shrinks():
    x = torch.ones(2, 2)  # norm 2
    eta, phi = norm_growth_limiter(x, torch.tensor(1.0), gamma=1.01, first=False)
    assert float(eta * x.norm()) <= 1.01 + 1e-6 and float(phi) == float(eta * x.norm())
    eta, _ = norm_growth_limiter(x, torch.tensor(5.0), gamma=1.01, first=False)
    assert float(eta) == 1.0
    eta, phi = norm_growth_limiter(x, torch.tensor(0.0), gamma=1.01, first=torch.tensor(True))
    assert float(eta) == 1.0 and float(phi) == 2.0


@pytest.mark.parametrize("eps", [0.0, 1e-3])
def test_inverse_power_differentiates_as_the_masked_definition(eps):
    x = torch.tensor([4.0, 0.0, 2.5, -1.0], dtype=torch.float64, requires_grad=True)
    inverse_power(x, 0.5, eps).sum().backward()
    y = x.detach().clone().requires_grad_()
    shifted = y + eps
    torch.where(shifted > 0, shifted, torch.inf).rsqrt().sum().backward()
    assert torch.equal(x.grad, y.grad) and torch.isfinite(x.grad).all()
