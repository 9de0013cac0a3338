"""Two Python threads stepping a group's matrices side by side (``optimizer.threaded_step``,
``fimkit.optim.threaded_steps``): bit for bit the serial step, for RACS and SinkGD, with a skipped
non-finite gradient, tall matrices and a vector among them; used only where it applies; an error
in the other thread reaches the caller."""

from __future__ import annotations

import warnings

import pytest
import torch

from fimkit.optim import RACS, Adam, SinkGD, threaded_steps

SHAPES = [(33, 40), (40, 33), (17,), (24, 24), (8, 64)]
STEPS = 6


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _run(cls, threaded: bool, **hyperparameters):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s)) for s in SHAPES]
    optimizer = cls(params, lr=1e-2, **hyperparameters)
    optimizer.threaded_step = threaded
    generator = torch.Generator().manual_seed(1)
    for t in range(STEPS):
        for i, p in enumerate(params):
            p.grad = torch.randn(p.shape, generator=generator)
            if t == 2 and i == 1:
                p.grad.view(-1)[3] = float("inf")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*non-finite.*")
            optimizer.step()
    return params, optimizer


@pytest.mark.parametrize("cls", [RACS, SinkGD], ids=lambda c: c.__name__)
def test_the_threaded_step_is_the_serial_step_bit_for_bit(cls, two_threads, monkeypatch):
    calls = []
    monkeypatch.setattr(threaded_steps, "split_by_size",
                        lambda admitted, split=threaded_steps.split_by_size: calls.append(1) or split(admitted))
    threaded, threaded_optimizer = _run(cls, True)
    assert len(calls) == STEPS  # it did run in two threads
    serial, serial_optimizer = _run(cls, False)
    assert all(torch.equal(p, q) for p, q in zip(threaded, serial))
    for p, q in zip(threaded, serial):
        state, expected = threaded_optimizer.state[p], serial_optimizer.state[q]
        assert state.keys() == expected.keys()
        assert all(torch.equal(state[k], expected[k]) for k in state)
    assert threaded_optimizer.nonfinite_skips == serial_optimizer.nonfinite_skips == 1


def test_racs_and_sinkgd_declare_it_and_other_chains_do_not():
    assert RACS.threaded_step and SinkGD.threaded_step
    assert not Adam.threaded_step


def test_it_is_not_used_on_one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        optimizer = RACS([torch.nn.Parameter(torch.zeros(4, 4)), torch.nn.Parameter(torch.zeros(4, 4))])
        assert not threaded_steps.wanted(optimizer, [(p, None) for p in optimizer.param_groups[0]["params"]])
    finally:
        torch.set_num_threads(before)


def test_it_is_not_used_with_the_fused_step_or_for_a_single_tensor(two_threads):
    params = [torch.nn.Parameter(torch.zeros(4, 4)), torch.nn.Parameter(torch.zeros(4, 4))]
    optimizer = RACS(params)
    admitted = [(p, None) for p in params]
    assert threaded_steps.wanted(optimizer, admitted)
    assert not threaded_steps.wanted(optimizer, admitted[:1])
    optimizer.fused_step = True
    assert not threaded_steps.wanted(optimizer, admitted)


def test_an_error_in_the_other_thread_reaches_the_caller(two_threads):
    params = [torch.nn.Parameter(torch.zeros(4, 4)) for _ in range(4)]
    for p in params:
        p.grad = torch.ones(4, 4)
    optimizer = RACS(params)
    _, theirs = threaded_steps.split_by_size([(p, None) for p in params])
    failing = theirs[0][0]  # stepped by the worker thread

    def step(p, group, grad_max):
        if p is failing:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        threaded_steps.step_all(optimizer, optimizer.param_groups[0], [(p, None) for p in params], step)


def test_the_split_balances_entries_and_keeps_the_order():
    sizes = [100, 10, 60, 50, 5, 1]
    admitted = [(torch.zeros(n), n) for n in sizes]
    mine, theirs = threaded_steps.split_by_size(admitted)
    assert sorted([m for _, m in mine] + [m for _, m in theirs]) == sorted(sizes)
    for half in (mine, theirs):
        assert [m for _, m in half] == [n for n in sizes if n in {m for _, m in half}]
    assert abs(sum(m for _, m in mine) - sum(m for _, m in theirs)) <= 10
