"""The routed optimizer's step under torch.compile (fimkit.optim.routed_traced): one graph, the
non-finite policy of its torch Adam child kept (skip bit-identical, raise, counts), step hooks,
matrix views, copies, and the eager step for a child it cannot trace."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch

import fimkit
from fimkit.optim import traced
from graph_break_helpers import tiny_model


def _grads(model, seed):
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen)


def _compiled_step(optimizer):
    torch._dynamo.reset()
    return torch.compile(optimizer.step, backend="eager")


def test_a_skipped_adam_parameter_keeps_value_and_state_bit_identical():
    model = tiny_model()
    optimizer = fimkit.build_optimizer(model, "racs")
    step = _compiled_step(optimizer)
    _grads(model, 1)
    step()
    bias = model[0].bias
    before, state = bias.detach().clone(), {k: v.clone() for k, v in optimizer.state[bias].items()}
    _grads(model, 2)
    bias.grad[2] = math.nan
    with pytest.warns(UserWarning, match="Adam: skipped a non-finite gradient for parameter"):
        step()
    assert torch.equal(bias, before)
    assert all(torch.equal(optimizer.state[bias][k], v) for k, v in state.items())
    assert optimizer.nonfinite_skips == 1 and optimizer.children["adam"].nonfinite_skips == 1
    assert not torch.equal(model[3].bias, before[:4])  # the others stepped


def test_the_raise_policy_covers_the_adam_child_and_restores_the_grad_mode():
    model = tiny_model()
    optimizer = fimkit.build_optimizer(model, "racs", on_nonfinite="raise")
    _grads(model, 1)
    model[1].weight.grad[0] = math.inf  # the LayerNorm's gain: Adam's
    weight = model[0].weight.detach().clone()
    with pytest.raises(FloatingPointError, match="Adam: non-finite gradient"):
        _compiled_step(optimizer)()
    assert torch.is_grad_enabled()
    assert torch.equal(model[0].weight, weight)  # all or nothing, as the traced ChainOptimizer step


def test_step_hooks_fire_once_per_step_for_the_container_and_each_child():
    model = tiny_model()
    optimizer = fimkit.build_optimizer(model, "racs")
    calls = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: calls.append("container pre"))
    optimizer.register_step_post_hook(lambda opt, args, kwargs: calls.append("container post"))
    for name, child in optimizer.children.items():
        child.register_step_pre_hook(lambda opt, args, kwargs, name=name: calls.append(f"{name} pre"))
        child.register_step_post_hook(lambda opt, args, kwargs, name=name: calls.append(f"{name} post"))
    step = _compiled_step(optimizer)
    for seed in range(2):
        _grads(model, seed)
        step()
    assert calls == 2 * ["container pre", "racs pre", "racs post", "adam pre", "adam post", "container post"]


def test_conv_kernels_stepped_as_matrices_equal_eager():
    def run(compiled):
        torch.manual_seed(3)
        model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.Flatten(), torch.nn.Linear(64, 3))
        optimizer = fimkit.build_optimizer(model, "racs", conv="matrix")
        step = _compiled_step(optimizer) if compiled else optimizer.step
        for seed in range(3):
            _grads(model, seed)
            step()
        return model, optimizer

    (model, optimizer), (reference, eager) = run(True), run(False)
    assert optimizer.state[model[0].weight]["s"].shape == (2 * 3 * 3,)  # the kernel's matrix (4, 18)
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
        assert set(optimizer.state[p]) == set(eager.state[q])
        for key, value in eager.state[q].items():
            torch.testing.assert_close(optimizer.state[p][key], value, rtol=1e-5, atol=1e-6)


def test_a_copy_guards_its_own_adam_child():
    optimizer = fimkit.build_optimizer(tiny_model(), "alice", rank=2)
    duplicate = copy.deepcopy(optimizer)
    assert traced.lookup(duplicate._guard_handles["adam"]) is duplicate.children["adam"]
    assert duplicate._guard_handles["adam"] != optimizer._guard_handles["adam"]


def test_a_child_it_cannot_trace_takes_the_eager_step():
    """An SGD child (not of the Adam family) keeps the eager step, graph breaks and all."""
    def make(model):
        matrices = [p for p in model.parameters() if p.ndim == 2]
        vectors = [p for p in model.parameters() if p.ndim < 2]
        return fimkit.optim.routed.RoutedOptimizer({"racs": fimkit.optim.RACS(matrices),
                                                     "sgd": torch.optim.SGD(vectors, lr=0.1, momentum=0.9)})

    def run(compiled):
        model = tiny_model()
        optimizer = make(model)
        step = _compiled_step(optimizer) if compiled else optimizer.step
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for seed in range(3):
                _grads(model, seed)
                if seed == 1:
                    model[0].bias.grad[0] = math.nan
                step()
        return model, optimizer

    (model, optimizer), (reference, eager) = run(True), run(False)
    assert optimizer.nonfinite_skips == eager.nonfinite_skips == 1
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_three_children_make_one_graph_after_the_backward():
    """RACS, Alice and torch's Adam, each its own child: as many breaks as torch's Adam alone."""
    from graph_break_helpers import batch, explain_training_step, training_step

    def make(model):
        return fimkit.optim.routed.RoutedOptimizer({
            "racs": fimkit.optim.RACS([model[0].weight]),
            "alice": fimkit.optim.Alice([model[3].weight], rank=2, leading=1, update_interval=2, seed=0),
            "adam": torch.optim.Adam([p for p in model.parameters() if p.ndim < 2], foreach=True)})

    adam_model = tiny_model()
    adam_breaks = explain_training_step(adam_model, torch.optim.Adam(adam_model.parameters()), *batch()).breaks
    model = tiny_model()
    optimizer = make(model)
    assert explain_training_step(model, optimizer, *batch()).breaks <= adam_breaks  # state made here
    training_step(model, optimizer)(*batch())
    assert explain_training_step(model, optimizer, *batch()).breaks <= adam_breaks
