"""Alice's ablation switches (Table 5, Fig 5): compensation modes, switch modes, validation."""

from __future__ import annotations

import pytest
import torch

from conftest import fit_quadratic
from fimkit.optim import Alice

F64 = torch.float64
HP = dict(lr=0.1, alpha=0.3, alpha_c=0.4, rank=3, leading=1, update_interval=5, betas=(0.9, 0.9),
          eps=1e-8, seed=4)


def _first_step(shape=(7, 11), **options):
    """One step from zero state; returns the change, the gradient and the basis the step used."""
    gen = torch.Generator().manual_seed(0)
    grad = torch.randn(shape, generator=gen, dtype=F64) * torch.linspace(0.2, 2.0, shape[1], dtype=F64)
    weight = torch.nn.Parameter(torch.zeros(shape, dtype=F64))
    optimizer = Alice([weight], **{**HP, **options})
    weight.grad = grad.clone()
    optimizer.step()
    return weight.detach().clone(), grad, optimizer.state[weight]["basis"]


def _omega_at_first_step(sigma, b1, b2, eps):
    # m = (1 - b1) sigma, v = (1 - b2) sigma^2 from zero state.
    return (1 - b1) * sigma / ((1 - b2) ** 0.5 * sigma.abs() + eps)


def test_no_compensation_keeps_the_update_inside_the_subspace():
    change, grad, basis = _first_step(compensation="none")
    outside = change - basis @ (basis.mT @ change)
    assert outside.abs().max() < 1e-14
    omega = _omega_at_first_step(basis.mT @ grad, 0.9, 0.9, 1e-8)
    assert torch.allclose(change, -HP["lr"] * HP["alpha"] * basis @ omega, atol=1e-14)


def test_fira_compensation_scales_residual_columns_by_the_subspace_norm_ratio():
    change, grad, basis = _first_step(compensation="fira")
    sigma = basis.mT @ grad
    omega = _omega_at_first_step(sigma, 0.9, 0.9, 1e-8)
    ratio = omega.norm(dim=0) / (sigma.norm(dim=0) + 1e-8)
    expected = basis @ omega + HP["alpha_c"] * (grad - basis @ sigma) * ratio  # first step: limiter off
    assert torch.allclose(change, -HP["lr"] * HP["alpha"] * expected, atol=1e-13)


def test_fira_plus_compensation_has_alpha_c_times_the_norm_of_the_low_rank_step():
    gen = torch.Generator().manual_seed(1)
    weight = torch.nn.Parameter(torch.zeros(7, 11, dtype=F64))
    optimizer = Alice([weight], **{**HP, "compensation": "fira_plus"})
    for _ in range(6):
        weight.grad = torch.randn(7, 11, generator=gen, dtype=F64)
        before = weight.detach().clone()
        optimizer.step()
        change = (weight.detach() - before) / (-HP["lr"] * HP["alpha"])
        basis = optimizer.state[weight]["basis"]
        inside = basis @ (basis.mT @ change)
        assert float((change - inside).norm()) == pytest.approx(HP["alpha_c"] * float(inside.norm()), rel=1e-10)


@pytest.mark.parametrize("mode", ["gaussian", "gaussian_mix"])
def test_gaussian_switch_modes_compensate_the_materialised_residual(mode):
    change, grad, basis = _first_step(switch_mode=mode)
    m, r = basis.shape
    assert torch.allclose(basis.norm(dim=0), torch.ones(r, dtype=F64))
    sigma = basis.mT @ grad
    omega = _omega_at_first_step(sigma, 0.9, 0.9, 1e-8)
    residual = grad - basis @ sigma  # U is not orthonormal here: no energy identity
    p = 0.1 * residual.square().sum(0)
    compensation = (m - r) ** 0.5 * residual / (p + 1e-8).sqrt()
    expected = -HP["lr"] * HP["alpha"] * (basis @ omega + HP["alpha_c"] * compensation)
    assert torch.allclose(change, expected, atol=1e-12)


@pytest.mark.parametrize("switch_mode", ["complement", "full_basis", "gaussian", "gaussian_mix"])
@pytest.mark.parametrize("compensation", ["optimal", "none", "fira", "fira_plus"])
def test_every_ablation_combination_takes_finite_descending_steps(switch_mode, compensation):
    losses, _, weight = fit_quadratic(Alice, (6, 9), steps=12, target_seed=2,
                                      **{**HP, "switch_mode": switch_mode, "compensation": compensation})
    assert torch.isfinite(weight).all()
    assert losses[-1] < losses[0]


def test_zero_gradient_gives_a_zero_finite_step():
    for compensation in ("optimal", "fira", "fira_plus"):
        weight = torch.nn.Parameter(torch.ones(5, 8, dtype=F64))
        optimizer = Alice([weight], **{**HP, "compensation": compensation})
        for _ in range(6):  # through a switch
            weight.grad = torch.zeros(5, 8, dtype=F64)
            optimizer.step()
        assert torch.equal(weight.detach(), torch.ones(5, 8, dtype=F64))


@pytest.mark.parametrize("option,value,message", [
    ("switch_mode", "random", "switch_mode"),
    ("compensation", "fira+", "compensation"),
    ("projection", "svd", "switching=True"),
    ("rank", 0, "rank"),
    ("leading", -1, "leading"),
    ("update_interval", 0, "update_interval"),
    ("tracking_beta", 1.0, "tracking_beta"),
    ("gamma", 0.5, "gamma"),
    ("alpha_c", -1.0, "alpha_c"),
    ("seed", 1.5, "seed"),
])
def test_bad_hyperparameters_are_rejected_by_name(option, value, message):
    weight = torch.nn.Parameter(torch.zeros(4, 6))
    with pytest.raises(ValueError, match=message):
        Alice([weight], **{option: value})


def test_svd_basis_needs_tracking_off():
    weight = torch.nn.Parameter(torch.zeros(4, 6))
    with pytest.raises(ValueError, match="tracking_beta=0"):
        Alice([weight], switching=False, projection="svd")


def test_paper_hyperparameters_per_size_follow_table_11():
    from fimkit.optim import paper_hparams

    small, large = paper_hparams("alice", "60M"), paper_hparams("alice", "1.3B")
    assert (small["lr"], small["alpha"], small["alpha_c"], small["rank"], small["leading"]) == (0.02, 0.3, 0.4, 128, 40)
    assert small["betas"] == (0.9, 0.9) and small["tracking_beta"] == 0.999 and small["update_interval"] == 200
    assert (large["alpha"], large["alpha_c"], large["rank"], large["leading"]) == (0.25, 0.2, 512, 160)
    assert paper_hparams("alice0", "130M")["tracking_beta"] == 0.0
    assert paper_hparams("alice0", "130M")["rank"] == 256
