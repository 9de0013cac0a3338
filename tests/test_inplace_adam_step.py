"""The Adam chain's in-place eager step (``fimkit.optim.inplace_adam``) against the per-block one
(``inplace_step = False``): the same parameters and state, bit for bit, over several steps with a
skipped non-finite gradient among them, across the options it covers and those it hands back."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from fimkit.optim import Adam, inplace_adam


def _params(dtype: torch.dtype) -> list[torch.nn.Parameter]:
    torch.manual_seed(0)
    shapes = [(5, 8), (8, 5), (7,), (3, 4, 2), ()]
    return [torch.nn.Parameter(torch.randn(s, dtype=dtype)) for s in shapes]


def _run(inplace: bool, dtype=torch.float32, steps: int = 7, scale: float = 1.0, **hyperparameters):
    params = _params(dtype)
    optimizer = Adam(params, lr=1e-2, **hyperparameters)
    optimizer.inplace_step = inplace
    generator = torch.Generator().manual_seed(1)
    for t in range(steps):
        for i, p in enumerate(params):
            p.grad = torch.randn(p.shape, generator=generator, dtype=dtype) * scale
            if t == 2 and i == 1:
                p.grad.view(-1)[3] = float("nan")  # skipped: parameter and state untouched
            if t == 4 and i == 0:
                p.grad.view(-1)[0] = float("inf")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optimizer.step()
    return params, optimizer


def _assert_identical(a, b):
    (params_a, opt_a), (params_b, opt_b) = a, b
    assert opt_a.nonfinite_skips == opt_b.nonfinite_skips == 2
    for pa, pb in zip(params_a, params_b):
        assert pa.dtype == pb.dtype and torch.equal(pa, pb)
        sa, sb = opt_a.state[pa], opt_b.state[pb]
        assert sorted(sa) == sorted(sb)
        for key in sa:
            assert sa[key].dtype == sb[key].dtype and sa[key].shape == sb[key].shape
            assert torch.equal(sa[key], sb[key]), key
    da, db = opt_a.state_dict(), opt_b.state_dict()
    assert da["param_groups"] == db["param_groups"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("hyperparameters", [
    {}, {"weight_decay": 0.1}, {"bias_correction": False}, {"eps": 0.0}, {"betas": (0.8, 0.99)},
    # handed back to the per-block step (each parameter or the whole group):
    {"transpose_to_short_side": True}, {"state_dtype": torch.bfloat16}, {"betas": (0.0, 0.999)},
    {"precondition_frequency": 3}, {"beta2_decay": -0.8}, {"on_nonfinite": "ignore"},
])
def test_inplace_step_is_bit_identical_to_the_per_block_step(dtype, hyperparameters):
    if hyperparameters.get("on_nonfinite") == "ignore":  # NaNs then flow into both alike
        a, b = _run(True, dtype, **hyperparameters), _run(False, dtype, **hyperparameters)
        for pa, pb in zip(a[0], b[0]):
            assert torch.equal(pa.nan_to_num(), pb.nan_to_num())
        return
    _assert_identical(_run(True, dtype, **hyperparameters), _run(False, dtype, **hyperparameters))


@pytest.mark.parametrize("scale", [1e-30, 1e12])  # a gradient unit that moves: the per-block step
def test_gradient_units_behave_as_before(scale):
    _assert_identical(_run(True, scale=scale), _run(False, scale=scale))


def test_the_inplace_step_is_taken_and_can_be_switched_off(monkeypatch):
    calls = []
    original = inplace_adam.step_param
    monkeypatch.setattr(inplace_adam, "step_param", lambda *args: (calls.append(1), original(*args)))
    per_block = []
    original_param = Adam._step_param
    monkeypatch.setattr(Adam, "_step_param", lambda *args: (per_block.append(1), original_param(*args)))
    _run(True, steps=1)
    assert len(calls) == 5 and not per_block  # every parameter in place, none per block
    calls.clear()
    _run(False, steps=1)
    assert not calls
    params, optimizer = _run(False, steps=1)
    assert copy.deepcopy(optimizer).inplace_step is False  # copies keep the choice


def test_bf16_parameters_take_the_per_block_step():
    params = [torch.nn.Parameter(torch.randn(4, 6, dtype=torch.bfloat16))]
    params[0].grad = torch.randn_like(params[0])
    optimizer = Adam(params)
    assert not inplace_adam.eligible(optimizer, params[0], optimizer.param_groups[0], 1.0)
    optimizer.step()
    assert optimizer.state[params[0]]["exp_avg"].dtype == torch.float32


def test_raise_steps_the_parameters_before_the_bad_one_as_before():
    def attempt(inplace):
        params = _params(torch.float32)
        optimizer = Adam(params, on_nonfinite="raise")
        optimizer.inplace_step = inplace
        for i, p in enumerate(params):
            p.grad = torch.ones_like(p) * (float("nan") if i == 2 else 1.0)
        with pytest.raises(FloatingPointError):
            optimizer.step()
        return params
    for pa, pb in zip(attempt(True), attempt(False)):
        assert torch.equal(pa, pb)
