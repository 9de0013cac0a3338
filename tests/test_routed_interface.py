"""The rest of torch.optim.Optimizer's interface on build_optimizer's result (issue 12 item 2):
zero_grad, step hooks, state_dict and load_state_dict with an exact resume."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

import fimkit
from routed_fixture import Tiny

HPARAMS = {"alice": {"rank": 2, "leading": 1, "update_interval": 2}, "racs": {}, "soap": {}, "adam": {}}


def build(name, seed=0):
    torch.manual_seed(seed)
    net = Tiny()
    return net, fimkit.build_optimizer(net, name, lr=0.01, conv="matrix", **HPARAMS[name])


def train(net, optimizer, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        optimizer.zero_grad()
        x, y = torch.randn(5, 2, 6, generator=gen), torch.randn(5, 4, generator=gen)
        nn.functional.mse_loss(net(x), y).backward()
        optimizer.step()


def with_grads(name):
    net, optimizer = build(name)
    train(net, optimizer, 1, seed=0)
    nn.functional.mse_loss(net(torch.randn(5, 2, 6)), torch.zeros(5, 4)).backward()
    return net, optimizer


@pytest.mark.parametrize("name", ["racs", "adam"])
def test_zero_grad_sets_every_gradient_to_none(name):
    net, optimizer = with_grads(name)
    optimizer.zero_grad(set_to_none=True)
    assert all(p.grad is None for p in net.parameters())


@pytest.mark.parametrize("name", ["racs", "adam"])
def test_zero_grad_without_set_to_none_zeroes_every_gradient_in_place(name):
    net, optimizer = with_grads(name)
    grads = [p.grad for p in net.parameters()]
    optimizer.zero_grad(set_to_none=False)
    assert all(p.grad is g and not g.any() for p, g in zip(net.parameters(), grads))


def test_step_hooks_fire_once_per_routed_step_with_the_container():
    net, optimizer = build("racs")
    calls = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: calls.append(("pre", opt)))
    optimizer.register_step_post_hook(lambda opt, args, kwargs: calls.append(("post", opt)))
    train(net, optimizer, 2, seed=0)
    assert calls == [("pre", optimizer), ("post", optimizer)] * 2


def test_a_pre_hook_sees_the_gradients_before_any_child_steps():
    net, optimizer = build("racs")
    seen = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen.append(net.hidden.weight.detach().clone()))
    before = net.hidden.weight.detach().clone()
    train(net, optimizer, 1, seed=0)
    assert torch.equal(seen[0], before) and not torch.equal(net.hidden.weight, before)


def test_a_removed_hook_no_longer_fires():
    net, optimizer = build("racs")
    calls = []
    handle = optimizer.register_step_post_hook(lambda *args: calls.append(1))
    train(net, optimizer, 1, seed=0)
    handle.remove()
    train(net, optimizer, 1, seed=1)
    assert calls == [1]


def test_a_load_state_dict_post_hook_sees_the_children_linked_to_the_loaded_groups():
    net, optimizer = build("racs")
    train(net, optimizer, 1, seed=0)
    saved = optimizer.state_dict()
    linked = []
    optimizer.register_load_state_dict_post_hook(lambda opt: linked.append(
        opt.children["racs"].param_groups[0] is opt.param_groups[0] and opt.children["racs"].state is opt.state))
    optimizer.load_state_dict(saved)
    assert linked == [True]


@pytest.mark.parametrize("name", ["alice", "racs", "soap", "adam"])
def test_a_checkpoint_resumes_bit_for_bit_through_torch_save(name):
    net, optimizer = build(name)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    train(net, optimizer, 3, seed=0)
    scheduler.step()
    buffer = io.BytesIO()
    torch.save({"model": net.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
               buffer)
    train(net, optimizer, 3, seed=1)

    net2, optimizer2 = build(name, seed=7)
    scheduler2 = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer2, T_max=10)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    net2.load_state_dict(saved["model"])
    optimizer2.load_state_dict(saved["optimizer"])
    scheduler2.load_state_dict(saved["scheduler"])
    train(net2, optimizer2, 3, seed=1)
    for (key, a), b in zip(net.named_parameters(), net2.parameters()):
        assert torch.equal(a, b), key
    assert [g["lr"] for g in optimizer.param_groups] == [g["lr"] for g in optimizer2.param_groups]


def test_load_state_dict_keeps_the_children_on_the_loaded_groups_and_state():
    net, optimizer = build("racs")
    train(net, optimizer, 2, seed=0)
    saved = copy.deepcopy(optimizer.state_dict())
    net2, optimizer2 = build("racs", seed=3)
    optimizer2.load_state_dict(saved)
    for name, child in optimizer2.children.items():
        assert child.state is optimizer2.state
        assert all(any(g is h for h in optimizer2.param_groups) for g in child.param_groups)
    assert torch.equal(optimizer2.state[net2.conv.weight]["s"], optimizer.state[net.conv.weight]["s"])


def test_a_state_dict_from_an_older_fimkit_without_the_no_momentum_key_loads_and_steps():
    net, optimizer = build("racs")
    train(net, optimizer, 1, seed=0)
    saved = optimizer.state_dict()
    for group in saved["param_groups"]:
        if group["optimizer"] == "racs":
            del group["betas"]
    optimizer.load_state_dict(saved)
    assert optimizer.children["racs"].param_groups[0]["betas"] == fimkit.optim.routed.NO_MOMENTUM
    torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.05, total_steps=4)  # needs betas everywhere
