"""RACS ([P] Alg 1) against a reference loop written here from the algorithm, and its properties:
state size, scale invariance from step 1, the EMA ablation, the limiter, column normalisation
when q is pinned (algorithms.md §5 C, D, G, H)."""

from __future__ import annotations

import math

import pytest
import torch

import fimkit
from conftest import gradient_samples, run_updates
from fimkit.memory import state_numel
from fimkit.optim import RACS, paper_hparams
from fimkit.optim.blocks import LearningRate, NormGrowthLimiter, Scale
from fimkit.optim.chain import Block, ChainOptimizer
from fimkit.structures import DiagonalFactor, Identity, Kronecker

SHAPES = [(3, 5), (5, 3), (4, 4), (1, 6)]


def reference_racs_updates(grads, lr=0.02, beta=0.9, alpha=0.05, gamma=1.01, iters=5, ema=True,
                           short_side=True):
    """[P] Alg 1, line by line, for a list of m x n gradients; returns the parameter changes."""
    m, n = grads[0].shape
    transpose = short_side and m > n
    if transpose:
        grads = [g.T for g in grads]
        m, n = n, m
    s, q, phi = torch.zeros(n, dtype=grads[0].dtype), torch.zeros(m, dtype=grads[0].dtype), 0.0
    changes = []
    for t, g in enumerate(grads, start=1):
        p = g * g
        q1 = torch.ones(m, dtype=g.dtype)                      # "initializing q = 1"
        for _ in range(iters):                                 # Eq 16, one-sample estimate
            s1 = p.T @ q1 / (q1 @ q1)
            q1 = p @ s1 / (s1 @ s1)
        s = beta * s + (1 - beta) * s1 if ema else s1
        q = beta * q + (1 - beta) * q1 if ema else q1
        g_tilde = torch.diag(q ** -0.5) @ g @ torch.diag(s ** -0.5)
        norm = float(g_tilde.norm())
        eta = gamma / max(norm / phi, gamma) if t > 1 else 1.0
        phi = eta * norm
        change = -lr * eta * alpha * g_tilde
        changes.append(change.T if transpose else change)
    return changes


def stream(m, n, steps=6, seed=0, dtype=torch.float64):
    return list(gradient_samples(m, n, k=steps, seed=seed, dtype=dtype))


@pytest.mark.parametrize("shape", SHAPES)
def test_racs_matches_reference_loop_of_algorithm_1(shape):
    grads = stream(*shape)
    changes, _, _ = run_updates(RACS, grads, eps=0.0)
    for ours, ref in zip(changes, reference_racs_updates(grads)):
        assert torch.allclose(ours, ref, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("shape", [(3, 5), (5, 3)])
def test_racs_matches_reference_loop_without_transpose(shape):
    grads = stream(*shape, seed=1)
    changes, _, _ = run_updates(RACS, grads, eps=0.0, transpose_to_short_side=False)
    for ours, ref in zip(changes, reference_racs_updates(grads, short_side=False)):
        assert torch.allclose(ours, ref, rtol=1e-12, atol=1e-15)


def test_racs_default_relative_eps_changes_the_update_negligibly():
    grads = stream(4, 6, seed=2)
    with_eps, _, _ = run_updates(RACS, grads)
    for ours, ref in zip(with_eps, reference_racs_updates(grads)):
        assert torch.allclose(ours, ref, rtol=1e-5, atol=0)


@pytest.mark.parametrize("shape", SHAPES)
def test_racs_state_is_exactly_m_plus_n_plus_one_numbers(shape):
    _, optimizer, param = run_updates(RACS, stream(*shape, steps=2))
    m, n = shape
    assert state_numel(optimizer, param) == m + n + 1
    assert set(optimizer.state[param]) == {"q", "s", "phi"}


SCALES = (1e-6, 1e-4, 1e-2, 3.7, 1e2, 1e4, 1e6)


def scale_invariance_error(optimizer_class, grads, **hparams) -> float:
    """Largest relative difference between the updates for ``c G_t`` and for ``G_t``, over every
    step from step 1 and every ``c`` in SCALES (shared by the SWAN, SinkGD and Muon tests)."""
    reference, _, _ = run_updates(optimizer_class, grads, **hparams)
    return max(float((ours - ref).norm() / ref.norm())
               for c in SCALES
               for ours, ref in zip(run_updates(optimizer_class, [c * g for g in grads], **hparams)[0], reference))


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_racs_update_is_invariant_to_gradient_scale(dtype, tolerance):
    assert scale_invariance_error(RACS, stream(4, 7, steps=8, seed=3, dtype=dtype)) <= tolerance


def test_racs_without_ema_uses_the_one_sample_scales():
    grads = stream(3, 5, seed=4)
    changes, _, _ = run_updates(RACS, grads, ema=False, eps=0.0)
    for ours, ref in zip(changes, reference_racs_updates(grads, ema=False)):
        assert torch.allclose(ours, ref, rtol=1e-12, atol=1e-15)


def test_racs_with_and_without_ema_differ():
    grads = stream(3, 5, seed=5)
    with_ema, _, _ = run_updates(RACS, grads)
    without, _, _ = run_updates(RACS, grads, ema=False)
    assert torch.allclose(with_ema[0], without[0] * 10, rtol=1e-6)   # 1/(1-beta) on step 1
    assert not torch.allclose(with_ema[-1] / with_ema[-1].norm(), without[-1] / without[-1].norm(), atol=1e-3)


def test_racs_with_q_pinned_is_column_normalisation():
    pinned = fimkit.derive(Kronecker(Identity(), DiagonalFactor(), estimator="per_sample"), momentum=False,
                           lr=1.0, ema=False, eps=0.0)
    g = stream(4, 6, steps=1, seed=6)[0]
    (change,), _, _ = run_updates(pinned, [g])
    column_normalised = g / g.square().mean(0, keepdim=True).sqrt()   # every column RMS 1
    ratio = -change / column_normalised
    assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio), rtol=1e-12)


def test_racs_update_norm_grows_at_most_by_gamma_per_step():
    base = stream(5, 3, steps=1, seed=7)[0]
    grads = [base * (1.5 ** t) + 0.01 * t * torch.ones_like(base) for t in range(6)]
    changes, _, _ = run_updates(RACS, grads, beta=0.0)
    norms = [float(c.norm()) for c in changes]
    for prev, cur in zip(norms, norms[1:]):
        assert cur <= 1.01 * prev * (1 + 1e-12)


def test_racs_limiter_is_inactive_when_the_update_norm_shrinks():
    grads = stream(4, 4, steps=6, seed=8)
    changes, _, _ = run_updates(RACS, grads, eps=0.0)
    unlimited, _, _ = run_updates(RACS, grads, eps=0.0, gamma=1e6)
    # with EMA from zero and no bias correction, the direction's norm shrinks every step
    for ours, free in zip(changes, unlimited):
        assert torch.allclose(ours, free, rtol=1e-12)


def test_racs_bias_correction_scales_the_direction_by_one_minus_beta_power():
    grads = stream(3, 4, steps=4, seed=9)
    plain, _, _ = run_updates(RACS, grads, eps=0.0, gamma=1e6)
    corrected, optimizer, param = run_updates(RACS, grads, eps=0.0, gamma=1e6, bias_correction=True)
    for t, (a, b) in enumerate(zip(plain, corrected), start=1):
        assert torch.allclose(b, a * (1 - 0.9 ** t), rtol=1e-12)
    assert state_numel(optimizer, param) == 3 + 4 + 2


def test_racs_all_zero_gradient_gives_a_zero_update_without_nan():
    zero = torch.zeros(3, 5, dtype=torch.float64)
    changes, optimizer, param = run_updates(RACS, [zero, zero])
    assert all(bool((c == 0).all()) for c in changes)
    assert all(bool(torch.isfinite(v).all()) for v in optimizer.state[param].values())


def test_racs_defaults_are_table_9():
    defaults = RACS.default_hyperparameters()
    assert (defaults["lr"], defaults["beta"], defaults["alpha"], defaults["gamma"]) == (0.02, 0.9, 0.05, 1.01)
    assert defaults["transpose_to_short_side"] is True and defaults["bias_correction"] is False
    assert paper_hparams("racs", "1.3B")["alpha"] == 0.02
    assert paper_hparams("racs", "350M")["alpha"] == 0.05


def test_racs_rejects_bad_beta_naming_the_value():
    with pytest.raises(ValueError, match="beta"):
        RACS([torch.nn.Parameter(torch.zeros(2, 3))], beta=1.0)


def test_racs_first_step_is_not_limited():
    g = stream(3, 5, steps=1, seed=10)[0]
    (change,), _, _ = run_updates(RACS, [g], eps=0.0)
    (ref,) = reference_racs_updates([g])
    # the first step is 1/(1 - beta) = 10 times the normalised direction (no bias correction)
    assert torch.allclose(change, ref, rtol=1e-12)
    assert math.isclose(float(change.norm()), float(ref.norm()), rel_tol=1e-12)


class _PassThrough(Block):
    """A block that returns its input: placed last, it stops the chain folding its scalar tail."""

    def __call__(self, update, grad, param, state, group, step):
        return update


def test_racs_folded_scalar_tail_equals_applying_limiter_scale_and_lr_in_turn():
    unfolded = type("UnfoldedRACS", (ChainOptimizer,), {
        "blocks": RACS.blocks + (_PassThrough(),),
        "hyperparameters": RACS.hyperparameters,
    })
    assert RACS._scalar_tail and not unfolded._scalar_tail
    grads = stream(5, 3, steps=5, seed=11)
    folded, _, _ = run_updates(RACS, grads)
    reference, _, _ = run_updates(unfolded, grads)
    for a, b in zip(folded, reference):
        assert torch.allclose(a, b, rtol=1e-14, atol=0)


def test_a_limiter_after_a_scale_limits_the_scaled_update():
    blocks = (Scale("alpha"), NormGrowthLimiter(), LearningRate())
    folded = type("ScaleThenLimit", (ChainOptimizer,), {"blocks": blocks, "hyperparameters": {"alpha": 3.0}})
    unfolded = type("ScaleThenLimitUnfolded", (ChainOptimizer,), {
        "blocks": blocks + (_PassThrough(),), "hyperparameters": {"alpha": 3.0}})
    grads = [g * (1 + 4 * t) for t, g in enumerate(stream(3, 4, steps=4, seed=13))]  # growing: limited
    ours, _, _ = run_updates(folded, grads)
    reference, _, _ = run_updates(unfolded, grads)
    for a, b in zip(ours, reference):
        assert torch.allclose(a, b, rtol=1e-14, atol=0)
    assert float(ours[-1].norm()) == pytest.approx(1.01**3 * float(ours[0].norm()), rel=1e-12)


def test_folded_tail_never_overwrites_a_state_tensor_it_is_handed():
    from fimkit.optim.blocks import Momentum

    chained = type("MomentumThenLimitedStep", (ChainOptimizer,), {
        "blocks": (Momentum(), NormGrowthLimiter(), Scale("alpha"), LearningRate()),  # Momentum returns its state
        "hyperparameters": dict(lr=0.5, alpha=2.0, bias_correction=False),
    })
    param = torch.nn.Parameter(torch.zeros(2, 3, dtype=torch.float64))
    optimizer = chained([param])
    g = stream(2, 3, steps=1, seed=12)[0]
    param.grad = g
    optimizer.step()
    exp_avg = optimizer.state[param]["exp_avg"]
    assert torch.allclose(exp_avg, 0.1 * g, rtol=1e-15)             # untouched by the step's scaling
    assert torch.allclose(param.detach(), -0.5 * 2.0 * 0.1 * g, rtol=1e-15)