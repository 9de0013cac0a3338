"""fimkit.optimizer_fisher: the F~ read off each optimizer's state is the one its step applies.

The decisive check: after a replay, the optimizer's next update is parallel to
``Mat(F~^{-1/2} vec(G))`` (pseudo-inverse) with ``F~`` read from its state after that step, for
every reader, on a short-wide and on a tall weight. Momentum, the norm-growth limiter and eps are
switched off so that the update is exactly a preconditioned gradient.
"""

from __future__ import annotations

import pytest
import torch

import fimkit
import fimkit.diagnostics as fd
from fimkit.optimizer_fisher import READERS, paper_proportions, replay, used_fisher
from fimkit.structures import LowRankPlusDiagonal

#: hyperparameters that make each update exactly F~^{-1/2} G (no momentum, limiter or eps)
PLAIN = {
    "adam": {"betas": (0.0, 0.999), "eps": 0.0},
    "racs": {"gamma": 1e12, "eps": 0.0},
    "shampoo": {},
    "soap": {"betas": (0.0, 0.95), "eps": 0.0, "precondition_frequency": 3},
    "eigen_adam": {"betas": (0.0, 0.95), "eps": 0.0, "precondition_frequency": 3},
    "alice": {"betas": (0.0, 0.9), "eps": 0.0, "compensation_eps": 0.0, "gamma": 1e12, "rank": 2, "leading": 1,
              "update_interval": 3},
    "alice0": {"betas": (0.0, 0.9), "eps": 0.0, "compensation_eps": 0.0, "gamma": 1e12, "rank": 2, "leading": 1,
               "update_interval": 3},
    "galore": {"betas": (0.0, 0.999), "eps": 0.0, "rank": 2, "update_interval": 3},
    "fira": {"betas": (0.0, 0.999), "eps": 0.0, "gamma": 1e12, "rank": 2, "update_interval": 3},
}


def samples(k: int, m: int, n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.5, 2.0, m, dtype=torch.float64)[:, None] * torch.linspace(0.3, 3.0, n, dtype=torch.float64)
    return (torch.randn(k, m, n, generator=gen, dtype=torch.float64) + 0.5) * scale


def pinv_sqrt_step(fim: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    evals, evecs = torch.linalg.eigh(fim)
    keep = evals > 1e-10 * evals.max()
    inv = torch.where(keep, evals.clamp_min(1e-300).rsqrt(), torch.zeros_like(evals))
    return ((evecs * inv) @ evecs.mT @ grad.reshape(-1)).reshape(grad.shape)


def test_every_reader_is_tested():
    assert set(PLAIN) == set(READERS)
    assert set(fd.DEFAULT_OPTIMIZERS) <= set(READERS)


@pytest.mark.parametrize("shape", [(4, 6), (6, 4)])
@pytest.mark.parametrize("name", sorted(PLAIN))
def test_read_fisher_reproduces_the_optimizers_update(name, shape):
    grads = samples(8, *shape)
    fim = used_fisher(name, grads, **PLAIN[name]).matrix  # after all 8 steps
    optimizer = replay(name, grads[:7], **PLAIN[name])
    param = optimizer.param_groups[0]["params"][0]
    before = param.detach().clone()
    param.grad = grads[7].clone()
    optimizer.step()
    update = before - param.detach()
    expected = pinv_sqrt_step(fim, grads[7])
    cosine = (update * expected).sum() / (update.norm() * expected.norm())
    assert cosine == pytest.approx(1.0, abs=1e-9), f"{name}: update and F~^-1/2 G differ (cosine {cosine})"


def test_constant_stream_gives_the_exact_second_moments():
    # a gradient whose square is rank one: every estimator is exact on a constant stream
    g = torch.outer(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, -0.5, 2.0, 0.25])).double()
    grads = g.expand(30, 3, 4).clone()
    target = torch.diag((g * g).reshape(-1))
    adam = used_fisher("adam", grads).matrix
    assert torch.allclose(adam, target, rtol=1e-12)  # bias-corrected EMA
    racs = used_fisher("racs", grads).matrix
    assert torch.allclose(racs, target * (1 - 0.9**30) ** 2, rtol=1e-9)  # q and s: each an EMA from zero
    fit = {f.label: f for f in fd.fit_optimizers(grads, ("adam", "racs"))}
    diagonal = fd.fit_structures(grads, {"d": fimkit.structures.Diagonal()})[0]
    assert fit["adam"].error == pytest.approx(diagonal.error, rel=1e-9)
    assert fit["racs"].rescaled_error == pytest.approx(diagonal.error, rel=1e-9)
    assert fit["racs"].scale == pytest.approx((1 - 0.9**30) ** -2, rel=1e-9)


def test_shampoo_is_the_bound_not_the_nearest_kronecker_product():
    grads = samples(40, 3, 5)
    shampoo = fd.fit_optimizers(grads, ("shampoo",))[0]
    nearest = fd.fit_structures(grads, {"nkp": fimkit.structures.Kronecker()})[0]
    assert shampoo.error > 1.0  # sums over 40 steps: the raw scale is far off ...
    assert shampoo.rescaled_error > nearest.rescaled_error + 1e-3  # ... and the shape is the bound's


def test_alice_before_any_switch_is_the_thm_5_1_optimum_in_a_subspace():
    # identical gradients of rank 2: the first basis is exact and the complement holds no energy
    gen = torch.Generator().manual_seed(1)
    g = torch.randn(5, 2, generator=gen, dtype=torch.float64) @ torch.randn(2, 7, generator=gen, dtype=torch.float64)
    grads = g.expand(12, 5, 7).clone()
    optimum = fd.fit_structures(grads, {"lr2": LowRankPlusDiagonal(rank=2)})[0]
    alice = fd.fit_optimizers(grads, {"alice": ("alice", {"rank": 2, "leading": 2, "update_interval": 1000})})[0]
    assert alice.rescaled_error == pytest.approx(optimum.error, abs=1e-9)
    assert alice.scale == pytest.approx(1 / (1 - 0.9**12), rel=1e-6)  # v is an EMA from zero, uncorrected


def test_low_rank_defaults_follow_the_paper_proportions():
    assert paper_proportions(16) == {"rank": 4, "leading": 1}
    assert paper_proportions(512) == {"rank": 128, "leading": 40}
    assert paper_proportions(2) == {"rank": 1, "leading": 1}
    used = used_fisher("galore", samples(6, 16, 20))
    assert used.state_numel == 16 * 4 + 2 * 4 * 20  # basis and two moments: rank 4 of 16


def test_optimizer_variants_are_labelled_and_unknown_names_rejected():
    fits = fd.fit_optimizers(samples(6, 3, 4), {"racs slow": ("racs", {"beta": 0.99}), "racs": ("racs", {})})
    assert [f.label for f in fits] == ["racs slow", "racs"] and fits[0].error != fits[1].error
    with pytest.raises(ValueError, match="no Fisher reader for optimizer 'sinkgd'"):
        used_fisher("sinkgd", samples(4, 3, 4))
