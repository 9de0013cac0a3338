"""Alice's per-step path compiles (compiled == eager) and makes no host sync between switches."""

from __future__ import annotations

import pytest
import torch

from fimkit.optim import Alice


def _warm_optimizer(**hp):
    """An Alice past its first switch, with the next switch far away."""
    gen = torch.Generator().manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(12, 20, generator=gen))
    optimizer = Alice([weight], rank=4, leading=2, update_interval=1000, seed=1, **hp)
    for _ in range(3):
        weight.grad = torch.randn(12, 20, generator=gen)
        optimizer.step()
    return optimizer, weight, gen


def _per_step(optimizer):
    group = optimizer.param_groups[0]

    def step(grad, state, t):
        update = grad
        for block in type(optimizer).blocks:
            update = block(update, grad, grad, state, group, t)
        return update

    return step


@pytest.mark.parametrize("compensation", ["optimal", "fira_plus"])
def test_compiled_per_step_path_equals_eager(compensation):
    optimizer, weight, gen = _warm_optimizer(compensation=compensation)
    eager = _per_step(optimizer)
    compiled = torch.compile(eager, backend="aot_eager", fullgraph=True)
    state_eager = {k: v.clone() for k, v in optimizer.state[weight].items()}
    state_compiled = {k: v.clone() for k, v in optimizer.state[weight].items()}
    for t in range(4, 7):
        grad = torch.randn(12, 20, generator=gen)
        expected, got = eager(grad, state_eager, t), compiled(grad, state_compiled, t)
        assert torch.allclose(got, expected, rtol=1e-5, atol=1e-7)
        for key in state_eager:
            assert torch.allclose(state_compiled[key], state_eager[key], rtol=1e-5, atol=1e-7), key


def test_steps_between_switches_make_no_host_sync(monkeypatch):
    optimizer, weight, gen = _warm_optimizer(on_nonfinite="ignore")  # the guard's one sync per group is opt-in

    def forbidden(*args, **kwargs):
        raise AssertionError("host sync in a step between switches")

    grads = [torch.randn(12, 20, generator=gen) for _ in range(3)]
    with monkeypatch.context() as patch:
        for name in ("item", "tolist", "__bool__"):
            patch.setattr(torch.Tensor, name, forbidden)
        for g in grads:
            weight.grad = g
            optimizer.step()
    assert torch.isfinite(weight).all()
