"""Alice on every kind of shape (algorithms.md §5 I): m != r, tall, r >= m, 1 x n, column vectors."""

from __future__ import annotations

import warnings

import pytest
import torch

from conftest import fit_quadratic
from fimkit.optim import Alice, AliceZero

F64 = torch.float64


SHAPES = [  # (shape, rank, expected basis shape)
    ((6, 10), 3, (6, 3)),   # m != r, wide
    ((10, 6), 3, (6, 3)),   # tall: runs on the transpose
    ((4, 9), 8, (4, 4)),    # r >= m: clipped
    ((1, 7), 4, (1, 1)),    # 1 x n
    ((7, 1), 3, (1, 1)),    # a column: transposed to 1 x 7
]


@pytest.mark.parametrize("cls", [Alice, AliceZero])
@pytest.mark.parametrize("shape,rank,basis_shape", SHAPES)
def test_alice_descends_on_every_shape_with_the_expected_basis(cls, shape, rank, basis_shape):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        losses, optimizer, weight = fit_quadratic(cls, shape, lr=0.1, rank=rank, leading=1, update_interval=4)
    assert losses[-1] < 0.8 * losses[0]
    assert optimizer.state[weight]["basis"].shape == basis_shape


def test_rank_at_least_the_short_side_warns_and_leaves_no_compensation():
    with pytest.warns(UserWarning, match=r"rank 8 >= 4.*using rank 4"):
        _, optimizer, weight = fit_quadratic(Alice, (4, 9), steps=5, rank=8, leading=6)
    basis = optimizer.state[weight]["basis"]
    assert torch.allclose(basis.mT @ basis, torch.eye(4, dtype=F64), atol=1e-10)


def test_rank_below_the_short_side_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit_quadratic(Alice, (6, 10), steps=2, rank=3, leading=1)


def test_tall_matrix_update_is_the_transpose_of_the_wide_update():
    gen = torch.Generator().manual_seed(1)
    grads = [torch.randn(5, 8, generator=gen, dtype=F64) for _ in range(9)]
    wide = torch.nn.Parameter(torch.zeros(5, 8, dtype=F64))
    tall = torch.nn.Parameter(torch.zeros(8, 5, dtype=F64))
    hp = dict(rank=2, leading=1, update_interval=4, seed=3)
    wide_opt, tall_opt = Alice([wide], **hp), Alice([tall], **hp)
    for g in grads:
        wide.grad, tall.grad = g.clone(), g.mT.clone()
        wide_opt.step()
        tall_opt.step()
    assert torch.allclose(tall.detach(), wide.detach().mT, rtol=1e-12, atol=1e-14)


def test_without_transposition_a_tall_matrix_gets_a_basis_on_its_long_side():
    _, optimizer, weight = fit_quadratic(Alice, (10, 6), steps=5, lr=0.1, rank=3, leading=1,
                                         transpose_to_short_side=False)
    assert optimizer.state[weight]["basis"].shape == (10, 3)
