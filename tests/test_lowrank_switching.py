"""Subspace switching ([P] Alg 4, Alg 10; algorithms.md §5 E, J): the pieces of fimkit.lowrank.switching."""

from __future__ import annotations

import pytest
import torch

from fimkit.linalg import subspace_iteration
from fimkit.lowrank.switching import (
    gaussian_projection, sample_columns, switch_basis, switch_generator, top_eigenvectors,
    top_left_singular_vectors,
)

F64 = torch.float64


def _psd(m, seed, spectrum=None):
    gen = torch.Generator().manual_seed(seed)
    q = torch.linalg.qr(torch.randn(m, m, generator=gen, dtype=F64))[0]
    if spectrum is None:
        spectrum = torch.linspace(10.0, 0.5, m, dtype=F64) ** 2
    return (q * spectrum) @ q.mT, q


def _orthonormal(m, r, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(m, r, generator=gen, dtype=F64))[0]


def _ritz_oracle(a, u):
    """Alg 10 written out: one QR step, then the eigenvectors of the projected matrix, descending."""
    q, _ = torch.linalg.qr(a @ u)
    evals, evecs = torch.linalg.eigh(q.mT @ a @ q)
    order = torch.argsort(evals, descending=True)
    return q @ evecs[:, order], evals[order]


def _same_columns_up_to_sign(a, b, atol=1e-10):
    return torch.allclose((a * b).sum(0).abs(), torch.ones(a.shape[1], dtype=a.dtype), atol=atol)


def _sin_theta(u, v):
    """Spectral norm of (I - P_v) u: the largest principal-angle sine between span(u) and span(v)."""
    v_orth = torch.linalg.qr(v)[0]
    return torch.linalg.matrix_norm(u - v_orth @ (v_orth.mT @ u), ord=2)


def test_subspace_iteration_from_a_warm_start_recovers_top_eigenvectors_with_a_large_gap():
    m, r = 12, 3
    spectrum = torch.tensor([100.0, 90.0, 80.0] + [1.0] * (m - r), dtype=F64)
    a, q = _psd(m, seed=1, spectrum=spectrum)
    top = q[:, :r]
    gen = torch.Generator().manual_seed(2)
    warm = torch.linalg.qr(top + 0.2 * torch.randn(m, r, generator=gen, dtype=F64))[0]
    ritz_vectors, ritz_values = subspace_iteration(a, warm, iters=1)
    # Classical bound for one step: tan(theta_1) <= (lambda_{r+1} / lambda_r) tan(theta_0).
    cos0 = torch.linalg.svdvals(top.mT @ warm).min()
    tan0 = (1 - cos0**2).sqrt() / cos0
    assert tan0 > 0.3  # a genuinely rough start
    assert _sin_theta(top, ritz_vectors) <= tan0 / 80.0
    assert torch.all(ritz_values[:-1] >= ritz_values[1:])
    assert torch.allclose(ritz_values, spectrum[:r], rtol=1e-3)


@pytest.mark.parametrize("m,r,leading", [(10, 4, 2), (7, 3, 1), (6, 5, 2), (5, 5, 3)])
def test_switch_keeps_the_top_leading_ritz_vectors_and_is_orthonormal(m, r, leading):
    q, _ = _psd(m, seed=m + r)
    previous = _orthonormal(m, r, seed=3)
    new = switch_basis(q, previous, leading, "complement", switch_generator(7, 200), first=False)
    ritz, _ = _ritz_oracle(q, previous)
    assert new.shape == (m, r)
    assert torch.allclose(new.mT @ new, torch.eye(r, dtype=F64), atol=1e-12)
    assert _same_columns_up_to_sign(new[:, :leading], ritz[:, :leading])


def test_sampled_columns_are_orthogonal_to_the_whole_ritz_subspace():
    m, r, leading = 12, 5, 2
    q, _ = _psd(m, seed=4)
    previous = _orthonormal(m, r, seed=5)
    new = switch_basis(q, previous, leading, "complement", switch_generator(1, 400), first=False)
    ritz, _ = _ritz_oracle(q, previous)
    assert (ritz.mT @ new[:, leading:]).abs().max() < 1e-12


def test_too_small_a_complement_is_taken_whole_and_filled_with_the_next_ritz_vectors():
    m, r, leading = 6, 5, 2  # m - r = 1 < r - l = 3
    q, _ = _psd(m, seed=6)
    previous = _orthonormal(m, r, seed=7)
    new = switch_basis(q, previous, leading, "complement", switch_generator(0, 200), first=False)
    ritz, _ = _ritz_oracle(q, previous)
    assert _same_columns_up_to_sign(new[:, :4], ritz[:, :4])
    assert (ritz.mT @ new[:, 4:]).abs().max() < 1e-12
    assert torch.allclose(new.mT @ new, torch.eye(r, dtype=F64), atol=1e-12)


def test_first_switch_takes_the_exact_top_eigenvectors():
    m, r, leading = 9, 4, 3
    q, eigvecs = _psd(m, seed=8)
    new = switch_basis(q, torch.zeros(m, r, dtype=F64), leading, "complement", switch_generator(0, 1), first=True)
    assert _same_columns_up_to_sign(new[:, :leading], eigvecs[:, :leading])
    assert (eigvecs[:, :r].mT @ new[:, leading:]).abs().max() < 1e-12  # sampled outside the top r


def test_full_basis_mode_samples_from_everything_but_the_leading_vectors():
    m, r, leading = 6, 3, 1
    q, _ = _psd(m, seed=9)
    previous = _orthonormal(m, r, seed=10)
    ritz, _ = _ritz_oracle(q, previous)
    hits_non_leading_ritz = 0
    for seed in range(20):
        new = switch_basis(q, previous, leading, "full_basis", switch_generator(seed, 200), first=False)
        assert torch.allclose(new.mT @ new, torch.eye(r, dtype=F64), atol=1e-12)
        assert _same_columns_up_to_sign(new[:, :1], ritz[:, :1])
        hits_non_leading_ritz += int((ritz[:, 1:].mT @ new[:, 1:]).abs().max() > 0.5)
    assert 0 < hits_non_leading_ritz < 20  # unlike "complement", Ritz vectors l..r can be drawn


def test_gaussian_modes_use_unit_norm_columns_and_gaussian_mix_keeps_the_leading_ritz_vectors():
    m, r, leading = 10, 4, 2
    q, _ = _psd(m, seed=11)
    previous = _orthonormal(m, r, seed=12)
    ritz, _ = _ritz_oracle(q, previous)
    for mode in ("gaussian", "gaussian_mix"):
        new = switch_basis(q, previous, leading, mode, switch_generator(3, 200), first=False)
        assert torch.allclose(torch.linalg.vector_norm(new, dim=0), torch.ones(r, dtype=F64))
    mix = switch_basis(q, previous, leading, "gaussian_mix", switch_generator(3, 200), first=False)
    assert _same_columns_up_to_sign(mix[:, :leading], ritz[:, :leading])


def test_unknown_switch_mode_is_rejected():
    q, _ = _psd(5, seed=0)
    with pytest.raises(ValueError, match="switch_mode"):
        switch_basis(q, _orthonormal(5, 2, 0), 1, "eigen", switch_generator(0, 1), first=True)


def test_switch_draws_depend_only_on_seed_and_step():
    draw = lambda seed, step: sample_columns(torch.eye(50, dtype=F64), 5, switch_generator(seed, step))
    assert torch.equal(draw(4, 200), draw(4, 200))
    assert not torch.equal(draw(4, 200), draw(4, 400))
    assert not torch.equal(draw(4, 200), draw(5, 200))


def test_top_eigenvectors_and_top_left_singular_vectors_span_the_same_subspace():
    gen = torch.Generator().manual_seed(13)
    g = torch.randn(6, 9, generator=gen, dtype=F64) * torch.linspace(3, 0.5, 6, dtype=F64)[:, None]
    u_svd = top_left_singular_vectors(g, 3)
    u_eig = top_eigenvectors(g @ g.mT, 3)
    assert _same_columns_up_to_sign(u_svd, u_eig, atol=1e-8)


def test_gaussian_projection_has_variance_one_over_rank():
    p = gaussian_projection(400, 50, switch_generator(0, 1), torch.zeros((), dtype=F64))
    assert p.shape == (400, 50)
    assert abs(float(p.var()) * 50 - 1.0) < 0.03
