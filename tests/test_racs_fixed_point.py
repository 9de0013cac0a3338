"""RACS's fixed point ([P] Eq 16, Prop 3) against independent oracles (algorithms.md §5 B).

The oracles are written here from the definitions: the SVD of ``P = E[G*G]``, a numerical
minimisation of ``||diag(vec(q s^T)) - F||_F`` over positive q, s with scipy, and the residual
of each half-step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from conftest import gradient_samples
from fimkit.linalg import fixed_point_rank1
from fimkit.optim import RACS

SHAPES = [(2, 3), (3, 4), (4, 3), (5, 6)]


def second_moment(m: int, n: int, seed: int = 0) -> torch.Tensor:
    """``P = E[G*G]`` over gradient samples with distinct row and column scales."""
    return gradient_samples(m, n, k=6, seed=seed).square().mean(0)


@pytest.mark.parametrize("shape", SHAPES)
def test_racs_fixed_point_equals_principal_singular_pair(shape):
    p = second_moment(*shape)
    s, q = fixed_point_rank1(p, iters=500)
    u, sigma, vh = torch.linalg.svd(p)
    best_rank1 = sigma[0] * torch.outer(u[:, 0], vh[0])
    assert torch.allclose(torch.outer(q, s), best_rank1, rtol=0, atol=1e-12 * float(p.abs().max()))


@pytest.mark.parametrize("shape", SHAPES)
def test_racs_fixed_point_objective_equals_numeric_minimum(shape):
    m, n = shape
    grads = gradient_samples(m, n, k=5, seed=1)
    g = grads.reshape(grads.shape[0], -1).numpy()
    fim = g.T @ g / g.shape[0]                      # dense empirical Fisher, row-major vec

    def objective(log_qs: np.ndarray) -> tuple[float, np.ndarray]:
        x = torch.tensor(log_qs, requires_grad=True)
        q, s = x[:m].exp(), x[m:].exp()
        dense = torch.from_numpy(fim)
        # ||F~ - F||^2 from the dense matrices, minus the constant ||F||^2 and in units of
        # ||diag F||^2, so that the optimiser's tolerances bite on the part that varies
        loss = ((torch.diag(torch.outer(q, s).reshape(-1)) - dense).square().sum()
                - dense.square().sum()) / torch.diagonal(dense).square().sum()
        loss.backward()
        return float(loss.detach()), x.grad.numpy()

    starts = (np.zeros(m + n), 0.3 * np.random.default_rng(0).normal(size=m + n))
    best = min((minimize(objective, x0, jac=True, method="L-BFGS-B",
                         options={"ftol": 1e-16, "gtol": 1e-12, "maxiter": 10_000}) for x0 in starts),
               key=lambda r: r.fun)
    s, q = fixed_point_rank1(grads.square().mean(0), iters=500)
    at_fixed_point = objective(np.concatenate([np.log(q.numpy()), np.log(s.numpy())]))[0]
    assert at_fixed_point <= best.fun + 1e-10
    assert at_fixed_point == pytest.approx(best.fun, rel=1e-8)


@pytest.mark.parametrize("shape", SHAPES)
def test_racs_fixed_point_is_positive_for_a_positive_moment(shape):
    for iters in (1, 2, 5, 50):
        s, q = fixed_point_rank1(second_moment(*shape, seed=2), iters=iters)
        assert bool((s > 0).all()) and bool((q > 0).all())


@pytest.mark.parametrize("shape", SHAPES)
def test_racs_fixed_point_is_stationary(shape):
    p = second_moment(*shape, seed=3)
    s, q = fixed_point_rank1(p, iters=500)
    assert torch.allclose(s, p.T @ q / (q @ q), rtol=1e-12, atol=0)
    assert torch.allclose(q, p @ s / (s @ s), rtol=1e-12, atol=0)


@pytest.mark.parametrize("shape", SHAPES)
def test_racs_fixed_point_half_steps_never_increase_the_residual(shape):
    p = second_moment(*shape, seed=4)

    def residual(q, s):
        return float((torch.outer(q, s) - p).norm())

    q_prev = torch.ones(shape[0], dtype=p.dtype)
    s_prev = p.T @ q_prev / (q_prev @ q_prev)
    last = residual(q_prev, s_prev)
    for k in range(1, 12):
        s_k, q_k = fixed_point_rank1(p, iters=k)
        after_s = residual(q_prev, s_k)      # the s half-step, with q from the step before
        after_q = residual(q_k, s_k)         # then the q half-step
        assert after_s <= last * (1 + 1e-12)
        assert after_q <= after_s * (1 + 1e-12)
        last, q_prev = after_q, q_k


def test_racs_uses_five_fixed_point_steps_from_ones_by_default():
    structure = RACS.structure
    assert structure.estimator == "per_sample" and structure.fixed_point_iters == 5
    assert RACS.default_hyperparameters()["fixed_point_iters"] == 5
    g = gradient_samples(3, 5, k=1, seed=5)[0]
    stats = structure.statistics(g)
    s, q = fixed_point_rank1(g * g, iters=5, q0=torch.ones(3, dtype=g.dtype))
    assert torch.allclose(torch.outer(stats["rows"], stats["cols"]), torch.outer(q, s), rtol=1e-13)
