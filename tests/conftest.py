"""Shared test helpers: gradient samples with distinct row and column scales (so that the
structures differ), in float64, as algorithms.md §5 prescribes."""

from __future__ import annotations

import pytest
import torch

# Tests are small problems and pytest-xdist already runs one process per core: extra intra-op
# threads only contend (a 20x slowdown was measured on a loaded 2-core machine).
torch.set_num_threads(1)


def gradient_samples(m: int, n: int, k: int = 6, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    row_scale = torch.linspace(0.5, 2.0, m, dtype=dtype)
    col_scale = torch.linspace(0.3, 3.0, n, dtype=dtype)
    base = torch.randn(k, m, n, generator=gen, dtype=dtype)
    shared = torch.randn(m, n, generator=gen, dtype=dtype)  # a common mean makes F far from diagonal
    return (base + 0.7 * shared) * row_scale[:, None] * col_scale[None, :]


def run_updates(optimizer_class, grads, **hparams):
    """Parameter changes of ``optimizer_class`` (from a zero parameter of the gradients' shape and
    dtype) fed ``grads`` one after the other; returns ``(changes, optimizer, param)``."""
    param = torch.nn.Parameter(torch.zeros_like(grads[0]))
    optimizer = optimizer_class([param], **hparams)
    changes = []
    for g in grads:
        before = param.detach().clone()
        param.grad = g.clone()
        optimizer.step()
        changes.append(param.detach() - before)
    return changes, optimizer, param


def fit_quadratic(optimizer_class, shape, steps=30, target_seed=0, dtype=torch.float64, **hparams):
    """Minimise ``||W - T||^2 / 2`` from ``W = 0`` (``T`` seeded); returns the loss before each
    step, the optimizer and the weight."""
    gen = torch.Generator().manual_seed(target_seed)
    target = torch.randn(shape, generator=gen, dtype=dtype)
    weight = torch.nn.Parameter(torch.zeros(shape, dtype=dtype))
    optimizer = optimizer_class([weight], **hparams)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = 0.5 * (weight - target).square().sum()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses, optimizer, weight


@pytest.fixture
def samples():
    return gradient_samples
