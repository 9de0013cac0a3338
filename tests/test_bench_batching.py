"""``benchmarks.batching``: the batched and per-matrix low-rank steps it times are the same math."""

import torch

from benchmarks.batching import _state, low_rank_step, measure


def test_batched_low_rank_step_equals_the_per_matrix_steps():
    torch.manual_seed(0)
    grads = torch.randn(3, 6, 10, dtype=torch.float64)
    stacked = [t.to(torch.float64) for t in _state((6, 10), 2, (3,))]
    singles = [[t[i].clone() for t in stacked] for i in range(3)]
    batched = low_rank_step(grads, *stacked)
    for i in range(3):
        assert torch.allclose(batched[i], low_rank_step(grads[i], *singles[i]), rtol=1e-12, atol=1e-15)


def test_measure_times_both_ways():
    result = measure([(6, 10), (10, 6), (6, 6)], rank=2, repeats=1)
    assert set(result) == {"per matrix", "batched by shape"} and all(ms > 0 for ms in result.values())
