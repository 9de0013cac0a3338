"""APOLLO and APOLLO-Mini against a reference loop of the paper's algorithm (arXiv 2412.05270).

The projection is random: the reference takes it from the optimizer's state after each refresh
and checks how it is drawn (N(0, 1/r), only at t = 1 and t % K = 0, different each time).
"""

from __future__ import annotations

import math

import pytest
import torch

from fimkit.optim import APOLLO, APOLLOMini, paper_hparams

F64 = torch.float64


def reference_apollo(grads, projections, lr, alpha, betas, eps, gamma, tensor_wise):
    b1, b2 = betas
    rank, n = projections[1].shape[1], grads[0].shape[1]
    mom, v = torch.zeros(rank, n, dtype=F64), torch.zeros(rank, n, dtype=F64)
    p, phi, changes = None, None, []
    for t, g in enumerate(grads, start=1):
        p = projections.get(t, p)
        projected = p.mT @ g
        mom = b1 * mom + (1 - b1) * projected
        v = b2 * v + (1 - b2) * projected**2
        adam = mom / (v.sqrt() + eps)
        if tensor_wise:
            scale = adam.norm() / (projected.norm() + 1e-8)
        else:
            scale = adam.norm(dim=0) / (projected.norm(dim=0) + 1e-8)  # one factor per channel (column)
        scaled = g * scale
        norm = float(scaled.norm())
        if phi is None:
            phi = norm
        else:
            limit = max(norm / phi, gamma) / gamma
            scaled, phi = scaled / limit, norm / limit
        step_size = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
        changes.append(-step_size * alpha * scaled)
    return changes


def _run(cls, grads, **hp):
    weight = torch.nn.Parameter(torch.zeros(grads[0].shape, dtype=F64))
    optimizer = cls([weight], **hp)
    changes, projections = [], {}
    for t, g in enumerate(grads, start=1):
        before = weight.detach().clone()
        weight.grad = g.clone()
        optimizer.step()
        changes.append(weight.detach() - before)
        projections[t] = optimizer.state[weight]["basis"].clone()
    return changes, projections


@pytest.mark.parametrize("cls,tensor_wise", [(APOLLO, False), (APOLLOMini, True)])
def test_apollo_matches_the_reference_loop_across_projection_refreshes(cls, tensor_wise):
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(6, 10, generator=gen, dtype=F64) * (1 + t) for t in range(10)]
    hp = dict(lr=0.05, rank=cls.hyperparameters["rank"] if tensor_wise else 3, update_interval=4)
    changes, seen = _run(cls, grads, **hp)
    refreshes = {t: seen[t] for t in (1, 4, 8)}
    for t in range(2, 11):  # redrawn at t = 1 and t % K == 0 only
        assert torch.equal(seen[t], seen[t - 1]) == (t % 4 != 0)
    defaults = cls.default_hyperparameters()
    expected = reference_apollo(grads, refreshes, hp["lr"], defaults["alpha"], defaults["betas"],
                                defaults["eps"], defaults["gamma"], tensor_wise)
    for got, want in zip(changes, expected):
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-13)


def test_projection_is_gaussian_with_variance_one_over_rank_and_differs_between_matrices():
    torch.manual_seed(0)
    weights = [torch.nn.Parameter(torch.zeros(256, 300)) for _ in range(2)]
    optimizer = APOLLO(weights, rank=64)
    for w in weights:
        w.grad = torch.randn(256, 300)
    optimizer.step()
    first, second = (optimizer.state[w]["basis"] for w in weights)
    assert first.shape == (256, 64)
    assert abs(float(first.var()) * 64 - 1) < 0.05
    assert not torch.equal(first, second)


def test_apollo_mini_is_rank_one_tensor_wise_with_scale_sqrt_128():
    defaults = APOLLOMini.default_hyperparameters()
    assert (defaults["rank"], defaults["scale_type"]) == (1, "tensor")
    assert defaults["alpha"] == pytest.approx(math.sqrt(128))
    assert paper_hparams("apollo_mini", "130M")["alpha"] == pytest.approx(math.sqrt(192))
    weight = torch.nn.Parameter(torch.zeros(40, 24))
    optimizer = APOLLOMini([weight])
    weight.grad = torch.randn(40, 24)
    optimizer.step()
    state = optimizer.state[weight]
    assert sum(v.numel() for v in state.values() if v.ndim) == 24 + 2 * 40  # m r + 2 n r with r = 1


def test_apollo_defaults_follow_the_official_scripts():
    small = paper_hparams("apollo", "60M")
    assert (small["lr"], small["rank"], small["update_interval"], small["alpha"]) == (0.01, 128, 200, 1.0)
    assert (small["betas"], small["eps"], small["bias_correction"]) == ((0.9, 0.999), 1e-6, True)
    assert [paper_hparams("apollo", s)["rank"] for s in ("130M", "350M", "1.3B")] == [192, 256, 256]
