"""The carried-state hook of ``Structure`` (issue 9 item 2): a new structure that keeps a basis
between refits gets an optimizer from ``fimkit.derive`` with no optimizer code, and the one
refresh rule every periodic refresh follows (item 4)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import fimkit
from conftest import run_updates
from fimkit.optim.chain import is_refresh_step
from fimkit.optim.preconditioners import CarriedStatePreconditioner, preconditioner_for
from fimkit.structures import EigenvalueCorrected, Full, Identity, Kronecker, LowRankPlusDiagonal, ParamSpec, Structure
from test_trajectory_fingerprints import gradients


@dataclass(frozen=True)
class ColumnEigenbasis(Structure):
    """A user's ``F~ = kron(I, V) diag(vec(D)) kron(I, V)^T``: Adam in the eigenbasis ``V`` of
    ``E[G^T G]``, refreshed every K steps (one-sided SOAP on the column side), from the hook alone."""

    def parameter_spec(self, m, n):
        return {"d": ParamSpec((m, n), "positive"), "basis": ParamSpec((n, n), "orthogonal")}

    def dense(self, params, m, n):
        q = torch.kron(torch.eye(m, dtype=params["d"].dtype), params["basis"])
        return (q * params["d"].reshape(1, -1)) @ q.mT

    # the hook: what a refresh reads, the carried basis, how it is refreshed, the coordinates
    def statistic_shapes(self, m, n):
        return {"d": (m, n), "gram": (n, n), "basis": (n, n)}

    def statistics(self, grad):
        return {"gram": grad.mT @ grad}

    def carried_shapes(self, m, n):
        return {"basis": (n, n)}

    def refresh(self, stats, carried, grad, step):
        return {"basis": torch.linalg.eigh(stats["gram"])[1].flip(-1)}

    def coordinates(self, grad, carried):
        return grad @ carried["basis"]

    def fit(self, stats, m, n):
        return {"d": stats["d"], "basis": stats["basis"]}

    def precondition(self, params, grad, power=0.5, eps=0.0):
        basis = params["basis"]
        return ((grad @ basis) / (params["d"].sqrt() + eps)) @ basis.mT


def test_a_users_stateful_structure_is_tracked_by_the_generic_carried_state_preconditioner():
    assert isinstance(preconditioner_for(ColumnEigenbasis()), CarriedStatePreconditioner)


def test_a_users_stateful_structure_steps_like_its_builtin_twin():
    hp = dict(lr=0.01, betas=(0.9, 0.95), shampoo_beta=0.9, precondition_frequency=3)
    grads = gradients((4, 6), torch.float64)[:10]
    users, _, _ = run_updates(fimkit.derive(ColumnEigenbasis(), **hp), grads)
    builtin, _, _ = run_updates(fimkit.derive(EigenvalueCorrected(Kronecker(Identity(), Full())), **hp), grads)
    for a, b in zip(users, builtin):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_the_builtin_stateful_structures_implement_the_hook_instead_of_raising():
    grad = gradients((4, 6), torch.float64)[0]
    soap = EigenvalueCorrected(Kronecker(Full(), Full()))
    stats = soap.statistics(grad)
    carried = soap.refresh(stats, soap.initial_carried(4, 6, grad), grad, step=1)
    assert set(carried) == set(soap.carried_shapes(4, 6)) == {"rows_basis", "cols_basis"}
    d = soap.coordinates(grad, carried).square()
    assert set(soap.fit({**stats, **carried, "d": d}, 4, 6)) == {"d", "rows_basis", "cols_basis"}

    alice = LowRankPlusDiagonal(2, estimator="subspace")
    carried = alice.refresh({}, {"basis": torch.zeros(4, 2, dtype=grad.dtype), "switch_seed": torch.tensor(0)},
                            grad, step=1)
    basis = carried["basis"]
    torch.testing.assert_close(basis.mT @ basis, torch.eye(2, dtype=grad.dtype))
    assert alice.coordinates(grad, carried).shape == (2, 6) and alice.statistics(grad) == {}


@pytest.mark.parametrize("interval, offset, expected", [
    (5, 0, [1, 5, 10, 15, 20]),          # the paper's rule: t == 1 or t % K == 0
    (5, 1, [1, 6, 11, 16]),              # official GaLore / APOLLO / the old statistic preconditioner
    (1, 0, list(range(1, 21))),
])
def test_one_refresh_rule(interval, offset, expected):
    assert [t for t in range(1, 21) if is_refresh_step(t, interval, offset)] == expected


def test_every_periodic_refresh_follows_the_rule():
    """Shampoo's fitted roots, SOAP's eigenbasis and Alice's subspace all change at t = 1, K, 2K."""
    K, grads = 3, gradients((4, 6), torch.float64)[:7]

    def refreshes(cls, key, **hp):
        param = torch.nn.Parameter(torch.zeros(4, 6, dtype=torch.float64))
        optimizer, previous, steps = cls([param], **hp), None, []
        for t, g in enumerate(grads, start=1):
            param.grad = g
            optimizer.step()
            value = optimizer.state[param][key].clone()
            if previous is None or not torch.equal(value, previous):
                steps.append(t)
            previous = value
        return steps

    assert refreshes(fimkit.optim.Shampoo, "fit_rows", precondition_frequency=K) == [1, 3, 6]
    assert refreshes(fimkit.optim.SOAP, "fisher_rows_basis", precondition_frequency=K) == [1, 3, 6]
    assert refreshes(fimkit.optim.Alice, "basis", update_interval=K, rank=2, leading=1, seed=0) == [1, 3, 6]
    offset = fimkit.derive(fimkit.optim.Shampoo.structure,
                           **{**fimkit.optim.Shampoo.declaration.recipe(), "refresh_offset": 1})
    assert refreshes(offset, "fit_rows", precondition_frequency=K) == [1, 4, 7]
