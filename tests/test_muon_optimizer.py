"""Muon against the reference algorithm written here (momentum, Nesterov, the quintic
Newton-Schulz iteration, the aspect-ratio scale), and its exact-whitening option against the
SVD polar factor."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import gradient_samples, run_updates as run_racs_style_updates
from fimkit.memory import state_numel
from fimkit.optim import Muon
from test_racs_optimizer import scale_invariance_error

SHAPES = [(3, 5), (5, 3), (4, 4)]


def reference_quintic_orthogonalisation(x: torch.Tensor, steps: int = 5) -> torch.Tensor:
    a, b, c = 3.4445, -4.7750, 2.0315
    tall = x.shape[0] > x.shape[1]
    y = x.T if tall else x
    y = y / y.norm()
    for _ in range(steps):
        gram = y @ y.T
        y = a * y + (b * gram + c * gram @ gram) @ y
    return y.T if tall else y


def reference_muon_updates(grads, lr=0.02, momentum=0.95, nesterov=True):
    buf = torch.zeros_like(grads[0])
    changes = []
    for g in grads:
        buf = momentum * buf + (1 - momentum) * g
        direction = (1 - momentum) * g + momentum * buf if nesterov else buf
        o = reference_quintic_orthogonalisation(direction)
        rows, cols = g.shape
        changes.append(-lr * max(1.0, rows / cols) ** 0.5 * o)
    return changes


def run_updates(grads, **hparams):
    return run_racs_style_updates(Muon, grads, **hparams)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("nesterov", [True, False])
def test_muon_matches_reference_algorithm(shape, nesterov):
    grads = list(gradient_samples(*shape, k=4, seed=0))
    changes, _, _ = run_updates(grads, nesterov=nesterov)
    for ours, ref in zip(changes, reference_muon_updates(grads, nesterov=nesterov)):
        assert torch.allclose(ours, ref, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("shape", SHAPES)
def test_muon_exact_whitening_is_the_svd_polar_factor(shape):
    g = gradient_samples(*shape, k=1, seed=1)[0]
    (change,), _, _ = run_updates([g], whitening="eigh", betas=(0.0, 0.0), lr=1.0)
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    rows, cols = shape
    assert torch.allclose(change, -math.sqrt(max(1.0, rows / cols)) * (u @ vh), rtol=1e-10, atol=1e-12)


def test_muon_quintic_iteration_leaves_singular_values_near_one():
    g = gradient_samples(16, 40, k=1, seed=2)[0]
    (change,), _, _ = run_updates([g], betas=(0.0, 0.0), lr=1.0)
    singular_values = torch.linalg.svdvals(change)
    assert float(singular_values.min()) > 0.6 and float(singular_values.max()) < 1.25


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_muon_update_is_invariant_to_gradient_scale(dtype, tolerance):
    assert scale_invariance_error(Muon, list(gradient_samples(4, 7, k=4, seed=3, dtype=dtype))) <= tolerance


def test_muon_defaults_and_state_are_those_of_the_reference_implementation():
    defaults = Muon.default_hyperparameters()
    assert (defaults["lr"], defaults["betas"][0], defaults["nesterov"], defaults["ns_steps"]) == (0.02, 0.95, True, 5)
    assert defaults["whitening"] == "newton_schulz5" and defaults["bias_correction"] is False
    _, optimizer, param = run_updates(list(gradient_samples(3, 5, k=2, seed=4)))
    assert state_numel(optimizer, param) == 3 * 5 + 1          # momentum and the step counter
