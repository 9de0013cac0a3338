"""GaLore against a reference loop of [P] Alg 8 with official GaLore's bias correction."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import run_updates

from fimkit.optim import GaLore, paper_hparams

F64 = torch.float64


def parameter_changes(cls, grads, **hp):
    """Feed the (float64) gradients to ``cls`` on a zero weight; the parameter change of every
    step and the final state."""
    changes, optimizer, weight = run_updates(cls, grads, **hp)
    return changes, optimizer.state[weight]


def reference_galore(grads, lr, alpha, rank, k, betas, eps, bias_correction=True):
    """W -= lr sqrt(1-b2^t)/(1-b1^t) alpha U (m / (sqrt(v) + eps)), U = SVD(G)[:, :r] at t = 1, t % K = 0
    (without the bias-correction factor when ``bias_correction`` is False)."""
    b1, b2 = betas
    n = grads[0].shape[1]
    mom, v = torch.zeros(rank, n, dtype=F64), torch.zeros(rank, n, dtype=F64)
    u, changes = None, []
    for t, g in enumerate(grads, start=1):
        if t == 1 or t % k == 0:
            u = torch.linalg.svd(g, full_matrices=False)[0][:, :rank]
        sigma = u.mT @ g
        mom = b1 * mom + (1 - b1) * sigma
        v = b2 * v + (1 - b2) * sigma**2
        step_size = lr * math.sqrt(1 - b2**t) / (1 - b1**t) if bias_correction else lr
        changes.append(-step_size * alpha * u @ (mom / (v.sqrt() + eps)))
    return changes


@pytest.mark.parametrize("shape", [(6, 10), (10, 6)])
def test_galore_matches_the_reference_loop_across_basis_refreshes(shape):
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(shape, generator=gen, dtype=F64) for _ in range(10)]
    hp = dict(lr=0.05, alpha=0.3, rank=2, update_interval=4, betas=(0.9, 0.999), eps=1e-6)
    weight = torch.nn.Parameter(torch.zeros(shape, dtype=F64))
    optimizer = GaLore([weight], **hp)
    tall = shape[0] > shape[1]
    short_side = [g.mT if tall else g for g in grads]  # GaLore projects the short side
    expected = reference_galore(short_side, hp["lr"], hp["alpha"], hp["rank"], hp["update_interval"],
                                hp["betas"], hp["eps"])
    for g, want in zip(grads, expected):
        before = weight.detach().clone()
        weight.grad = g.clone()
        optimizer.step()
        got = weight.detach() - before
        assert torch.allclose(got.mT if tall else got, want, rtol=1e-9, atol=1e-13)


def test_galore_state_is_the_basis_and_two_projected_moments():
    m, n, r = 6, 10, 2
    weight = torch.nn.Parameter(torch.zeros(n, m))
    optimizer = GaLore([weight], rank=r)
    weight.grad = torch.randn(n, m)
    optimizer.step()
    state = optimizer.state[weight]
    assert sum(v.numel() for v in state.values() if v.ndim) == 2 * n * r + m * r
    assert set(state) == {"step", "basis", "projected_exp_avg", "projected_exp_avg_sq"}


def test_galore_defaults_follow_table_7():
    small, large = paper_hparams("galore", "60M"), paper_hparams("galore", "1.3B")
    assert (small["lr"], small["alpha"], small["rank"], small["update_interval"]) == (0.02, 0.3, 128, 200)
    assert (large["lr"], large["alpha"], large["rank"]) == (0.01, 0.25, 512)
    assert [paper_hparams("galore", s)["rank"] for s in ("130M", "350M")] == [256, 256]
    assert small["bias_correction"] and small["compensation"] == "none" and small["projection"] == "svd"
