"""Alice's basis across switches (algorithms.md §5 E, I): orthonormality, recovery of a planted
subspace, and the moment/statistic options at a switch."""

from __future__ import annotations

import pytest
import torch

from fimkit.optim import Alice, AliceZero

F64 = torch.float64


def _sin_theta(u, v):
    """Largest principal-angle sine between span(u) (orthonormal) and span(v)."""
    v = torch.linalg.qr(v)[0]
    return float(torch.linalg.matrix_norm(u - v @ (v.mT @ u), ord=2))


def _planted_stream(m, n, k, steps, noise, seed, change_at=None):
    """G_t = P A_t + noise: a rank-k planted subspace P (replaced by another one at ``change_at``)."""
    gen = torch.Generator().manual_seed(seed)
    first, second = (torch.linalg.qr(torch.randn(m, k, generator=gen, dtype=F64))[0] for _ in range(2))
    strengths = torch.linspace(3, 1, k, dtype=F64)[:, None]
    grads, planted = [], []
    for t in range(1, steps + 1):
        p = second if change_at is not None and t >= change_at else first
        signal = p @ (strengths * torch.randn(k, n, generator=gen, dtype=F64))
        grads.append(signal + noise * torch.randn(m, n, generator=gen, dtype=F64))
        planted.append(p)
    return grads, planted


def _run(cls, grads, **hp):
    weight = torch.nn.Parameter(torch.zeros(grads[0].shape, dtype=F64))
    optimizer = cls([weight], **hp)
    bases = {}
    for t, g in enumerate(grads, start=1):
        weight.grad = g.clone()
        optimizer.step()
        if t == 1 or t % hp["update_interval"] == 0:
            bases[t] = optimizer.state[weight]["basis"].clone()
    return bases, optimizer.state[weight]


def test_leading_columns_recover_a_planted_subspace_after_every_switch():
    grads, planted = _planted_stream(32, 64, k=4, steps=40, noise=0.05, seed=0)
    bases, _ = _run(Alice, grads, rank=8, leading=4, update_interval=10, seed=0)
    errors = {t: _sin_theta(planted[t - 1], u[:, :4]) for t, u in bases.items()}
    assert max(errors.values()) < 0.05, errors  # measured 0.020-0.033 (noise floor)
    unrelated = torch.linalg.qr(torch.randn(32, 4, generator=torch.Generator().manual_seed(9), dtype=F64))[0]
    assert _sin_theta(unrelated, bases[40][:, :4]) > 0.5  # the measure separates subspaces


def test_alice0_recovers_a_planted_subspace_that_moved_at_the_next_switch():
    grads, planted = _planted_stream(32, 64, k=4, steps=30, noise=0.05, seed=1, change_at=25)
    bases, _ = _run(AliceZero, grads, rank=8, leading=4, update_interval=10, seed=0)
    assert _sin_theta(planted[29], bases[30][:, :4]) < 0.06
    assert _sin_theta(planted[29], bases[20][:, :4]) > 0.9  # before the move it tracked the old one


@pytest.mark.parametrize("mode", ["complement", "full_basis"])
@pytest.mark.parametrize("shape,rank,leading", [((8, 12), 3, 1), ((6, 9), 4, 2), ((12, 8), 5, 5)])
def test_basis_is_orthonormal_after_every_switch(mode, shape, rank, leading):
    gen = torch.Generator().manual_seed(2)
    grads = [torch.randn(shape, generator=gen, dtype=F64) for _ in range(13)]
    bases, _ = _run(Alice, grads, rank=rank, leading=leading, update_interval=3, switch_mode=mode, seed=1)
    for u in bases.values():
        assert torch.allclose(u.mT @ u, torch.eye(u.shape[1], dtype=F64), atol=1e-10)


def test_sampled_directions_change_from_one_switch_to_the_next():
    gen = torch.Generator().manual_seed(3)
    grads = [torch.randn(10, 14, generator=gen, dtype=F64) for _ in range(9)]
    bases, _ = _run(Alice, grads, rank=4, leading=1, update_interval=4, seed=5)
    assert _sin_theta(bases[4][:, 1:], bases[8][:, 1:]) > 0.5


def _one_switch(hp, options):
    gen = torch.Generator().manual_seed(4)
    grads = [torch.randn(7, 11, generator=gen, dtype=F64) for _ in range(4)]
    weight = torch.nn.Parameter(torch.zeros(7, 11, dtype=F64))
    optimizer = Alice([weight], **hp, **options)
    for g in grads[:3]:
        weight.grad = g.clone()
        optimizer.step()
    state = optimizer.state[weight]
    before = {k: v.clone() for k, v in state.items()}
    weight.grad = grads[3].clone()
    optimizer.step()  # t = 4 = K: a switch
    sigma = state["basis"].mT @ grads[3]
    return before, state, sigma


HP = dict(rank=3, leading=1, update_interval=4, betas=(0.8, 0.9), tracking_beta=0.7, seed=2)


def test_moments_and_tracked_statistic_are_kept_as_they_are_at_a_switch_by_default():
    before, state, sigma = _one_switch(HP, {})
    b1, b3 = HP["betas"][0], HP["tracking_beta"]
    assert torch.allclose(state["projected_exp_avg"], b1 * before["projected_exp_avg"] + (1 - b1) * sigma)
    assert torch.allclose(state["projected_gram"], b3 * before["projected_gram"] + (1 - b3) * sigma @ sigma.mT)


def test_rotating_moments_and_reprojecting_the_statistic_at_a_switch():
    before, state, sigma = _one_switch(HP, dict(rotate_moments_on_switch=True, reproject_Q_on_switch=True))
    b1, b2 = HP["betas"]
    b3 = HP["tracking_beta"]
    rotation = state["basis"].mT @ before["basis"]  # R = U_new^T U_old
    expected_mom = b1 * rotation @ before["projected_exp_avg"] + (1 - b1) * sigma
    expected_v = b2 * (rotation**2) @ before["projected_exp_avg_sq"] + (1 - b2) * sigma**2
    expected_q = b3 * rotation @ before["projected_gram"] @ rotation.mT + (1 - b3) * sigma @ sigma.mT
    assert torch.allclose(state["projected_exp_avg"], expected_mom, atol=1e-12)
    assert torch.allclose(state["projected_exp_avg_sq"], expected_v, atol=1e-12)
    assert torch.allclose(state["projected_gram"], expected_q, atol=1e-12)
