"""SinkGD (arXiv 2502.06742) against SR-Sinkhorn written here from the algorithm, and its
invariances (algorithms.md §5 C): gradient scale, row scaling (exact), column scaling (only in
the many-iteration limit)."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import gradient_samples, run_updates
from fimkit.optim import SinkGD
from test_racs_optimizer import scale_invariance_error

SHAPES = [(3, 5), (5, 3), (4, 4), (1, 6)]


def reference_sr_sinkhorn(g: torch.Tensor, iters: int) -> torch.Tensor:
    x = g.clone()
    m, n = x.shape
    for _ in range(iters):
        for i in range(m):                      # each row to l2 norm sqrt(n)
            x[i] = x[i] * math.sqrt(n) / x[i].norm()
        for j in range(n):                      # each column to l2 norm sqrt(m)
            x[:, j] = x[:, j] * math.sqrt(m) / x[:, j].norm()
    return x


def one_step(g: torch.Tensor, **hparams) -> torch.Tensor:
    """The first parameter change of SinkGD for gradient ``g``."""
    return run_updates(SinkGD, [g], **hparams)[0][0]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("iters", [1, 5])
def test_sinkgd_step_matches_reference_sr_sinkhorn(shape, iters):
    g = gradient_samples(*shape, k=1, seed=0)[0]
    expected = -0.02 * 0.05 * reference_sr_sinkhorn(g, iters)
    assert torch.allclose(one_step(g, sinkhorn_iters=iters), expected, rtol=1e-12, atol=1e-15)


def test_sinkgd_defaults():
    defaults = SinkGD.default_hyperparameters()
    assert (defaults["sinkhorn_iters"], defaults["lr"], defaults["alpha"]) == (5, 0.02, 0.05)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_sinkgd_update_is_invariant_to_gradient_scale(dtype, tolerance):
    assert scale_invariance_error(SinkGD, list(gradient_samples(5, 8, k=2, seed=1, dtype=dtype))) <= tolerance


def test_sinkgd_is_exactly_invariant_to_positive_row_scaling():
    g = gradient_samples(4, 6, k=1, seed=2)[0]
    rows = torch.tensor([1e-3, 0.5, 7.0, 300.0], dtype=g.dtype)
    for iters in (1, 5):
        assert torch.allclose(one_step(rows[:, None] * g, sinkhorn_iters=iters),
                              one_step(g, sinkhorn_iters=iters), rtol=1e-12, atol=0)


def test_sinkgd_is_invariant_to_column_scaling_only_after_many_iterations():
    g = gradient_samples(4, 6, k=1, seed=3)[0]
    cols = torch.tensor([1e-2, 0.5, 2.0, 5.0, 30.0, 1.0], dtype=g.dtype)

    def gap(iters):
        a, b = one_step(g * cols, sinkhorn_iters=iters), one_step(g, sinkhorn_iters=iters)
        return float((a - b).norm() / b.norm())

    assert gap(1) > 1e-3          # a few rounds do not absorb a column scaling...
    assert gap(500) < 1e-10       # ...the Sinkhorn limit (unique scaling) does


def test_sinkgd_limit_has_rows_of_norm_sqrt_n_and_columns_of_norm_sqrt_m():
    g = gradient_samples(4, 6, k=1, seed=4)[0]
    x = -one_step(g, sinkhorn_iters=500, lr=1.0, alpha=1.0)
    assert torch.allclose(x.norm(dim=1), torch.full((4,), math.sqrt(6), dtype=g.dtype), rtol=1e-10)
    assert torch.allclose(x.norm(dim=0), torch.full((6,), math.sqrt(4), dtype=g.dtype), rtol=1e-10)
