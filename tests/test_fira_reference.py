"""Fira against a reference loop written from its equations (GaLore + norm-ratio residual + limiter)."""

from __future__ import annotations

import math

import torch
from test_galore_reference import parameter_changes

from fimkit.optim import Fira, GaLore

F64 = torch.float64


def reference_fira(grads, lr, alpha, rank, update_interval, betas, eps, gamma):
    b1, b2 = betas
    n = grads[0].shape[1]
    mom, v = torch.zeros(rank, n, dtype=F64), torch.zeros(rank, n, dtype=F64)
    u, phi, changes = None, None, []
    for t, g in enumerate(grads, start=1):
        if t == 1 or t % update_interval == 0:
            u = torch.linalg.svd(g, full_matrices=False)[0][:, :rank]
        sigma = u.mT @ g
        mom = b1 * mom + (1 - b1) * sigma
        v = b2 * v + (1 - b2) * sigma**2
        omega = mom / (v.sqrt() + eps)
        ratio = omega.norm(dim=0) / (sigma.norm(dim=0) + 1e-8)  # one factor per column
        scaled = (g - u @ sigma) * ratio
        norm = float(scaled.norm())
        if phi is None:  # first step: no limit
            phi = norm
        else:
            limit = max(norm / phi, gamma) / gamma
            scaled, phi = scaled / limit, norm / limit
        step_size = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
        changes.append(-step_size * (alpha * u @ omega + scaled))
    return changes


HP = dict(lr=0.05, alpha=0.3, rank=2, update_interval=4, betas=(0.9, 0.999), eps=1e-6, gamma=1.01)


def test_fira_matches_the_reference_loop_across_basis_refreshes():
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(6, 10, generator=gen, dtype=F64) * (1 + t) for t in range(10)]  # growing: limiter acts
    expected = reference_fira(grads, **HP)
    for got, want in zip(parameter_changes(Fira, grads, **HP)[0], expected):
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-13)


def test_fira_is_galore_plus_a_term_outside_the_subspace():
    gen = torch.Generator().manual_seed(1)
    grads = [torch.randn(6, 10, generator=gen, dtype=F64) for _ in range(3)]
    galore, _ = parameter_changes(GaLore, grads, **{k: v for k, v in HP.items() if k != "gamma"})
    fira, _ = parameter_changes(Fira, grads, **HP)
    u = torch.linalg.svd(grads[0], full_matrices=False)[0][:, :2]
    for g_change, f_change in zip(galore, fira):
        assert torch.allclose(u.mT @ f_change, u.mT @ g_change, atol=1e-13)
        assert float((f_change - g_change).norm()) > 1e-3
