"""Issue 14: a steady step (not a switch) of the low-rank optimizers makes exactly the products its
floor counts (``benchmarks/floors.py``): two ``m x r x n`` ones for Alice, Alice-0, GaLore and
Fira (project ``U^T G`` once, back-project once; the compensation and the tracking reuse
``sigma``), one for APOLLO (no back-projection). Every other product is at most ``r x r x n``
(the tracked Gram ``sigma sigma^T``).

The products are counted below autograd, at the ATen dispatch, so a ``@``, ``torch.mm``,
``addmm_`` or a batched ``bmm`` all count, whatever Python spelling produced them. The sizes are
chosen with ``m``, ``n`` and ``r`` distinct, so that a product's three dimensions say which kind
it is.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fimkit.optim import registered

M, N, RANK = 24, 40, 4
aten = torch.ops.aten
#: the ATen products and where their (rows, inner, columns) operands sit among the arguments
PRODUCTS = {aten.mm: (0, 1), aten.bmm: (0, 1), aten.matmul: (0, 1), aten.addmm: (1, 2), aten.addmm_: (1, 2),
            aten.baddbmm: (1, 2), aten.baddbmm_: (1, 2)}


class ProductLog(TorchDispatchMode):
    """Records ``(rows, inner, columns)`` of every matrix product dispatched inside it."""

    def __init__(self):
        super().__init__()
        self.products: list[tuple[int, int, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        where = PRODUCTS.get(func.overloadpacket)
        if where is not None:
            a, b = args[where[0]], args[where[1]]
            self.products.append((a.shape[-2], a.shape[-1], b.shape[-1]))
        return func(*args, **(kwargs or {}))

    def full_size(self) -> list[tuple[int, int, int]]:
        return [dims for dims in self.products if sorted(dims) == sorted((M, RANK, N))]


def steady_step_products(name: str, shape: tuple[int, int], **hyperparameters) -> ProductLog:
    """The products of step 3 (steps 1 and 2 run first; step 1 is the first refresh, K = 200)."""
    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.randn(shape))
    opt = registered()[name]([param], rank=RANK, seed=0, **hyperparameters)
    for _ in range(2):
        param.grad = torch.randn(shape)
        opt.step()
    param.grad = torch.randn(shape)
    with ProductLog() as log:
        opt.step()
    return log


def assert_products(log: ProductLog, full_size: int) -> None:
    assert len(log.full_size()) == full_size, log.products
    smaller = [dims for dims in log.products if sorted(dims) != sorted((M, RANK, N))]
    # anything else is r x r x n (tracking) or smaller: never the full gradient times the basis
    assert all(a * b * c <= RANK * RANK * N for a, b, c in smaller), smaller


@pytest.mark.parametrize("shape", [(M, N), (N, M)], ids=["wide", "tall"])
def test_a_steady_alice_step_makes_two_full_size_products(shape):
    assert_products(steady_step_products("alice", shape), 2)


@pytest.mark.parametrize("shape", [(M, N), (N, M)], ids=["wide", "tall"])
def test_a_steady_galore_step_makes_two_full_size_products(shape):
    assert_products(steady_step_products("galore", shape), 2)


@pytest.mark.parametrize("name", ["alice0", "fira"])
def test_a_steady_alice0_or_fira_step_makes_two_full_size_products(name):
    assert_products(steady_step_products(name, (M, N)), 2)


@pytest.mark.parametrize("compensation", ["fira", "fira_plus", "none"])
def test_every_alice_compensation_reuses_the_projection(compensation):
    assert_products(steady_step_products("alice", (M, N), compensation=compensation), 2)


def test_a_steady_apollo_step_makes_one_full_size_product():
    assert_products(steady_step_products("apollo", (M, N)), 1)


def test_the_log_sees_a_third_product():
    # the counter itself: a residual formed with a second projection would be caught
    grad, basis = torch.randn(M, N), torch.randn(M, RANK)
    with ProductLog() as log:
        sigma = basis.mT @ grad  # the projection, then a residual that projects again
        torch.addmm(grad, basis, basis.mT @ grad, alpha=-1.0).add_(sigma.sum())
    assert len(log.full_size()) == 3
