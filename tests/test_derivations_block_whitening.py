"""The new structure of derivations/README.md: BlockWhitening, end to end."""

import pytest
import torch

import fimkit
from derivations.block_whitening import BlockWhitening, train_tiny_model
from derivations.checks import gradient_samples, inverse_power_apply


def test_block_whitening_trains_a_tiny_model():
    losses = train_tiny_model(steps=40)
    assert losses[-1] < 0.1 * losses[0]


def test_block_whitening_step_is_the_dense_inverse_root():
    grads = gradient_samples(3, 5, k=8, seed=3)
    structure = BlockWhitening(2)
    approx = fimkit.solve(structure, grads)
    expected = inverse_power_apply(approx.matrix, grads[0])
    torch.testing.assert_close(structure.precondition(approx.params, grads[0]), expected, rtol=1e-8, atol=1e-10)


def test_block_whitening_with_single_columns_keeps_each_column_second_moment():
    grads = gradient_samples(3, 4, k=6, seed=1)
    approx = fimkit.solve(BlockWhitening(1), grads)
    for j in range(4):
        torch.testing.assert_close(approx.params[f"block_{j}"], (grads[:, :, j].T @ grads[:, :, j]) / 6)


def test_block_whitening_state_is_one_gram_per_block():
    assert BlockWhitening(3).state_numel(4, 7) == 3 * 4 * 4


@pytest.mark.parametrize("block", [0, -1, 1.5, True])
def test_block_whitening_rejects_a_bad_block_size(block):
    with pytest.raises(ValueError, match="block"):
        BlockWhitening(block)
