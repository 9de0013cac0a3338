"""torch's learning-rate schedulers on build_optimizer's result (issue 12 item 2): the lr of
every group follows the schedule torch computes for a plain torch.optim.Adam, and momentum
cycling (OneCycleLR's and CyclicLR's default) reaches the momentum an optimizer has, and nothing
else: RACS has none, so its groups record the scheduler's momentum and do not use it."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn
from torch.optim import lr_scheduler

import fimkit
from fimkit.optim.routed import NO_MOMENTUM

HPARAMS = {"alice": {"rank": 2, "leading": 1, "update_interval": 2}, "racs": {}, "adam": {}}
STEPS = 12
SCHEDULES = {
    "one_cycle": lambda opt: lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=STEPS),
    "cyclic": lambda opt: lr_scheduler.CyclicLR(opt, base_lr=0.001, max_lr=0.05, step_size_up=3),
    "lambda": lambda opt: lr_scheduler.LambdaLR(opt, lambda step: 0.8**step),
    "cosine": lambda opt: lr_scheduler.CosineAnnealingLR(opt, T_max=STEPS, eta_min=1e-4),
}


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Linear(6, 3))


def run(optimizer, scheduler, net=None, seed=1):
    """Train ``net`` (or only step the schedule); the lr and betas of every group at every step."""
    gen = torch.Generator().manual_seed(seed)
    history = []
    for _ in range(STEPS):
        history.append([(g["lr"], g.get("betas")) for g in optimizer.param_groups])
        optimizer.zero_grad()
        if net is not None:
            net(torch.randn(8, 4, generator=gen)).square().mean().backward()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "RoutedOptimizer: param group", UserWarning)
            optimizer.step()
        scheduler.step()
    return history


def torch_adam_history(schedule):
    optimizer = torch.optim.Adam(model().parameters(), lr=0.01)
    return [step[0] for step in run(optimizer, SCHEDULES[schedule](optimizer))]


@pytest.mark.parametrize("name", ["racs", "alice", "adam"])
@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_every_groups_lr_follows_torchs_schedule_for_a_plain_adam(name, schedule):
    optimizer = fimkit.build_optimizer(model(), name, lr=0.01, **HPARAMS[name])
    history = run(optimizer, SCHEDULES[schedule](optimizer))
    expected = torch_adam_history(schedule)
    for step, (groups, (lr, _)) in enumerate(zip(history, expected)):
        assert all(group_lr == lr for group_lr, _ in groups), (step, groups, lr)


@pytest.mark.parametrize("name", ["alice", "adam"])
@pytest.mark.parametrize("schedule", ["one_cycle", "cyclic"])
def test_momentum_cycling_moves_the_first_beta_of_every_optimizer_with_momentum(name, schedule):
    optimizer = fimkit.build_optimizer(model(), name, lr=0.01, **HPARAMS[name])
    second = [g["betas"][1] for g in optimizer.param_groups]
    history = run(optimizer, SCHEDULES[schedule](optimizer))
    expected = torch_adam_history(schedule)
    for groups, (_, (beta1, _)) in zip(history, expected):
        assert [betas for _, betas in groups] == [(beta1, b2) for b2 in second]


def test_momentum_cycling_leaves_racs_as_it_would_be_without_it():
    trained = {}
    for cycle in (True, False):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(4, 6, bias=False), nn.Tanh(), nn.Linear(6, 3, bias=False))  # all RACS
        optimizer = fimkit.build_optimizer(net, "racs", lr=0.01)
        run(optimizer, lr_scheduler.OneCycleLR(optimizer, max_lr=0.05, total_steps=STEPS, cycle_momentum=cycle), net)
        trained[cycle] = net
    assert all(torch.equal(a, b) for a, b in zip(trained[True].parameters(), trained[False].parameters()))
    assert not torch.equal(trained[True][0].weight, model()[0].weight)


def test_racs_groups_record_the_cycled_momentum_under_betas_and_keep_their_beta():
    optimizer = fimkit.build_optimizer(model(), "racs", lr=0.01)
    racs = optimizer.children["racs"].param_groups[0]
    assert racs["betas"] == NO_MOMENTUM
    lr_scheduler.OneCycleLR(optimizer, max_lr=0.05, total_steps=STEPS)
    assert racs["betas"] == (0.95,) and racs["beta"] == 0.9


def test_the_first_step_after_a_scheduler_wrote_an_unused_momentum_warns_once():
    optimizer = fimkit.build_optimizer(model(), "racs", lr=0.01)
    scheduler = lr_scheduler.OneCycleLR(optimizer, max_lr=0.05, total_steps=STEPS)
    with pytest.warns(UserWarning, match=r"param group 0 \(RACS\) has no momentum.*cycle_momentum=False"):
        optimizer.step()
    scheduler.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optimizer.step()


def test_no_warning_without_momentum_cycling():
    optimizer = fimkit.build_optimizer(model(), "racs", lr=0.01)
    scheduler = lr_scheduler.OneCycleLR(optimizer, max_lr=0.05, total_steps=STEPS, cycle_momentum=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optimizer.step()
        scheduler.step()


def test_a_resumed_one_cycle_run_continues_the_schedule_exactly():
    net = model()
    optimizer = fimkit.build_optimizer(net, "racs", lr=0.01)
    scheduler = lr_scheduler.OneCycleLR(optimizer, max_lr=0.05, total_steps=2 * STEPS)
    run(optimizer, scheduler, net)
    saved = copy.deepcopy((net.state_dict(), optimizer.state_dict(), scheduler.state_dict()))
    expected = run(optimizer, scheduler, net, seed=2)

    net2 = model()
    optimizer2 = fimkit.build_optimizer(net2, "racs", lr=0.01)
    scheduler2 = lr_scheduler.OneCycleLR(optimizer2, max_lr=0.05, total_steps=2 * STEPS)
    net2.load_state_dict(saved[0])
    optimizer2.load_state_dict(saved[1])
    scheduler2.load_state_dict(saved[2])
    assert run(optimizer2, scheduler2, net2, seed=2) == expected
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), net2.parameters()))


def test_the_bare_racs_class_follows_one_cycle_without_momentum_cycling():
    optimizer = fimkit.optim.RACS([nn.Parameter(torch.randn(3, 5))], lr=0.01)
    scheduler = lr_scheduler.OneCycleLR(optimizer, max_lr=0.05, total_steps=STEPS, cycle_momentum=False)
    reference = torch.optim.Adam(model().parameters(), lr=0.01)
    reference_scheduler = lr_scheduler.OneCycleLR(reference, max_lr=0.05, total_steps=STEPS, cycle_momentum=False)
    assert [g[0][0] for g in run(optimizer, scheduler)] == [g[0][0] for g in run(reference, reference_scheduler)]


def test_the_bare_racs_class_with_momentum_cycling_is_torchs_error_about_momentum():
    """RACS's own defaults have no betas or momentum (its beta is an EMA of statistics); torch
    refuses before changing anything. build_optimizer's result takes the defaults."""
    with pytest.raises(ValueError, match="momentum"):
        lr_scheduler.OneCycleLR(fimkit.optim.RACS([nn.Parameter(torch.randn(3, 5))]), max_lr=0.05,
                                total_steps=STEPS)
