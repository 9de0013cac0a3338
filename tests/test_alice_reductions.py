"""Alice's reductions (algorithms.md §5 D): full rank is Eigen-Adam, everything off is GaLore."""

from __future__ import annotations

import pytest
import torch

from test_alice_reference import scaled_gradients, top_eigenvectors
from test_galore_reference import parameter_changes as _changes
from test_galore_reference import reference_galore

from fimkit.optim import Alice, EigenAdam, GaLore

F64 = torch.float64


def reference_eigen_adam(grads, lr, b1, b2, b3, eps):
    """[P] Eq 13 / Alg 7 without bias correction, basis from the first step only."""
    m, n = grads[0].shape
    q = torch.zeros(m, m, dtype=F64)
    mom, v = torch.zeros(m, n, dtype=F64), torch.zeros(m, n, dtype=F64)
    u, changes = None, []
    for g in grads:
        q = b3 * q + (1 - b3) * g @ g.mT
        if u is None:
            u = top_eigenvectors(q, m)
        mom = b1 * mom + (1 - b1) * g
        v = b2 * v + (1 - b2) * (u.mT @ g) ** 2
        changes.append(-lr * u @ ((u.mT @ mom) / (v.sqrt() + eps)))
    return changes


def test_full_rank_alice_is_eigen_adam_while_the_basis_is_constant():
    m, n, steps = 4, 7, 6
    grads = scaled_gradients(m, n, steps, seed=0)
    hp = dict(lr=0.05, betas=(0.9, 0.95), eps=1e-8)
    with pytest.warns(UserWarning, match="rank 4 >= 4"):
        alice, state = _changes(Alice, grads, rank=m, leading=1, alpha=1.0, tracking_beta=0.9,
                                update_interval=100, **hp)
    assert "compensation_p" in state and float(state["compensation_p"].abs().max()) == 0.0
    expected = reference_eigen_adam(grads, hp["lr"], *hp["betas"], b3=0.9, eps=hp["eps"])
    library, _ = _changes(EigenAdam, grads, shampoo_beta=0.9, precondition_frequency=100,
                          bias_correction=False, **hp)
    for got, want, other in zip(alice, expected, library):
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-13)
        assert torch.allclose(got, other, rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("compensation,alpha_c", [("none", 0.4), ("optimal", 0.0)])
def test_alice_without_tracking_switching_and_compensation_is_galore(compensation, alpha_c):
    m, n, steps = 6, 9, 10
    grads = scaled_gradients(m, n, steps, seed=1)
    hp = dict(lr=0.05, alpha=0.3, rank=2, update_interval=4, betas=(0.9, 0.999), eps=1e-6)
    alice, _ = _changes(Alice, grads, tracking_beta=0.0, switching=False, projection="svd",
                        compensation=compensation, alpha_c=alpha_c, **hp)
    galore, _ = _changes(GaLore, grads, bias_correction=False, **hp)
    expected = reference_galore(grads, hp["lr"], hp["alpha"], hp["rank"], hp["update_interval"],
                                hp["betas"], hp["eps"], bias_correction=False)
    for got, other, want in zip(alice, galore, expected):
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-13)
        assert torch.allclose(other, want, rtol=1e-9, atol=1e-13)


def test_switching_off_takes_the_plain_top_eigenvectors_of_the_switch_statistic():
    m, n, r, b3, k = 7, 9, 3, 0.9, 3
    grads = scaled_gradients(m, n, 8, seed=2)
    weight = torch.nn.Parameter(torch.zeros(m, n, dtype=F64))
    optimizer = Alice([weight], rank=r, leading=1, switching=False, tracking_beta=b3, update_interval=k)
    state = optimizer.state[weight]
    for t, g in enumerate(grads, start=1):
        u, qt = (state["basis"].clone(), state["projected_gram"].clone()) if state else (None, None)
        weight.grad = g.clone()
        optimizer.step()
        if t == 1 or t % k == 0:
            q_full = (1 - b3) * g @ g.mT + (0 if u is None else b3 * u @ qt @ u.mT)
            top = top_eigenvectors(q_full, r)
            assert torch.allclose((state["basis"] * top).sum(0).abs(), torch.ones(r, dtype=F64), atol=1e-9)
