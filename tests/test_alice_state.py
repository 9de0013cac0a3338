"""Alice's state: bit-exact resume across a switch (RNG included), seeds, declared state, memory."""

from __future__ import annotations

import io

import pytest
import torch

from fimkit.optim import Alice, AliceZero

F64 = torch.float64


def _grads(shape, steps, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen, dtype=dtype) for _ in range(steps)]


def _train(optimizer, weight, grads):
    for g in grads:
        weight.grad = g.clone()
        optimizer.step()


HP = dict(rank=3, leading=1, update_interval=4)


@pytest.mark.parametrize("cls", [Alice, AliceZero])
def test_state_dict_round_trip_is_bit_exact_across_switches(cls):
    grads = _grads((6, 10), 13)
    start = torch.randn(6, 10, generator=torch.Generator().manual_seed(1))
    straight = torch.nn.Parameter(start.clone())
    torch.manual_seed(0)
    uninterrupted = cls([straight], **HP)  # seed=None: drawn from the global generator
    _train(uninterrupted, straight, grads)

    torch.manual_seed(0)
    resumed = torch.nn.Parameter(start.clone())
    first_half = cls([resumed], **HP)
    _train(first_half, resumed, grads[:6])  # switches at 1 and 4; the next ones after the resume
    buffer = io.BytesIO()
    torch.save(first_half.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(12345)  # a different global RNG state must not matter after the resume
    second_half = cls([resumed], **HP)
    second_half.load_state_dict(torch.load(buffer))
    _train(second_half, resumed, grads[6:])  # switches at 8 and 12 sample from the saved seed

    assert torch.equal(resumed.detach(), straight.detach())
    for key, value in uninterrupted.state[straight].items():
        assert torch.equal(second_half.state[resumed][key], value), key


def test_default_seed_follows_torch_manual_seed():
    grads = _grads((8, 12), 9)
    results = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        weight = torch.nn.Parameter(torch.zeros(8, 12))
        optimizer = Alice([weight], **HP)
        _train(optimizer, weight, grads)
        results.append(optimizer.state[weight]["basis"].clone())
    assert torch.equal(results[0], results[1])
    assert not torch.equal(results[0], results[2])


def test_explicit_seed_ignores_the_global_generator():
    grads = _grads((8, 12), 9)
    bases = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        weight = torch.nn.Parameter(torch.zeros(8, 12))
        optimizer = Alice([weight], seed=7, **HP)
        _train(optimizer, weight, grads)
        bases.append(optimizer.state[weight]["basis"])
    assert torch.equal(bases[0], bases[1])


@pytest.mark.parametrize("cls", [Alice, AliceZero])
def test_all_state_is_declared_at_initialisation_and_holds_tensors_only(cls):
    weight = torch.nn.Parameter(torch.zeros(6, 10))
    optimizer = cls([weight], **HP)
    _train(optimizer, weight, _grads((6, 10), 1))
    after_first = {k: (v.shape, v.dtype) for k, v in optimizer.state[weight].items()}
    _train(optimizer, weight, _grads((6, 10), 9, seed=1))
    assert {k: (v.shape, v.dtype) for k, v in optimizer.state[weight].items()} == after_first
    assert all(isinstance(v, torch.Tensor) for v in optimizer.state[weight].values())
    declared = cls.state_shapes(6, 10, **HP)
    assert {k: (s.shape, s.dtype) for k, s in declared.items()} == {k: (tuple(s), d) for k, (s, d) in after_first.items()}


@pytest.mark.parametrize("cls,extra", [(Alice, "r * r"), (AliceZero, "0")])
def test_state_size_matches_the_memory_formula(cls, extra):
    m, n, r = 8, 20, 3
    weight = torch.nn.Parameter(torch.zeros(n, m))  # tall: transposed to m x n
    optimizer = cls([weight], rank=r, leading=1, update_interval=4)
    _train(optimizer, weight, _grads((n, m), 1))
    state = optimizer.state[weight]
    matrices = sum(v.numel() for v in state.values() if v.ndim > 0)
    assert matrices == 2 * n * r + m * r + n + eval(extra)  # spec §4.7: mn + 2nr + mr (+ r^2) + n
    assert sum(v.ndim == 0 for v in state.values()) == 3  # step, limiter phi, switch seed


def test_float64_parameters_keep_float64_state_and_bf16_parameters_get_float32_state():
    for dtype, expected in ((F64, F64), (torch.bfloat16, torch.float32)):
        weight = torch.nn.Parameter(torch.zeros(6, 10, dtype=dtype))
        optimizer = Alice([weight], **HP)
        _train(optimizer, weight, _grads((6, 10), 5, dtype=dtype))
        assert optimizer.state[weight]["basis"].dtype == expected
        assert torch.isfinite(weight.float()).all()
