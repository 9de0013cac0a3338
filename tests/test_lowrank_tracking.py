"""Subspace tracking and the eigenbasis split ([P] Prop 4 / Eq 18, Eq 19; algorithms.md §5 E)."""

from __future__ import annotations

import torch

from fimkit.lowrank.tracking import (
    change_of_basis, reconstruct_gram, rotate_first_moment, rotate_projected_gram, rotate_second_moment,
    switch_statistic, track_projected_gram,
)
from fimkit.structures import LowRankPlusDiagonal

F64 = torch.float64


def _orthogonal(k, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(k, k, generator=gen, dtype=F64))[0]


def _shared_eigenbasis_stream(m, n, steps, seed):
    """G_t = V diag(s_t) W_t^T: every G_t G_t^T has the eigenvectors V ([P] Prop 4's assumption)."""
    gen = torch.Generator().manual_seed(seed)
    v = _orthogonal(m, seed)
    grads = []
    for _ in range(steps):
        w = torch.linalg.qr(torch.randn(n, m, generator=gen, dtype=F64))[0]
        s = torch.rand(m, generator=gen, dtype=F64) * torch.linspace(4, 0.5, m, dtype=F64)
        grads.append((v * s) @ w.mT)
    return v, grads


def _ema_gram(grads, beta):
    q = torch.zeros(grads[0].shape[0], grads[0].shape[0], dtype=F64)
    for g in grads:
        q = beta * q + (1 - beta) * g @ g.mT
    return q


def test_tracked_statistic_is_the_ema_of_projected_grams():
    m, n, r, beta = 6, 9, 2, 0.9
    _, grads = _shared_eigenbasis_stream(m, n, 5, seed=0)
    basis = _orthogonal(m, 1)[:, :r]
    tracked = torch.zeros(r, r, dtype=F64)
    expected = torch.zeros(r, r, dtype=F64)
    for g in grads:
        track_projected_gram(tracked, basis.mT @ g, beta)
        sigma = basis.mT @ g
        expected = beta * expected + (1 - beta) * sigma @ sigma.mT
    assert torch.allclose(tracked, expected, atol=1e-14)


def test_shared_eigenbasis_gives_no_cross_terms_between_subspace_and_complement():
    m, n, r, beta = 7, 10, 3, 0.8
    v, grads = _shared_eigenbasis_stream(m, n, 6, seed=2)
    basis, complement = v[:, :r], v[:, r:]
    q = _ema_gram(grads, beta)
    tracked = torch.zeros(r, r, dtype=F64)
    for g in grads:
        track_projected_gram(tracked, basis.mT @ g, beta)
    rest = q - reconstruct_gram(basis, tracked)
    # Eq 18: Q = U Qt U^T + U_c Sigma U_c^T with nothing in the U block or across.
    assert (basis.mT @ rest).abs().max() < 1e-12
    assert torch.allclose(rest, complement @ (complement.mT @ q @ complement) @ complement.mT, atol=1e-12)
    for g in grads:  # and per step: (U sigma)(U_c sigma_c)^T = 0
        assert ((basis.mT @ g) @ (complement.mT @ g).mT).abs().max() < 1e-12


def test_without_a_shared_eigenbasis_the_cross_terms_do_not_vanish():
    m, n, r = 7, 10, 3
    gen = torch.Generator().manual_seed(3)
    grads = [torch.randn(m, n, generator=gen, dtype=F64) for _ in range(4)]
    basis = _orthogonal(m, 4)[:, :r]
    q = _ema_gram(grads, 0.8)
    tracked = basis.mT @ q @ basis
    assert (basis.mT @ (q - reconstruct_gram(basis, tracked))).abs().max() > 1e-3


def test_switch_statistic_mixes_tracked_gram_and_current_gradient():
    m, n, r, beta = 5, 8, 2, 0.999
    gen = torch.Generator().manual_seed(4)
    g = torch.randn(m, n, generator=gen, dtype=F64)
    basis = _orthogonal(m, 5)[:, :r]
    tracked = torch.randn(r, r, generator=gen, dtype=F64)
    tracked = tracked @ tracked.mT
    expected = beta * basis @ tracked @ basis.mT + (1 - beta) * g @ g.mT
    assert torch.allclose(switch_statistic(g, beta, basis, tracked), expected, atol=1e-14)
    assert torch.allclose(switch_statistic(g, 0.0), g @ g.mT, atol=1e-14)


def test_eigen_adam_step_splits_into_the_subspace_part_and_the_complement_part():
    """Eq 19, and Eq 21: the compensation replaces the complement's eigenvalues by their mean."""
    m, n, r = 6, 5, 2
    gen = torch.Generator().manual_seed(5)
    full_basis = _orthogonal(m, 6)
    basis, complement = full_basis[:, :r], full_basis[:, r:]
    g = torch.randn(m, n, generator=gen, dtype=F64)
    d_full = torch.rand(m, n, generator=gen, dtype=F64) + 0.1
    eigen_adam = full_basis @ ((full_basis.mT @ g) / d_full.sqrt())
    split = basis @ ((basis.mT @ g) / d_full[:r].sqrt()) + complement @ ((complement.mT @ g) / d_full[r:].sqrt())
    assert torch.allclose(eigen_adam, split, atol=1e-12)

    o = d_full[r:].mean(0)  # one eigenvalue per column on the complement
    d_compensated = torch.cat([d_full[:r], o.expand(m - r, n)])
    expected = full_basis @ ((full_basis.mT @ g) / d_compensated.sqrt())
    params = {"basis": basis, "d": d_full[:r], "compensation": o}
    assert torch.allclose(LowRankPlusDiagonal(r).precondition(params, g), expected, atol=1e-12)


def test_rotating_coordinates_within_the_same_subspace_preserves_the_lifted_moment():
    m, r = 8, 3
    old = _orthogonal(m, 7)[:, :r]
    new = old @ _orthogonal(r, 8)  # same subspace, another basis of it
    gen = torch.Generator().manual_seed(9)
    moment = torch.randn(r, 4, generator=gen, dtype=F64)
    rotation = change_of_basis(new, old)
    assert torch.allclose(new @ rotate_first_moment(rotation, moment), old @ moment, atol=1e-12)
    gram = moment @ moment.mT
    assert torch.allclose(reconstruct_gram(new, rotate_projected_gram(rotation, gram)),
                          reconstruct_gram(old, gram), atol=1e-12)


def test_second_moment_rotation_is_exact_for_a_permutation_of_the_basis():
    m, r = 6, 3
    old = _orthogonal(m, 10)[:, :r]
    permutation = torch.tensor([2, 0, 1])
    new = old[:, permutation]
    v = torch.rand(r, 5, dtype=F64)
    assert torch.allclose(rotate_second_moment(change_of_basis(new, old), v), v[permutation], atol=1e-14)
