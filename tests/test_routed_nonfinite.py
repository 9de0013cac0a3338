"""The non-finite policy covers every parameter of a routed optimizer (issue 11 item 2): the
torch Adam child's parameters (biases, norms, embeddings) included, one host sync per step."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

import fimkit
import fimkit.optim.chain
import fimkit.optim.routed


def model_and_grads(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    x, y = torch.randn(16, 6), torch.randn(16, 3)
    return model, lambda: torch.nn.functional.mse_loss(model(x), y).backward()


def step(optimizer, backward, poison=None):
    optimizer.zero_grad()
    backward()
    if poison is not None:
        poison()
    optimizer.step()


@pytest.mark.parametrize("name", ["racs", "alice", "adam"])
def test_a_nan_bias_gradient_is_skipped_and_leaves_bias_and_adam_state_unchanged(name):
    model, backward = model_and_grads()
    optimizer = fimkit.build_optimizer(model, name, lm_head="adam", **({"rank": 2} if name == "alice" else {}))
    bias = model[0].bias
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        step(optimizer, backward)
    before, state_before = bias.detach().clone(), copy.deepcopy(optimizer.state[bias])

    def poison():
        bias.grad[0] = float("nan")

    with pytest.warns(UserWarning, match=r"non-finite.*'0\.bias'"):
        step(optimizer, backward, poison)
    assert torch.equal(bias, before)
    assert all(torch.equal(optimizer.state[bias][k], v) for k, v in state_before.items())
    assert optimizer.nonfinite_skips == 1
    assert torch.isfinite(bias.grad[1:]).all() and torch.isnan(bias.grad[0])  # the gradient is put back
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_raise_policy_names_the_adam_routed_parameter():
    model, backward = model_and_grads()
    optimizer = fimkit.build_optimizer(model, "racs", on_nonfinite="raise")

    def poison():
        model[2].bias.grad[1] = float("inf")

    with pytest.raises(FloatingPointError, match=r"'2\.bias'"):
        step(optimizer, backward, poison)


def test_ignore_policy_lets_the_adam_child_take_the_value():
    model, backward = model_and_grads()
    optimizer = fimkit.build_optimizer(model, "racs", on_nonfinite="ignore")

    def poison():
        model[0].bias.grad[0] = float("nan")

    step(optimizer, backward, poison)
    assert torch.isnan(model[0].bias[0])


def test_a_routed_step_makes_one_host_sync_for_every_child(monkeypatch):
    calls = []
    real = fimkit.optim.routed.gradient_extremes

    def counting(grads):
        calls.append(len(grads))
        return real(grads)

    monkeypatch.setattr(fimkit.optim.routed, "gradient_extremes", counting)
    monkeypatch.setattr(fimkit.optim.chain, "gradient_extremes", counting)
    model, backward = model_and_grads()
    optimizer = fimkit.build_optimizer(model, "racs")
    for _ in range(3):
        step(optimizer, backward)
    assert calls == [4, 4, 4]  # two weights (RACS) and two biases (Adam), one read each step


def test_gradient_release_skips_a_non_finite_bias_too():
    model, backward = model_and_grads()
    optimizer = fimkit.build_optimizer(model, "racs", gradient_release=True)
    bias = model[0].bias
    bias.register_hook(lambda g: torch.full_like(g, float("nan")))
    before = bias.detach().clone()
    with pytest.warns(UserWarning, match="non-finite"):
        step(optimizer, backward)
    assert torch.equal(bias, before)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_unknown_policy_is_rejected_for_the_whole_model():
    model, _ = model_and_grads()
    with pytest.raises(ValueError, match="on_nonfinite must be one of"):
        fimkit.build_optimizer(model, "racs", on_nonfinite="drop")
