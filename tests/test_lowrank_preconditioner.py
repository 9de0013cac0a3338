"""fimkit.derive(LowRankPlusDiagonal(r)): the structure's square-root natural gradient, tracked
online with the low-rank pieces, against a reference loop."""

from __future__ import annotations

import math

import torch

import fimkit
from conftest import fit_quadratic
from fimkit.structures import LowRankPlusDiagonal

F64 = torch.float64


def test_derived_low_rank_plus_diagonal_optimizer_matches_the_reference_loop():
    m, n, r, k = 6, 9, 2, 4
    b1, b2, lr, eps = 0.9, 0.99, 0.05, 1e-8
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(m, n, generator=gen, dtype=F64) * torch.linspace(0.3, 2, n, dtype=F64) for _ in range(9)]
    derived = fimkit.derive(LowRankPlusDiagonal(r), lr=lr, betas=(b1, b2), eps=eps, update_interval=k,
                            leading=1, seed=0)
    weight = torch.nn.Parameter(torch.zeros(m, n, dtype=F64))
    optimizer = derived([weight])
    mom, d, energy = torch.zeros(m, n, dtype=F64), torch.zeros(r, n, dtype=F64), torch.zeros(n, dtype=F64)
    for t, g in enumerate(grads, start=1):
        before = weight.detach().clone()
        weight.grad = g.clone()
        optimizer.step()
        u = optimizer.state[weight]["basis"]  # the switched basis (tested in test_alice_*)
        sigma = u.mT @ g
        mom = b1 * mom + (1 - b1) * g
        d = b2 * d + (1 - b2) * sigma**2
        energy = b2 * energy + (1 - b2) * ((g**2).sum(0) - (sigma**2).sum(0))
        x = mom / (1 - b1**t)
        d_hat, o_hat = d / (1 - b2**t), energy / (1 - b2**t) / (m - r)  # Thm 5.1 from the EMAs
        step = u @ ((u.mT @ x) / (d_hat.sqrt() + eps)) + (x - u @ (u.mT @ x)) / (o_hat.sqrt() + eps)
        assert torch.allclose(weight.detach() - before, -lr * step, rtol=1e-9, atol=1e-13), f"step {t}"


def test_derived_optimizer_descends_and_declares_rank_from_the_structure():
    derived = fimkit.derive(LowRankPlusDiagonal(3), lr=0.05, update_interval=5, leading=1)
    assert derived.default_hyperparameters()["rank"] == 3
    losses, _, _ = fit_quadratic(derived, (8, 12), steps=40, target_seed=1, dtype=torch.float32)
    assert math.isfinite(losses[-1]) and losses[-1] < 0.5 * losses[0]
