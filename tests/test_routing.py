"""Parameter routing: every parameter is assigned exactly once, to the right optimizer."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import fimkit
from fimkit.optim.routed import RoutedOptimizer


class TinyDecoder(nn.Module):
    """The parameter kinds of a LLaMA decoder: embedding, attention and MLP matrices, norm
    weights, a bias, an untied output head."""

    def __init__(self, vocab=17, width=8):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.attn = nn.ModuleDict({k: nn.Linear(width, width, bias=False) for k in ("q", "k", "v", "o")})
        self.up = nn.Linear(width, 2 * width)  # has a bias
        self.down = nn.Linear(2 * width, width, bias=False)
        self.norm = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, vocab, bias=False)

    def forward(self, tokens):
        h = self.embed(tokens)
        h = h + self.attn["o"](self.attn["v"](h) * torch.sigmoid(self.attn["q"](h) * self.attn["k"](h)))
        h = h + self.down(torch.relu(self.up(h)))
        return self.lm_head(self.norm(h))


def _names(groups, optimizer):
    return {n for g in groups if g["optimizer"] == optimizer for n in g["param_names"]}


def test_every_parameter_is_assigned_exactly_once():
    model = TinyDecoder()
    groups = fimkit.param_groups(model, "soap")
    assigned = [n for g in groups for n in g["param_names"]]
    assert sorted(assigned) == sorted(n for n, _ in model.named_parameters())
    assert len(assigned) == len(set(assigned))


def test_matrices_go_to_the_structured_optimizer_and_the_rest_to_adam():
    groups = fimkit.param_groups(TinyDecoder(), "soap")
    assert _names(groups, "soap") == {f"attn.{k}.weight" for k in "qkvo"} | {"up.weight", "down.weight"}
    assert _names(groups, "adam") == {"embed.weight", "up.bias", "norm.weight", "norm.bias", "lm_head.weight"}


def test_lm_head_can_be_routed_to_the_structured_optimizer():
    groups = fimkit.param_groups(TinyDecoder(), "soap", lm_head="matrix")
    assert "lm_head.weight" in _names(groups, "soap")


def test_adam_group_uses_the_matrix_lr_unless_given_its_own():
    groups = fimkit.param_groups(TinyDecoder(), "soap", lr=0.02)
    adam = next(g for g in groups if g["optimizer"] == "adam")
    assert adam["lr"] == 0.02 and adam["betas"] == (0.9, 0.999) and adam["weight_decay"] == 0.0
    groups = fimkit.param_groups(TinyDecoder(), "soap", lr=0.02, adam_lr=1e-3)
    assert next(g for g in groups if g["optimizer"] == "adam")["lr"] == 1e-3


def test_an_unmatched_parameter_is_an_error_naming_it():
    model = TinyDecoder()
    model.register_parameter("extra", nn.Parameter(torch.zeros(2, 3, 4)))
    with pytest.raises(ValueError, match=r"extra \(shape \(2, 3, 4\)"):
        fimkit.param_groups(model, "soap")


def test_overrides_route_by_name_pattern_first():
    groups = fimkit.param_groups(TinyDecoder(), "soap", overrides={r"attn\.q": "adam"})
    assert "attn.q.weight" in _names(groups, "adam")


def test_an_override_pattern_that_matches_nothing_is_an_error():
    with pytest.raises(ValueError, match="match no parameter"):
        fimkit.param_groups(TinyDecoder(), "soap", overrides={"typo": "adam"})


def test_an_unknown_hyperparameter_is_rejected():
    with pytest.raises(TypeError, match="learning_rate"):
        fimkit.param_groups(TinyDecoder(), "soap", learning_rate=0.1)


def test_an_unknown_optimizer_lists_the_available_ones():
    with pytest.raises(ValueError, match="available: .*adam"):
        fimkit.build_optimizer(TinyDecoder(), "adamm")


def test_tied_weights_are_assigned_once():
    model = TinyDecoder()
    model.lm_head.weight = model.embed.weight
    groups = fimkit.param_groups(model, "soap")
    assigned = [n for g in groups for n in g["param_names"]]
    assert assigned.count("embed.weight") == 1 and "lm_head.weight" not in assigned


def _train(model, optimizer, scheduler, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        tokens = torch.randint(0, 17, (4, 6), generator=gen)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(tokens).flatten(0, 1), tokens.flatten()).backward()
        optimizer.step()
        scheduler.step()


def test_build_optimizer_is_one_optimizer_that_schedules_and_resumes_exactly():
    torch.manual_seed(0)
    model = TinyDecoder()
    opt = fimkit.build_optimizer(model, "soap", lr=0.01, precondition_frequency=2)
    assert isinstance(opt, torch.optim.Optimizer) and isinstance(opt, RoutedOptimizer)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.9**step)
    _train(model, opt, sched, 3, seed=0)
    saved = copy.deepcopy((model.state_dict(), opt.state_dict(), sched.state_dict()))
    _train(model, opt, sched, 3, seed=1)
    expected = copy.deepcopy(model.state_dict())

    torch.manual_seed(123)
    model2 = TinyDecoder()
    opt2 = fimkit.build_optimizer(model2, "soap", lr=0.01, precondition_frequency=2)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda step: 0.9**step)
    model2.load_state_dict(saved[0])
    opt2.load_state_dict(saved[1])
    sched2.load_state_dict(saved[2])
    _train(model2, opt2, sched2, 3, seed=1)
    for key, value in expected.items():
        assert torch.equal(value, model2.state_dict()[key]), key
    assert all(g["lr"] == pytest.approx(0.01 * 0.9**6) for g in opt2.param_groups)


def test_schedulers_reach_every_child_optimizer():
    opt = fimkit.build_optimizer(TinyDecoder(), "soap", lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    opt.step()  # no gradients yet: a no-op, but schedulers expect it before their own step
    scheduler.step()
    for child in opt.children.values():
        assert all(g["lr"] == pytest.approx(0.005) for g in child.param_groups)


def test_everything_on_adam_is_plain_torch_adam():
    opt = fimkit.build_optimizer(TinyDecoder(), "adam", lr=3e-4)
    assert list(opt.children) == ["adam"] and isinstance(opt.children["adam"], torch.optim.Adam)
    assert opt.param_groups[0]["lr"] == 3e-4
