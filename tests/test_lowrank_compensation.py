"""Compensation pieces ([P] Alg 3, Thm 5.1; algorithms.md §5 E): identity, U^T C = 0, fused lift."""

from __future__ import annotations

import torch

from fimkit.lowrank.compensation import (
    back_project, column_norm_ratio, optimal_column_scale, residual_energy, scaled_residual_norm,
    tensor_norm_ratio,
)
from fimkit.structures import LowRankPlusDiagonal

F64 = torch.float64


def _setup(m=7, n=5, r=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    full = torch.linalg.qr(torch.randn(m, m, generator=gen, dtype=F64))[0]
    basis, complement = full[:, :r], full[:, r:]
    grad = torch.randn(m, n, generator=gen, dtype=F64) * torch.linspace(0.2, 3.0, n, dtype=F64)
    return gen, basis, complement, grad


def test_complement_energy_identity_matches_an_explicit_complement():
    _, basis, complement, grad = _setup()
    sigma = basis.mT @ grad
    explicit = (complement.mT @ grad).square().sum(0)  # colsum((U_c^T G)^2)
    assert torch.allclose(residual_energy(grad, sigma), explicit, atol=1e-12)
    assert torch.allclose(residual_energy(grad, sigma, basis), explicit, atol=1e-12)


def test_optimal_compensation_is_orthogonal_to_the_basis_and_equals_the_structure_step():
    _, basis, _, grad = _setup(seed=1)
    m, r = basis.shape
    sigma = basis.mT @ grad
    p = residual_energy(grad, sigma) * 1.3 + 0.1  # any positive EMA of the complement energy
    compensation = (grad - basis @ sigma) * optimal_column_scale(p, m - r, eps=0.0)  # Alg 3's C
    assert (basis.mT @ compensation).abs().max() < 1e-12
    # C = (G - U U^T G) / sqrt(o) with Thm 5.1's o = p / (m - r): the structure's complement step.
    params = {"basis": basis, "d": torch.ones(r, grad.shape[1], dtype=F64), "compensation": p / (m - r)}
    structure_part = LowRankPlusDiagonal(r).precondition(params, grad) - basis @ sigma
    assert torch.allclose(compensation, structure_part, atol=1e-12)


def test_eps_sits_inside_the_root_of_the_compensation_scale():
    p = torch.tensor([0.0, 3.0], dtype=F64)
    assert torch.allclose(optimal_column_scale(p, 4, eps=1.0), 2.0 / torch.tensor([1.0, 2.0], dtype=F64))


def test_fused_back_projection_equals_the_materialised_residual():
    gen, basis, _, grad = _setup(seed=2)
    sigma = basis.mT @ grad
    direction = torch.randn(sigma.shape, generator=gen, dtype=F64)
    c = torch.rand(grad.shape[1], generator=gen, dtype=F64)
    expected = basis @ direction + (grad - basis @ sigma) * c
    assert torch.allclose(back_project(basis, direction, grad, sigma, c), expected, atol=1e-12)
    skewed = basis + 0.3 * torch.randn(basis.shape, generator=gen, dtype=F64)  # any basis, not only orthonormal
    sigma = skewed.mT @ grad
    expected = skewed @ direction + (grad - skewed @ sigma) * c
    assert torch.allclose(back_project(skewed, direction, grad, sigma, c), expected, atol=1e-12)


def test_scaled_residual_norm_from_column_energies_equals_the_direct_norm():
    gen, basis, _, grad = _setup(seed=3)
    sigma = basis.mT @ grad
    c = torch.rand(grad.shape[1], generator=gen, dtype=F64)
    direct = torch.linalg.matrix_norm((grad - basis @ sigma) * c)
    assert torch.allclose(scaled_residual_norm(residual_energy(grad, sigma), c), direct, atol=1e-12)


def test_norm_ratios_are_column_and_tensor_norm_quotients():
    gen = torch.Generator().manual_seed(4)
    direction, sigma = torch.randn(2, 3, 6, generator=gen, dtype=F64)
    expected = direction.norm(dim=0) / (sigma.norm(dim=0) + 1e-8)
    assert torch.allclose(column_norm_ratio(direction, sigma), expected)
    assert torch.allclose(tensor_norm_ratio(direction, sigma), direction.norm() / (sigma.norm() + 1e-8))
