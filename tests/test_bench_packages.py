"""``benchmarks.packages``: other packages' versions of an algorithm, skipped when not installed."""

from __future__ import annotations

import torch

from benchmarks.packages import THIRD_PARTY, ThirdParty, third_party_candidates
from fimkit.optim import registered


def _sgd(module, params, interval):
    return torch.optim.SGD(params, lr=0.1)


def test_a_missing_package_is_skipped_with_a_note_not_an_error():
    table = (ThirdParty("racs", "no-such-dist", "no_such_module_for_fimkit_bench", _sgd),)
    candidates, notes = third_party_candidates(["racs"], table=table)
    assert candidates == [] and len(notes) == 1
    assert "no-such-dist not installed" in notes[0] and "[bench]" in notes[0]


def test_an_installed_package_yields_a_candidate_with_its_refresh_amortised():
    table = (ThirdParty("galore", "torch", "torch", _sgd, interval="K", differs="stand-in"),
             ThirdParty("racs", "torch", "torch", _sgd))
    candidates, notes = third_party_candidates(["galore"], amortise_over=50, table=table)
    assert notes == [] and len(candidates) == 1     # racs not asked for
    (c,) = candidates
    assert c.algorithm == "galore" and c.package == "torch" and c.amortise_over == 50
    assert c.build_switching is not None and c.differs == "stand-in"
    assert isinstance(c.build([torch.nn.Parameter(torch.zeros(2, 2))]), torch.optim.SGD)
    assert c.hyperparameters["rank"] == 128 and c.hyperparameters["update_interval"] == 50   # fimkit's, for the floor


def test_every_package_entry_stands_beside_a_registered_optimizer():
    assert {entry.algorithm for entry in THIRD_PARTY} <= set(registered())
