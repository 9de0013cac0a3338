"""The foundation's named optimizers against independent references: torch.optim, and reference
loops written here from the algorithms in algorithms.md §4 (not from fimkit's helpers)."""

from __future__ import annotations

import pytest
import torch
from test_structures_online import RowScaling

import fimkit
from fimkit.optim import SOAP, Adafactor, Adam, EigenAdam, Shampoo
from fimkit.structures import DiagonalFactor, EigenvalueCorrected, Full, Identity, Kronecker


def _mlp(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).to(dtype)


def _train_pair(ours, reference, steps=100, dtype=torch.float32):
    """Train two copies of one MLP side by side; return the max parameter difference."""
    net_a, net_b = _mlp(dtype=dtype), _mlp(dtype=dtype)
    opt_a, opt_b = ours(net_a.parameters()), reference(net_b.parameters())
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(16, 5, generator=gen, dtype=dtype)
        y = torch.randn(16, 3, generator=gen, dtype=dtype)
        for net, opt in ((net_a, opt_a), (net_b, opt_b)):
            opt.zero_grad()
            (net(x) - y).square().mean().backward()
            opt.step()
    return max((a - b).abs().max().item() for a, b in zip(net_a.parameters(), net_b.parameters()))


def test_adam_matches_torch_adam_after_100_steps_of_an_mlp():
    kwargs = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8)
    assert _train_pair(lambda p: Adam(p, **kwargs), lambda p: torch.optim.Adam(p, **kwargs)) <= 1e-6


def test_adam_weight_decay_is_decoupled_like_adamw():
    kwargs = dict(lr=1e-2, weight_decay=0.1)
    assert _train_pair(lambda p: Adam(p, **kwargs), lambda p: torch.optim.AdamW(p, **kwargs)) <= 1e-6


def test_derived_diagonal_structure_is_adam():
    derived = fimkit.derive(fimkit.structures.Diagonal())
    assert _train_pair(lambda p: derived(p, lr=1e-2), lambda p: torch.optim.Adam(p, lr=1e-2)) <= 1e-6


@pytest.mark.skipif(not hasattr(torch.optim, "Adafactor"), reason="torch.optim.Adafactor needs torch >= 2.5")
def test_adafactor_matches_torch_adafactor_on_vectors_and_matrices():
    kwargs = dict(lr=1e-2, weight_decay=0.01)
    assert _train_pair(lambda p: Adafactor(p, **kwargs), lambda p: torch.optim.Adafactor(p, **kwargs)) <= 1e-6


def _grad_stream(shape, steps, seed=0):
    gen = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.5, 2.0, shape[0], dtype=torch.float64)[:, None]
    return [torch.randn(shape, generator=gen, dtype=torch.float64) * scale for _ in range(steps)]


def _run_on_stream(optimizer_cls, grads, **hparams):
    w = torch.zeros(grads[0].shape, dtype=torch.float64, requires_grad=True)
    opt = optimizer_cls([w], **hparams)
    for g in grads:
        w.grad = g.clone()
        opt.step()
    return w.detach()


def _sym_power(a, p):
    evals, evecs = torch.linalg.eigh(a)
    return evecs @ torch.diag(evals**p) @ evecs.mT


def _evd(a):
    """Eigenvectors by descending eigenvalue."""
    return torch.linalg.eigh(a)[1].flip(-1)


def test_shampoo_matches_algorithm_5():
    grads = _grad_stream((4, 6), 12)
    eps, lr = 1e-3, 0.1
    left, right, w = eps * torch.eye(4, dtype=torch.float64), eps * torch.eye(6, dtype=torch.float64), 0
    for g in grads:
        left, right = left + g @ g.mT, right + g.mT @ g
        w = w - lr * _sym_power(left, -0.25) @ g @ _sym_power(right, -0.25)
    torch.testing.assert_close(_run_on_stream(Shampoo, grads, lr=lr, stat_init=eps), w)


def _reference_soap(grads, lr, b1, b2, b3, eps, period, one_sided=False, bias_correction=True):
    """[P] Alg 6 (SOAP) / Alg 7 (Eigen-Adam, one_sided) with Adam's bias correction."""
    m, n = grads[0].shape
    mom = torch.zeros(m, n, dtype=torch.float64)
    v = torch.zeros(m, n, dtype=torch.float64)
    gram_l = torch.zeros(m, m, dtype=torch.float64)
    gram_r = torch.zeros(n, n, dtype=torch.float64)
    u_l, u_r = torch.eye(m, dtype=torch.float64), torch.eye(n, dtype=torch.float64)
    w = torch.zeros(m, n, dtype=torch.float64)
    for t, g in enumerate(grads, start=1):
        mom = b1 * mom + (1 - b1) * g
        gram_l = b3 * gram_l + (1 - b3) * g @ g.mT
        gram_r = b3 * gram_r + (1 - b3) * g.mT @ g
        if t == 1 or t % period == 0:
            u_l = _evd(gram_l)
            u_r = torch.eye(n, dtype=torch.float64) if one_sided else _evd(gram_r)
        rotated_m = u_l.mT @ mom @ u_r
        v = b2 * v + (1 - b2) * (u_l.mT @ g @ u_r) ** 2
        if bias_correction:
            rotated_m, v_hat = rotated_m / (1 - b1**t), v / (1 - b2**t)
        else:
            v_hat = v
        w = w - lr * u_l @ (rotated_m / (v_hat.sqrt() + eps)) @ u_r.mT
    return w


def test_soap_matches_algorithm_6():
    # Square gradients: both Gram matrices are full rank from step 1, so the eigenbases (hence
    # the updates) are unique; with a wide G, G^T G has a null space whose basis is arbitrary.
    grads = _grad_stream((5, 5), 10)
    hp = dict(lr=0.01, betas=(0.9, 0.95), shampoo_beta=0.9, eps=1e-8, precondition_frequency=3)
    expected = _reference_soap(grads, 0.01, 0.9, 0.95, 0.9, 1e-8, 3)
    torch.testing.assert_close(_run_on_stream(SOAP, grads, **hp), expected)


@pytest.mark.parametrize("shape", [(4, 6), (6, 4)])
def test_eigen_adam_matches_algorithm_7_on_the_short_side(shape):
    grads = _grad_stream(shape, 10)
    hp = dict(lr=0.01, betas=(0.9, 0.95), shampoo_beta=0.9, eps=1e-8, precondition_frequency=3)
    tall = shape[0] > shape[1]
    oriented = [g.mT for g in grads] if tall else grads
    expected = _reference_soap(oriented, 0.01, 0.9, 0.95, 0.9, 1e-8, 3, one_sided=True)
    torch.testing.assert_close(_run_on_stream(EigenAdam, grads, **hp), expected.mT if tall else expected)


def test_eigen_adam_with_identity_basis_is_adam():
    identity_basis = fimkit.derive(EigenvalueCorrected(Kronecker(Identity(), Identity())), lr=1e-2,
                                   betas=(0.9, 0.999), matrix_only=False)
    assert _train_pair(identity_basis, lambda p: torch.optim.Adam(p, lr=1e-2)) <= 1e-6


def test_soap_with_identity_column_basis_is_eigen_adam():
    grads = _grad_stream((4, 6), 8)
    hp = dict(lr=0.01, precondition_frequency=3)
    one_sided_soap = fimkit.derive(EigenvalueCorrected(Kronecker(Full(), Identity())), **SOAP.hyperparameters)
    torch.testing.assert_close(_run_on_stream(one_sided_soap, grads, **hp),
                               _run_on_stream(EigenAdam, grads, **hp))


def test_derived_whiten_left_first_step_is_root_n_inverse_root_gram_times_gradient():
    g = _grad_stream((3, 5), 1)[0]
    whiten = fimkit.derive(Kronecker(Full(), Identity()), betas=(0.0, 0.5), eps=0.0, lr=1.0)
    expected = -(5**0.5) * _sym_power(g @ g.mT, -0.5) @ g
    torch.testing.assert_close(_run_on_stream(whiten, [g]), expected)


def test_derived_norm_col_first_step_gives_columns_of_unit_rms():
    g = _grad_stream((4, 6), 1)[0]
    norm_col = fimkit.derive(Kronecker(Identity(), DiagonalFactor()), betas=(0.0, 0.5), eps=0.0, lr=1.0)
    step = _run_on_stream(norm_col, [g])
    torch.testing.assert_close(step.square().mean(0), torch.ones(6, dtype=torch.float64))


def test_derived_optimizer_of_a_users_structure_matches_its_builtin_twin():
    grads = _grad_stream((3, 4), 5)
    hp = dict(lr=0.05, betas=(0.9, 0.9), eps=1e-8)
    users = fimkit.derive(RowScaling(), **hp)
    builtin = fimkit.derive(Kronecker(DiagonalFactor(), Identity(), estimator="exact"), **hp)
    torch.testing.assert_close(_run_on_stream(users, grads), _run_on_stream(builtin, grads),
                               rtol=1e-5, atol=1e-7)


def test_precondition_frequency_reuses_the_fitted_member_between_refreshes():
    grads = _grad_stream((3, 4), 4)
    lazy = fimkit.derive(Kronecker(Full(), Identity()), betas=(0.0, 0.9), precondition_frequency=3, lr=1.0)
    eager = fimkit.derive(Kronecker(Full(), Identity()), betas=(0.0, 0.9), lr=1.0)
    # Steps 1 and 2 share the member fitted at step 1; step 4 refits: compare the first step only
    torch.testing.assert_close(_run_on_stream(lazy, grads[:1]), _run_on_stream(eager, grads[:1]))
    assert not torch.allclose(_run_on_stream(lazy, grads[:2]), _run_on_stream(eager, grads[:2]))
