"""Alice and Alice-0 against an explicit reference loop of [P] Alg 4 (with Alg 3 and Alg 10).

The reference is written from the equations in float64. Sampling is random, so the reference
takes the sampled columns from the optimizer's basis after each switch and checks everything
that is determined: the top-l Ritz vectors of its own subspace iteration, orthonormality, and
that the sampled columns lie in the complement of the Ritz subspace.
"""

from __future__ import annotations

import math

import pytest
import torch

from fimkit.optim import Alice, AliceZero

F64 = torch.float64


def scaled_gradients(m, n, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    scales = torch.linspace(0.3, 2.0, m, dtype=F64)[:, None] * torch.linspace(0.5, 1.5, n, dtype=F64)
    return [torch.randn(m, n, generator=gen, dtype=F64) * scales for _ in range(steps)]


def top_eigenvectors(q, r):
    evals, evecs = torch.linalg.eigh(q)
    return evecs[:, torch.argsort(evals, descending=True)[:r]]


def _ritz_vectors(q, u):
    basis, _ = torch.linalg.qr(q @ u)
    evals, evecs = torch.linalg.eigh(basis.mT @ q @ basis)
    return basis @ evecs[:, torch.argsort(evals, descending=True)]


def _check_switched_basis(new_basis, q, previous, first, leading):
    ritz = top_eigenvectors(q, new_basis.shape[1]) if first else _ritz_vectors(q, previous)
    r = new_basis.shape[1]
    assert torch.allclose(new_basis.mT @ new_basis, torch.eye(r, dtype=F64), atol=1e-10)
    cosines = (new_basis[:, :leading] * ritz[:, :leading]).sum(0).abs()
    assert torch.allclose(cosines, torch.ones(leading, dtype=F64), atol=1e-8)
    assert (ritz.mT @ new_basis[:, leading:]).abs().max() < 1e-10


def reference_alice(grads, hp, basis_after_switch):
    """[P] Alg 4 on a list of gradients (m <= n). Returns the parameter changes, one per step."""
    m, n = grads[0].shape
    r, leading, k = hp["rank"], hp["leading"], hp["update_interval"]
    b1, b2 = hp["betas"]
    b3 = hp["tracking_beta"]
    u = torch.zeros(m, r, dtype=F64)
    qt = torch.zeros(r, r, dtype=F64)
    mom, v = torch.zeros(r, n, dtype=F64), torch.zeros(r, n, dtype=F64)
    p, phi = torch.zeros(n, dtype=F64), 0.0
    changes = []
    for t, g in enumerate(grads, start=1):
        if t == 1 or t % k == 0:
            q_full = b3 * u @ qt @ u.mT + (1 - b3) * g @ g.mT
            new = basis_after_switch[t]
            _check_switched_basis(new, q_full, u, first=t == 1, leading=leading)
            u = new
        sigma = u.mT @ g
        qt = b3 * qt + (1 - b3) * sigma @ sigma.mT
        mom = b1 * mom + (1 - b1) * sigma
        v = b2 * v + (1 - b2) * sigma**2
        omega = mom / (v.sqrt() + hp["eps"])
        p = b1 * p + (1 - b1) * ((g**2).sum(0) - (sigma**2).sum(0))
        c = math.sqrt(m - r) * (g - u @ sigma) / (p + hp["compensation_eps"]).sqrt()
        norm = float(c.norm())
        eta = 1.0 if phi == 0 else hp["gamma"] / max(norm / phi, hp["gamma"])
        phi = eta * norm
        changes.append(-hp["lr"] * hp["alpha"] * (u @ omega + hp["alpha_c"] * eta * c))
    return changes


def _run_optimizer(cls, grads, hp, transpose=False):
    """Feed the gradients; return parameter changes and the basis recorded after each switch."""
    shape = grads[0].mT.shape if transpose else grads[0].shape
    weight = torch.nn.Parameter(torch.zeros(shape, dtype=F64))
    optimizer = cls([weight], **hp)
    changes, bases = [], {}
    for t, g in enumerate(grads, start=1):
        before = weight.detach().clone()
        weight.grad = g.mT.clone() if transpose else g.clone()
        optimizer.step()
        change = weight.detach() - before
        changes.append(change.mT if transpose else change)
        if t == 1 or t % hp["update_interval"] == 0:
            bases[t] = optimizer.state[weight]["basis"].clone()
    return changes, bases


HP = dict(lr=0.1, alpha=0.3, alpha_c=0.4, betas=(0.9, 0.9), tracking_beta=0.99, gamma=1.01, eps=1e-8,
          compensation_eps=1e-8, rank=3, leading=1, update_interval=4, seed=11)


@pytest.mark.parametrize("cls,tracking_beta", [(Alice, 0.99), (AliceZero, 0.0)])
def test_alice_matches_the_reference_loop_across_switches(cls, tracking_beta):
    hp = dict(HP, tracking_beta=tracking_beta)
    grads = scaled_gradients(6, 10, steps=13, seed=1)
    changes, bases = _run_optimizer(cls, grads, hp)
    expected = reference_alice(grads, hp, bases)
    for t, (got, want) in enumerate(zip(changes, expected), start=1):
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-12), f"step {t}"


def test_tall_matrix_runs_alice_on_its_transpose():
    grads = scaled_gradients(5, 9, steps=9, seed=2)  # the short side (5) gets the basis
    changes, bases = _run_optimizer(Alice, grads, HP, transpose=True)
    assert all(b.shape == (5, 3) for b in bases.values())
    expected = reference_alice(grads, HP, bases)
    for got, want in zip(changes, expected):
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-12)


def test_limiter_caps_the_growth_of_the_compensation_norm():
    """C is normalised per column, so its norm jumps when new columns become active: here only
    columns 0-4 have a gradient at step 1, all ten afterwards. The limiter allows a factor gamma."""
    grads = scaled_gradients(6, 10, steps=5, seed=3)
    grads[0] = grads[0] * (torch.arange(10) < 5)
    hp = dict(HP, alpha_c=1.0, update_interval=100)
    changes, bases = _run_optimizer(Alice, grads, hp)
    u = bases[1]
    norms = [float((c - u @ (u.mT @ c)).norm()) for c in changes]  # the part outside span(U) is the compensation
    for previous, current in zip(norms, norms[1:]):
        assert current <= hp["gamma"] * previous * (1 + 1e-9)
    assert norms[1] == pytest.approx(hp["gamma"] * norms[0], rel=1e-9)
