"""build_optimizer's result survives copy.deepcopy and pickle (issue 12 item 2): the copy steps,
its children share the copy's groups and state, and it trains the copied model bit for bit as
the original trains the original."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

import fimkit
from routed_fixture import Tiny

HPARAMS = {"alice": {"rank": 2, "leading": 1, "update_interval": 2}, "racs": {}, "adam": {}}


def batches(count, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(5, 2, 6, generator=gen), torch.randn(5, 4, generator=gen)) for _ in range(count)]


def train(model, optimizer, data):
    for x, y in data:
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()


def trained(name, **kwargs):
    torch.manual_seed(0)
    model = Tiny()
    optimizer = fimkit.build_optimizer(model, name, lr=0.01, conv="matrix", **HPARAMS[name], **kwargs)
    train(model, optimizer, batches(3, seed=0))
    return model, optimizer


def assert_same_run(a, b):
    (model_a, opt_a), (model_b, opt_b) = a, b
    for (name, p), q in zip(model_a.named_parameters(), model_b.parameters()):
        assert torch.equal(p, q), name
    for p, q in zip(model_a.parameters(), model_b.parameters()):
        state_a, state_b = opt_a.state[p], opt_b.state[q]
        assert state_a.keys() == state_b.keys()
        assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


def pickled(obj):
    return pickle.loads(pickle.dumps(obj))


@pytest.mark.parametrize("name", ["alice", "racs", "adam"])
@pytest.mark.parametrize("how", [copy.deepcopy, pickled], ids=["deepcopy", "pickle"])
def test_a_copy_trains_its_model_exactly_as_the_original_trains_the_original(name, how):
    original = trained(name)
    duplicate = how(original)
    data = batches(3)
    train(*original, data)
    train(*duplicate, data)
    assert_same_run(original, duplicate)


@pytest.mark.parametrize("how", [copy.deepcopy, pickled], ids=["deepcopy", "pickle"])
def test_the_copys_children_share_the_copys_groups_and_state(how):
    _, optimizer = how(trained("racs"))
    for name, child in optimizer.children.items():
        assert child.state is optimizer.state
        owned = [g for g in optimizer.param_groups if g["optimizer"] == name]
        assert len(child.param_groups) == len(owned) and all(a is b for a, b in zip(child.param_groups, owned))


def test_a_copy_does_not_share_state_with_the_original():
    model, optimizer = trained("racs")
    _, duplicate = copy.deepcopy((model, optimizer))
    train(model, optimizer, batches(1))
    changed = [torch.equal(optimizer.state[p]["s"], duplicate.state[q]["s"])
               for p, q in zip(model.parameters(), duplicate.param_groups[0]["params"]) if "s" in optimizer.state[p]]
    assert changed and not any(changed)


def test_a_copy_keeps_the_childrens_nonfinite_counts():
    model, optimizer = trained("racs")
    optimizer.zero_grad()
    nn.functional.mse_loss(model(batches(1)[0][0]), torch.zeros(5, 4)).backward()
    model.hidden.weight.grad[0, 0] = float("nan")
    with pytest.warns(UserWarning, match="non-finite"):
        optimizer.step()
    assert pickled(optimizer).nonfinite_skips == optimizer.nonfinite_skips == 1


def test_a_copy_of_a_gradient_release_optimizer_steps_its_copied_model_in_backward():
    original = trained("racs", gradient_release=True)
    duplicate = copy.deepcopy(original)
    data = batches(2)
    train(*original, data)
    train(*duplicate, data)
    assert_same_run(original, duplicate)
    assert not torch.equal(original[0].hidden.weight, trained("racs", gradient_release=True)[0].hidden.weight)
