"""The paper's schedule: 10% linear warmup, then cosine from the peak to 10% of it."""

import itertools
import math

import pytest
import torch

from experiments.schedule import lr_factor, paper_schedule

PEAK, STEPS = 2e-3, 1000  # warmup 100 steps, cosine over the other 900


def lrs_by_step(steps=STEPS):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=PEAK)
    scheduler = paper_schedule(opt, steps)
    values = []
    for _ in range(steps + 1):
        values.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return values


def test_warmup_starts_at_zero_and_rises_linearly():
    lrs = lrs_by_step()
    assert lrs[0] == 0.0
    assert lrs[50] == pytest.approx(PEAK / 2)


def test_peak_at_the_end_of_warmup():
    assert lrs_by_step()[100] == pytest.approx(PEAK)


def test_midpoint_of_the_cosine_is_the_mean_of_peak_and_floor():
    assert lrs_by_step()[100 + 450] == pytest.approx(PEAK * (1 + 0.1) / 2)


def test_floor_of_ten_percent_at_the_last_step():
    assert lrs_by_step()[STEPS] == pytest.approx(0.1 * PEAK)


def test_factor_is_monotone_after_warmup():
    factors = [lr_factor(s, STEPS) for s in range(100, STEPS + 1)]
    assert all(a >= b for a, b in itertools.pairwise(factors))


def test_factor_matches_galore_formula_at_an_arbitrary_step():
    progress = (737 - 100) / 900
    assert lr_factor(737, STEPS) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def test_schedule_scales_every_param_group():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 0.5}])
    scheduler = paper_schedule(opt, 10)
    opt.step()
    scheduler.step()
    assert [g["lr"] for g in opt.param_groups] == [1.0, 0.5]  # step 1 = end of the 1-step warmup
