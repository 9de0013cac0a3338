"""SWAN (arXiv 2412.13148; [P] App B.7) against a reference computed here from the equations:
GradNorm (row standardisation), GradWhitening ``(G G^T)^{-1/2} G`` by numpy's eigh and SVD,
the rescale to ``sqrt(mn)``; the coupled Newton-Schulz option against a loop written here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import gradient_samples, run_updates
from fimkit.memory import state_numel
from fimkit.optim import SWAN, SinkGD
from test_racs_optimizer import scale_invariance_error

SHAPES = [(3, 5), (5, 3), (4, 4), (6, 9)]


def reference_swan_direction(g: np.ndarray, rescale: bool = True) -> np.ndarray:
    centred = g - g.mean(axis=1, keepdims=True)
    normed = centred / np.sqrt((centred ** 2).mean(axis=1, keepdims=True))      # [P] Eq 30
    u, sigma, vt = np.linalg.svd(normed, full_matrices=False)
    # (GG^T)^{+1/2} G = U_r V_r^T: centred rows are orthogonal to ones, so for m >= n the
    # GradNorm output has rank n - 1 and the whitening is a pseudo-inverse
    rank = int((sigma > 1e-10 * sigma[0]).sum())
    whitened = u[:, :rank] @ vt[:rank]
    if rescale:
        whitened = whitened * np.sqrt(g.size) / np.linalg.norm(whitened)
    return whitened


def one_step(g: torch.Tensor, **hparams) -> torch.Tensor:
    """The first parameter change of SWAN for gradient ``g``."""
    return run_updates(SWAN, [g], **hparams)[0][0]


@pytest.mark.parametrize("shape", SHAPES)
def test_swan_step_matches_reference_computation(shape):
    g = gradient_samples(*shape, k=1, seed=0)[0]
    expected = -0.02 * 0.05 * reference_swan_direction(g.numpy())
    assert np.allclose(one_step(g).numpy(), expected, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("shape", [(4, 7), (7, 4)])
def test_swan_default_whitening_equals_eigh_inverse_square_root_of_the_gram(shape):
    g = gradient_samples(*shape, k=1, seed=1)[0].numpy()
    centred = g - g.mean(axis=1, keepdims=True)
    normed = centred / np.sqrt((centred ** 2).mean(axis=1, keepdims=True))
    m, n = normed.shape

    def inverse_sqrt(gram):         # pseudo-inverse: a tall GradNorm output has rank n - 1
        evals, evecs = np.linalg.eigh(gram)
        keep = evals > 1e-10 * evals.max()
        return evecs[:, keep] @ np.diag(evals[keep] ** -0.5) @ evecs[:, keep].T

    if m <= n:
        whitened = inverse_sqrt(normed @ normed.T) @ normed
    else:        # (G G^T)^{+1/2} G equals G (G^T G)^{+1/2}
        whitened = normed @ inverse_sqrt(normed.T @ normed)
    step = one_step(torch.from_numpy(g), lr=1.0, alpha=1.0, rescale=False).numpy()
    assert np.allclose(-step, whitened, rtol=1e-9, atol=1e-12)


def reference_coupled_newton_schulz(a: np.ndarray, steps: int, step_size: float) -> np.ndarray:
    """[P] App B.8: Y0 = A/||A||_F, Z0 = I; T = I + step (I - Z Y); Y <- Y T; Z <- T Z."""
    eye = np.eye(a.shape[0])
    norm = np.linalg.norm(a)
    y, z = a / norm, eye.copy()
    for _ in range(steps):
        t = eye + step_size * (eye - z @ y)
        y, z = y @ t, t @ z
    return z / np.sqrt(norm)


@pytest.mark.parametrize("steps, step_size", [(5, 0.5), (2, 0.4), (10, 0.8)])
def test_swan_newton_schulz_option_runs_the_coupled_iteration(steps, step_size):
    g = gradient_samples(4, 9, k=1, seed=2)[0].numpy()
    centred = g - g.mean(axis=1, keepdims=True)
    normed = centred / np.sqrt((centred ** 2).mean(axis=1, keepdims=True))
    expected = reference_coupled_newton_schulz(normed @ normed.T, steps, step_size) @ normed
    step = one_step(torch.from_numpy(g), lr=1.0, alpha=1.0, rescale=False, whitening="newton_schulz",
                    ns_steps=steps, ns_step_size=step_size).numpy()
    assert np.allclose(-step, expected, rtol=1e-9, atol=1e-12)


def test_swan_newton_schulz_needs_many_steps_to_be_accurate():
    g = gradient_samples(6, 24, k=1, seed=3)[0]
    exact = one_step(g, rescale=False)
    errors = {steps: float((one_step(g, rescale=False, whitening="newton_schulz", ns_steps=steps) - exact).norm()
                           / exact.norm()) for steps in (2, 5, 20)}
    assert errors[20] < 1e-6 < errors[5] < errors[2]


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_swan_update_is_invariant_to_gradient_scale(dtype, tolerance):
    assert scale_invariance_error(SWAN, list(gradient_samples(5, 8, k=2, seed=4, dtype=dtype))) <= tolerance


@pytest.mark.parametrize("optimizer_class", [SWAN, SinkGD])
def test_swan_and_sinkgd_are_stateless_and_a_zero_gradient_gives_a_zero_update(optimizer_class):
    (change,), optimizer, param = run_updates(optimizer_class, [torch.zeros(3, 4)])
    assert torch.equal(change, torch.zeros(3, 4))
    assert state_numel(optimizer, param) == 0


def test_swan_rejects_an_unknown_whitening_method():
    with pytest.raises(ValueError, match="whitening"):
        SWAN([torch.nn.Parameter(torch.zeros(2, 3))], whitening="svd")
